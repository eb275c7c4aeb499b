"""`ledger …`: inspect and change the ledger of record."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import click

from tfgrid_operator import backend
from tfgrid_operator.cli.app import _load_key, _run, main
from tfgrid_operator.domain import money
from tfgrid_operator.settings import Settings


@main.group(help="Inspect and change the ledger of record (accounts, farms, nodes, contracts).")
@click.option("--ledger-url", envvar="TFGRID_LEDGER_URL", default=lambda: Settings().ledger_url, show_default="settings",
              help="sqlite:///file.db (created on first use) or postgresql://…")
@click.pass_context
def ledger(ctx: click.Context, ledger_url: str) -> None:
    ctx.obj = ledger_url


def _with_ledger(ctx: click.Context, fn: Callable[[backend.GridBackend], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        lg = await backend.open_backend(ctx.obj)
        try:
            return await fn(lg)
        finally:
            await lg.close()
    return _run(go())


@ledger.command("create-account", help="Create a twin account (idempotent: an existing one is shown). With "
                "--key-file, the twin's key (from `keygen`) identifies it: a Deployment's payer.secretRef holds that key.")
@click.argument("name")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), help="the twin's ed25519 key file")
@click.pass_context
def create_account(ctx: click.Context, name: str, key_file: str | None) -> None:
    public_key = _load_key(pathlib.Path(key_file)).public_key if key_file else ""
    acc = _with_ledger(ctx, lambda lg: lg.ensure_account(name=name, public_key=public_key))
    click.echo(f"{acc.name}\t{money.tft(acc.balance)} TFT")


@ledger.command(help="Add TFT to an account, e.g. `fund alice 1000` or `fund alice 0.5`.")
@click.argument("name")
@click.argument("amount")
@click.pass_context
def fund(ctx: click.Context, name: str, amount: str) -> None:
    try:
        units = money.parse_tft(amount)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="AMOUNT") from exc
    acc = _with_ledger(ctx, lambda lg: lg.fund(name=name, amount=units))
    click.echo(f"{acc.name}\t{money.tft(acc.balance)} TFT")


@ledger.command(help="Show accounts, farms, nodes and contracts (add --json for machine output).")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    async def collect(lg: backend.GridBackend) -> dict[str, Any]:
        return {
            "accounts": [{"name": a.name, "balance": a.balance} for a in await lg.list_accounts()],
            "farms": [{"name": f.name, "id": f.id, "state": f.state, "payout": f.payout_account} for f in await lg.list_farms()],
            "nodes": [{"name": s.name, "farm": s.farm, "used": s.used.as_dict(), "minted": s.minted_total}
                      for s in (await lg.node_summaries(now=0)).values()],
            "contracts": [{"key": c.key, "id": c.id, "node": c.node, "state": c.state, "billed": c.billed_total}
                          for c in (await lg.contract_summaries()).values()],
        }
    data = _with_ledger(ctx, collect)
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
        return
    for section, rows in data.items():
        click.echo(f"{section}:")
        for row in rows:
            click.echo("  " + "  ".join(f"{k}={money.tft(v) if k in ('balance', 'minted', 'billed') else v}"
                                        for k, v in row.items()))


