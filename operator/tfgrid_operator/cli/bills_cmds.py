"""`ledger bills`: a Deployment's bills with their receipts, and its reserve payouts (§2.6, §2.7)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import click

from tfgrid_operator import backend
from tfgrid_operator.cli.ledger_cmds import _with_ledger, ledger
from tfgrid_operator.domain import money


def _when(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


@ledger.command(help="A Deployment's bills, oldest first, across moves: the window, gross (the TFT conversion "
                "rounded), discount, amount due, paid, and what is still owed; then its reserve payouts "
                "(50 % farmer / 40 % foundation / 10 % staking pool, every 24 cycles and on deletion). "
                "--json prints every bill's full receipt: resources, CU, SU, prices, TFT price and clamp, "
                "the balance the discount came from, each rounding.")
@click.option("--deployment", "key", required=True, metavar="NS/NAME", help="the Deployment, namespace/name")
@click.option("--period", type=click.IntRange(min=0), help="only this billing period (unix time // period length)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with bills (and receipts) and payouts")
@click.pass_context
def bills(ctx: click.Context, key: str, period: int | None, as_json: bool) -> None:
    if key.count("/") != 1 or not all(key.split("/")):
        raise click.BadParameter(f"expected NAMESPACE/NAME, got {key!r}", param_hint="--deployment")

    async def collect(lg: backend.GridBackend) -> tuple[list[Any], list[Any]]:
        return await lg.bills(key=key, period=period), await lg.payouts(key=key)
    found, payouts = _with_ledger(ctx, collect)
    if as_json:
        click.echo(json.dumps({"deployment": key, "bills": [dataclasses.asdict(b) for b in found],
                               "payouts": [dataclasses.asdict(p) for p in payouts]}, sort_keys=True))
        return
    if not found:
        click.echo(f"no bills for {key}" + (f" in period {period}" if period is not None else ""))
    else:
        click.echo("contract  period    from                 until                seconds  gross TFT     discount  "
                   "amount TFT    paid TFT      owed after")
        for b in found:
            r = b.receipt
            gross = money.tft(int(r["gross"])) if r else "-"
            owed = money.tft(int(r["overdraftAfter"])) if r else "-"
            click.echo(f"{b.contract_id:<9} {b.period:<9} {_when(b.start):<20} {_when(b.until):<20} {b.seconds:<8} "
                       f"{gross:<13} {b.discount:<9} {money.tft(b.amount):<13} {money.tft(b.paid):<13} {owed}")
        click.echo(f"{len(found)} bills, {money.tft(sum(b.amount for b in found))} TFT billed, "
                   f"{money.tft(sum(b.paid for b in found))} TFT paid")
    for p in payouts:
        click.echo(f"payout {_when(p.at)} contract {p.contract_id} ({p.reason}): {money.tft(p.amount)} TFT → "
                   f"farmer {p.farmer_account} {money.tft(p.farmer)}, foundation {money.tft(p.foundation)}, "
                   f"staking pool {money.tft(p.staking_pool)}")
