"""`ledger mints --node NAME` (issue 14): a person can read how each mint was computed."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

import ledger_setup
from tfgrid_operator import backend, cli
from tfgrid_operator.domain import identity
from tfgrid_operator.domain.units import Resources

P = 6 * 3600
CONFIG = backend.LedgerConfig(minting_epoch=0, minting_period_s=P)


async def _grid(url: str) -> None:
    lg = await backend.open_backend(url, CONFIG)
    owner, key, r = identity.KeyPair.generate(), identity.KeyPair.generate(), Resources(8, 32, 1000, 4000)
    await ledger_setup.farm_and_node(lg, farm="f", node="n0", payout_account="p", owner_key=owner, node_key=key,
                                     resources=r)
    await ledger_setup.attest(lg, node="n0", resources=r, ts=0, key=key)
    for ts in range(2400, 2 * P + 1, 2400):
        await ledger_setup.report_uptime(lg, node="n0", ts=ts, uptime=ts + 5, key=key)
        if ts == P + 2400:
            await lg.mint_period(period=0, now=ts)
    await lg.mint_period(period=1, now=2 * P)
    await lg.close()


def test_ledger_mints_table_json_period_and_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(_grid(url))
    runner = CliRunner()
    base = ["ledger", "--ledger-url", url, "mints"]
    out = runner.invoke(cli.main, [*base, "--node", "n0"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["period", "uptime", "‰", "cu", "su", "certified", "policy", "sla", "price", "minted"]
    assert lines[1].split()[:5] == ["1", "21600", "s", "1000", "7.75"] and lines[1].endswith("324.1666666")
    assert len(lines) == 3  # newest first, one line per period
    out = runner.invoke(cli.main, [*base, "--node", "n0", "--json", "--period", "0"])
    (doc,) = [json.loads(line) for line in out.output.splitlines()]
    assert (doc["period"], doc["amount"], doc["inputs"]["su"], doc["inputs"]["sla"]["reason"]) == (
        0, 3_241_666_666, "22/3", "Rewarded")
    missing = runner.invoke(cli.main, [*base, "--node", "n0", "--period", "9"])
    assert missing.exit_code == 1 and "no mint for period 9" in missing.output
    unknown = runner.invoke(cli.main, [*base, "--node", "ghost"])
    assert unknown.exit_code == 2 and unknown.output.strip() == "Error: node 'ghost' is not on the ledger"
    assert "attested capacity" in " ".join(runner.invoke(cli.main, [*base, "--help"]).output.split())
