"""`ledger mints --node NAME`: every mint of a node with the inputs it was computed from (issue 14)."""

from __future__ import annotations

import json
from typing import Any

import click

from tfgrid_operator.cli.ledger_cmds import _with_ledger, ledger
from tfgrid_operator.domain import money

COLUMNS = ("period", "uptime", "‰", "cu", "su", "certified", "policy", "sla", "price", "minted")


def _row(r: Any) -> tuple[str, ...]:
    i = r.inputs
    if not i:  # minted before receipts were kept (schema < 5)
        return (str(r.period), "", str(r.uptime_permille), "", "", "", "", r.reason, "", money.tft(r.amount))
    return (str(r.period), f"{i['uptimeSeconds']} s", str(i["uptimePermille"]), str(i["cu"]), str(i["su"]),
            f"yes ×{i['certifiedFactor']}" if i["certified"] else "no", str(i["policy"]["id"]),
            f"{i['sla']['reason']} (≥{i['sla']['permille']}‰)", f"{i['tftConnectionPriceMusd']} mUSD",
            money.tft(r.amount))


@ledger.command(help="Show a node's mints, newest first, with what each was computed from: the period, the uptime "
                     "credited and its ‰, the farming CU/SU held (time-weighted attested capacity), certification and "
                     "its factor, the farming policy, the SLA outcome, the TFT connection price (add --json).")
@click.option("--node", required=True, help="the node's name on the ledger")
@click.option("--period", type=int, default=None, help="only this minting period")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per mint")
@click.pass_context
def mints(ctx: click.Context, node: str, period: int | None, limit: int, as_json: bool) -> None:
    receipts = _with_ledger(ctx, lambda lg: lg.mint_receipts(node=node, limit=limit if period is None else 10_000))
    if period is not None:
        receipts = [r for r in receipts if r.period == period]
        if not receipts:
            raise click.ClickException(f"node {node} has no mint for period {period}")
    if as_json:
        for r in receipts:
            click.echo(json.dumps({"node": r.node, "period": r.period, "amount": r.amount, "reason": r.reason,
                                   "uptimePermille": r.uptime_permille, "inputs": r.inputs}, sort_keys=True))
        return
    if not receipts:
        click.echo(f"node {node} has not been minted yet")
        return
    rows = [COLUMNS, *(_row(r) for r in receipts)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
