"""`sandbox`: a month of grid life with no cluster.

The sandbox is an optional extra (``pip install 'tfgrid-operator[sandbox]'``): it is imported only when this
command runs, and without the extra the command says so in one line.
"""

from __future__ import annotations

import pathlib
import sys
from types import ModuleType

import click

from tfgrid_operator.cli.app import main

EXTRA_ONLY = frozenset({"kmock", "jsonschema", "celpy", "rich"})  # what only the sandbox extra installs
MISSING_EXTRA = "the sandbox needs: pip install 'tfgrid-operator[sandbox]'"


def load_sandbox() -> ModuleType:
    """The sandbox package; a one-line error when the extra is not installed (any other import error is a bug
    and is raised as it is)."""
    try:
        from tfgrid_operator import sandbox
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] in EXTRA_ONLY:
            raise click.ClickException(MISSING_EXTRA) from None
        raise
    return sandbox


def run_sandbox(**kwargs: object) -> None:
    """Run the sandbox; its mistakes are one line, Ctrl-C/SIGTERM exit 130/143 after a clean stop, and a failed
    audit exits 1."""
    sandbox_mod = load_sandbox()
    try:
        summary = sandbox_mod.main(**kwargs)
    except sandbox_mod.SandboxError as exc:
        raise click.ClickException(str(exc)) from None
    except sandbox_mod.Interrupted as exc:
        click.echo(f"Stopped by {exc}: the sandbox's operator and API are stopped and its temporary files removed.",
                   err=True)
        sys.exit(128 + exc.signum)
    except KeyboardInterrupt:  # before the sandbox took over the signals
        sys.exit(130)
    if not summary.ok:
        sys.exit(1)


@main.command(help="The local sandbox, no cluster needed: the real operator against a local Kubernetes API emulator "
                   "and a temporary SQLite ledger, a scenario applied (five farms, two tenants, a DAO vote, an outage, "
                   "a payer in grace), node agents reporting, a month of grid life in a few minutes, with a live "
                   "table and a summary that audits the ledger's raw rows.")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 366))
@click.option("--examples", default=None, type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="a folder of manifests to run instead of the built-in scenario (e.g. examples/)")
@click.option("--ledger-url", default=None,
              help="an empty ledger to use (sqlite:///file.db or postgresql://…); default: a fresh SQLite file in a "
                   "temporary folder. Never read from the environment.")
@click.option("--picture", "picture_path", default="tfgrid-sandbox.svg", show_default=True,
              type=click.Path(dir_okay=False, path_type=pathlib.Path), help="where to draw the month (SVG)")
@click.option("--keep", is_flag=True, help="leave the API emulator and the operator running after the month (prints "
                                           "the KUBECONFIG to use) until Ctrl-C")
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object (the table goes to stderr)")
def sandbox(days: int, examples: pathlib.Path | None, ledger_url: str | None, picture_path: pathlib.Path, keep: bool,
            as_json: bool) -> None:
    run_sandbox(days=days, ledger_url=ledger_url, examples=examples or load_sandbox().scenario.FOLDER,
                picture_path=picture_path, keep=keep, as_json=as_json)
