"""Invariant 4 on the ledger: a node is never credited more than the wall time it was on the grid."""

from __future__ import annotations

from tfgrid_operator.domain import identity
from tfgrid_operator.domain.units import Resources

OWNER, NODE_KEY = identity.KeyPair.generate(), identity.KeyPair.generate()


async def report(ledger, ts, up, node="n0"):
    sig = NODE_KEY.sign(identity.UPTIME, {"node": node, "ts": ts, "uptime": up})
    return await ledger.record_uptime(node=node, ts=ts, uptime=up, signature=sig, now=ts)


async def test_first_report_credits_no_time_before_the_node_registered(ledger):
    await ledger.ensure_farm(name="farm1", owner_key=OWNER.public_key, payout_account="farmer", certified=False,
                             dedicated=False, public_ips=0)
    await ledger.ensure_node(name="n0", farm="farm1", resources=Resources(8, 32, 1000, 0), country="", city="",
                             certified=False, public_key=NODE_KEY.public_key, now=10_000)
    assert await report(ledger, 10_044, 1_815) == 44  # claims 1,815 s up; registered 44 s ago
    # flooding reports, alternating "reboots", earns at most the wall time since
    ts, up = 10_044, 1_815
    for i in range(60):
        ts += 2
        up = 1 if i % 2 else up + 62
        total = await report(ledger, ts, up)
    assert total <= ts - 10_000
    assert await report(ledger, ts + 2400, up + 2400) <= ts + 2400 - 10_000


async def test_the_last_report_listed_again_long_after_is_quiet(ledger):
    """A restarted operator re-lists every Lease: the report it already counted says nothing, however old."""
    await ledger.ensure_farm(name="farm1", owner_key=OWNER.public_key, payout_account="farmer", certified=False,
                             dedicated=False, public_ips=0)
    await ledger.ensure_node(name="n0", farm="farm1", resources=Resources(8, 32, 1000, 0), country="", city="",
                             certified=False, public_key=NODE_KEY.public_key, now=0)
    total = await report(ledger, 2400, 2400)
    sig = NODE_KEY.sign(identity.UPTIME, {"node": "n0", "ts": 2400, "uptime": 2400})
    assert await ledger.record_uptime(node="n0", ts=2400, uptime=2400, signature=sig, now=2400 + 2000) == total
