"""`ledger …`: inspect and change the ledger of record."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import click

from tfgrid_operator import backend, clock
from tfgrid_operator.backend import errors
from tfgrid_operator.cli.app import _load_key, _run, main
from tfgrid_operator.domain import money, names
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
    if not names.is_account_name(name):  # what a Deployment's payer.account and a Farm's payoutAccount accept
        raise click.ClickException(f"{name!r} is not an account name: lower-case letters, digits, '-', '_' and '.', "
                                   "starting and ending with a letter or digit, at most 64 (as a Deployment's "
                                   "payer.account must be)")
    public_key = _load_key(pathlib.Path(key_file)).public_key if key_file else ""

    async def create(lg: backend.GridBackend) -> backend.records.Account:
        existing = {a.name for a in await lg.list_accounts()}
        if public_key:
            try:
                holder = (await lg.account_by_key(public_key=public_key)).name
            except errors.NotFound:
                holder = None
            if holder is not None and holder != name:
                raise click.ClickException(f"that key already identifies account {holder!r}: one key, one twin")
            if name in existing and holder != name:
                raise click.ClickException(f"account {name!r} exists with another key (or none); a twin's key "
                                           "cannot be replaced here")
        return await lg.ensure_account(name=name, public_key=public_key)
    acc = _with_ledger(ctx, create)
    click.echo(f"{acc.name}\t{money.tft(acc.balance)} TFT")


@ledger.command(help="Add TFT to an account, e.g. `fund alice 1000` or `fund alice 0.5`.",
                context_settings={"ignore_unknown_options": True})  # so `fund alice -5` reaches the amount check
@click.argument("name")
@click.argument("amount")
@click.pass_context
def fund(ctx: click.Context, name: str, amount: str) -> None:
    try:
        units = money.parse_tft(amount)
    except ValueError:
        units = -1
    if units <= 0:
        raise click.ClickException(f"{amount!r} is not a positive TFT amount (digits with at most 7 decimals, "
                                   "e.g. 1000 or 0.5)")

    async def add(lg: backend.GridBackend) -> backend.records.Account:
        balance = (await lg.get_account(name=name)).balance
        if balance + units > money.MAX_UNITS:  # the ledger's bound (domain/money.py)
            raise click.ClickException(f"{name} would hold {money.tft(balance + units)} TFT: a balance is at most "
                                       f"{money.tft(money.MAX_UNITS)} TFT")
        return await lg.fund(name=name, amount=units, now=clock.SystemClock().now())
    acc = _with_ledger(ctx, add)
    # what it owed on closed contracts is paid first (§2.7), to their farmers, foundation and staking pool
    paid_debt = f" ({money.tft(acc.collected)} TFT paid what it owed on closed contracts)" if acc.collected else ""
    owes = f"; still owes {money.tft(acc.debt)} TFT" if acc.debt else ""
    click.echo(f"{acc.name}\t{money.tft(acc.balance)} TFT{paid_debt}{owes}")


@ledger.command(help="Show accounts, farms, nodes and contracts (add --json for machine output).")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    async def collect(lg: backend.GridBackend) -> dict[str, Any]:
        return {
            "accounts": [{"name": a.name, "balance": a.balance, **({"debt": a.debt} if a.debt else {})}
                         for a in await lg.list_accounts()],
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
            click.echo("  " + "  ".join(f"{k}={money.tft(v) if k in ('balance', 'debt', 'minted', 'billed') else v}"
                                        for k, v in row.items()))


