"""`ledger mints --node NAME` (issue 14): a person can read how each mint was computed."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from tfgrid_operator import backend, cli
from tfgrid_operator.backend.sql.capacity import capacity_payload
from tfgrid_operator.domain import identity
from tfgrid_operator.domain.units import Resources

P = 6 * 3600
CONFIG = backend.LedgerConfig(minting_epoch=0, minting_period_s=P)


async def _grid(url: str) -> None:
    lg = await backend.open_backend(url, CONFIG)
    owner, key, r = identity.KeyPair.generate(), identity.KeyPair.generate(), Resources(8, 32, 1000, 4000)
    await lg.ensure_farm(name="f", owner_key=owner.public_key, payout_account="p", certified=False, dedicated=False,
                         public_ips=0)
    await lg.ensure_node(name="n0", farm="f", resources=r, country="", city="", certified=False,
                         public_key=key.public_key, now=0)
    sig = key.sign(identity.CAPACITY, capacity_payload(node="n0", ts=0, resources=r))
    await lg.attest_capacity(node="n0", ts=0, resources=r, signature=sig, now=0)
    for ts in range(2400, 2 * P + 1, 2400):
        up = {"node": "n0", "ts": ts, "uptime": ts + 5}
        await lg.record_uptime(node="n0", ts=ts, uptime=ts + 5, signature=key.sign(identity.UPTIME, up), now=ts)
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
    assert unknown.exit_code == 2 and unknown.output.strip() == "error: NotFound: node 'ghost' is not on the ledger"
    assert "attested capacity" in " ".join(runner.invoke(cli.main, [*base, "--help"]).output.split())
