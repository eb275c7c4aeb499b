"""`sandbox`: a month of grid life with no cluster."""

from __future__ import annotations

import pathlib
import sys

import click

from tfgrid_operator.cli.app import main


@main.command(help="The local sandbox, no cluster needed: the real operator against a local Kubernetes API emulator "
                   "and the SQLite ledger, examples/ applied, node agents reporting, a month of grid life in under a "
                   "minute, with a live table and a summary checked against the ledger.")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 366))
@click.option("--examples", default="examples", show_default=True,
              type=click.Path(file_okay=False, path_type=pathlib.Path))
@click.option("--ledger-url", default=None, help="default: a fresh SQLite file in a temporary folder")
def sandbox(days: int, examples: pathlib.Path, ledger_url: str | None) -> None:
    from tfgrid_operator import sandbox as sandbox_mod

    try:
        summary = sandbox_mod.main(days=days, ledger_url=ledger_url, examples=examples)
    except sandbox_mod.SandboxError as exc:
        raise click.ClickException(str(exc)) from exc
    if not summary.matches:
        sys.exit(1)


