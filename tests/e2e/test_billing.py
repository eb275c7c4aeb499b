"""Proof-of-Utilization end to end: every discount level, grace and expiry, top-up, resize, restart.

Every amount is hand-computed from docs/grid-rules.md §2.6 at the clamped TFT price of 20 mUSD (§4.3).
The test deployment (2 cores, 4 GiB, 50 GiB SSD, one IPv4) is CU 1, SU 0.25: 100,000 + 12,500 + 40,000
= 152,500 units USD an hour = 0.7625 TFT gross = 7,625,000 units. Its monthly due is 0.7625 × 720 = 549 TFT,
so the discount thresholds (1.5/3/6/18 months) sit at 823.5 / 1,647 / 3,294 / 9,882 TFT of balance.
"""

from __future__ import annotations

import pytest

from e2e.conftest import START, condition
from e2e.objects import PatchFaults, create, deployment, events, farm, node, obj, ready, twin_account, with_reason
from polling import eventually
from tfgrid_operator import conditions
from tfgrid_operator.domain import money

pytestmark = pytest.mark.e2e
H = 3600
TFT = money.UNITS_PER_TFT

# payer: (balance in TFT, discount level, amount billed per hour in units)
LEVELS = {
    "p-none": (100, "None", 7_625_000),  # 0.18 months
    "p-default": (1_000, "Default", 6_100_000),  # 1.82 months → ×0.8
    "p-bronze": (2_000, "Bronze", 5_337_500),  # 3.64 months → ×0.7
    "p-silver": (5_000, "Silver", 4_575_000),  # 9.1 months → ×0.6
    "p-gold": (10_000, "Gold", 3_050_000),  # 18.2 months → ×0.4
}


async def two_nodes(apiserver):
    await create(apiserver, farm(), node("n1"), node("n2"))
    await ready(apiserver, "nodes", "n1", "n2")


async def fund(ledger, name, tft, apiserver):
    await twin_account(ledger, apiserver, name)
    await ledger.fund(name=name, amount=tft * TFT, now=START)


def billed(apiserver, name, total):
    return lambda: (obj(apiserver, "deployments", name)["status"].get("billedTotal") == total
                    and obj(apiserver, "deployments", name))


async def test_each_discount_level_over_three_periods(apiserver, operator, ledger, grid_clock):
    await two_nodes(apiserver)
    for payer, (tft, _, _) in LEVELS.items():
        await fund(ledger, payer, tft, apiserver)
        await create(apiserver, deployment(f"d-{payer}", payer=payer))
    await ready(apiserver, "deployments", *(f"d-{p}" for p in LEVELS))
    for k in (1, 2, 3):
        grid_clock.set(START + k * H)
        for payer, (_, _, hourly) in LEVELS.items():
            await eventually(billed(apiserver, f"d-{payer}", k * hourly), what=f"d-{payer} billed {k} periods")
    for payer, (tft, level, hourly) in LEVELS.items():
        status = obj(apiserver, "deployments", f"d-{payer}")["status"]
        assert (status["discount"], status["costPerHour"]) == (level, 7_625_000), payer
        assert status["lastBilledAt"] == conditions.timestamp(START + 3 * H)
        assert (await ledger.get_account(name=payer)).balance == tft * TFT - 3 * hourly
    # §2.7 version B: the payments are reserved on each contract until 24 cycles or deletion; nothing paid out yet
    assert (await ledger.get_account(name="default/farm1-payout")).balance == 0
    for payer, (_, _, hourly) in LEVELS.items():
        assert (await ledger.observe_contract(key=f"default/d-{payer}")).reserve == 3 * hourly


async def test_grace_period_top_up_recovers_and_expiry_deletes(apiserver, operator, ledger, grid_clock):
    await two_nodes(apiserver)
    await fund(ledger, "short", 1, apiserver)
    await fund(ledger, "gone", 1, apiserver)
    await create(apiserver, deployment("d-short", payer="short"), deployment("d-gone", payer="gone"))
    await ready(apiserver, "deployments", "d-short", "d-gone")
    grid_clock.set(START + H)  # 1 TFT pays the first hour (0.7625), 0.2375 TFT is left
    await eventually(billed(apiserver, "d-short", 7_625_000))
    grid_clock.set(START + 2 * H)  # the second hour cannot be paid: 0.525 TFT overdraft → GracePeriod
    for name in ("d-short", "d-gone"):
        d = await with_reason(apiserver, "deployments", name, "GracePeriod")
        assert d["status"]["contractState"] == "GracePeriod" and d["status"]["overdraft"] == 5_250_000
        assert condition(d)["status"] == "False" and "fund the payer" in condition(d)["message"]
    await eventually(lambda: len(events(apiserver, "GracePeriod")) >= 2, what="GracePeriod Events")
    assert (await ledger.get_account(name="short")).balance == 0  # never negative
    await ledger.fund(name="short", amount=100 * TFT, now=grid_clock.now())  # top-up during the grace period
    grid_clock.set(START + 3 * H)
    d = await with_reason(apiserver, "deployments", "d-short", "Available")
    assert (d["status"]["contractState"], d["status"]["overdraft"]) == ("Created", 0)
    assert d["status"]["billedTotal"] == 3 * 7_625_000
    assert (await ledger.get_account(name="short")).balance == 101 * TFT - 3 * 7_625_000
    await eventually(lambda: events(apiserver, "Funded", "d-short"), what="Funded Event")
    # the unpaid one: grace (3 h in these tests) from START + 2 h ends at START + 5 h → Deleted, capacity released
    node_name = obj(apiserver, "deployments", "d-gone")["status"]["node"]
    grid_clock.set(START + 6 * H)
    d = await with_reason(apiserver, "deployments", "d-gone", "OutOfFunds")
    assert (d["status"]["contractState"], d["status"]["deletedReason"]) == ("Deleted", "OutOfFunds")
    assert d["status"]["billedTotal"] == 5 * 7_625_000  # hours 1–5 billed (unpaid); nothing after expiry
    await eventually(lambda: events(apiserver, "OutOfFunds", "d-gone"), what="OutOfFunds Event")
    summaries = await ledger.node_summaries(now=START + 6 * H)
    on_node = [c for c in (await ledger.contract_summaries()).values() if c.node == node_name and c.state != "Deleted"]
    assert summaries[node_name].used.cru == sum(c.resources.cru for c in on_node)


async def test_resize_in_place_blocked_then_applied_when_room_appears(apiserver, operator, ledger, grid_clock):
    await two_nodes(apiserver)
    await fund(ledger, "alice", 100, apiserver)
    await create(apiserver, deployment("grow", node="n1"), deployment("other", node="n1", cru=4))
    await ready(apiserver, "deployments", "grow", "other")
    patch = {"headers": {"Content-Type": "application/merge-patch+json"}}
    grid_clock.set(START + H // 2)
    await apiserver.patch("/apis/grid.threefold.io/v1alpha1/namespaces/default/deployments/grow",
                          json={"spec": {"resources": {"cru": 4}}}, **patch)
    await eventually(lambda: obj(apiserver, "deployments", "grow")["status"]["reserved"]["cru"] == 4, what="resized")
    await eventually(lambda: events(apiserver, "Updated", "grow"), what="resize Event")
    await apiserver.patch("/apis/grid.threefold.io/v1alpha1/namespaces/default/deployments/grow",
                          json={"spec": {"resources": {"cru": 6}}}, **patch)  # 6 + 4 > 8 cores on n1
    d = await with_reason(apiserver, "deployments", "grow", "ResizeBlocked")
    assert "cru" in condition(d)["message"] and d["status"]["reserved"]["cru"] == 4  # never a partial change
    assert (await ledger.observe_contract(key="default/grow")).resources.cru == 4
    await apiserver.delete("/apis/grid.threefold.io/v1alpha1/namespaces/default/deployments/other")
    d = await with_reason(apiserver, "deployments", "grow", "Available")
    await eventually(lambda: obj(apiserver, "deployments", "grow")["status"]["reserved"]["cru"] == 6, what="resized")


async def test_concurrent_creation_never_overbooks(apiserver, operator, ledger):
    await two_nodes(apiserver)  # 2 × 8 cores: room for exactly four 4-core deployments
    await fund(ledger, "alice", 100, apiserver)
    await create(apiserver, *(deployment(f"c{i}", cru=4, public_ips=0) for i in range(10)))
    names = [f"c{i}" for i in range(10)]

    def settled():
        reasons = [condition(obj(apiserver, "deployments", n)).get("reason") for n in names]
        return all(r in ("Available", "Unschedulable") for r in reasons) and reasons

    reasons = await eventually(settled, what="every deployment placed or Unschedulable")
    assert reasons.count("Available") == 4 and reasons.count("Unschedulable") == 6
    for s in (await ledger.node_summaries(now=START)).values():
        assert s.used.cru <= s.resources.cru
    assert "Capacity" in condition(obj(apiserver, "deployments", names[reasons.index("Unschedulable")]))["message"]


async def test_restart_mid_cycle_bills_each_period_exactly_once(apiserver, operator, ledger, grid_clock):
    await two_nodes(apiserver)
    await fund(ledger, "p-none", 100, apiserver)
    await create(apiserver, deployment("steady", payer="p-none"))
    await ready(apiserver, "deployments", "steady")
    grid_clock.set(START + H)
    await eventually(billed(apiserver, "steady", 7_625_000))
    await operator.stop()
    grid_clock.set(START + 3 * H + 10)  # two periods end while the operator is down
    operator.start()
    await eventually(billed(apiserver, "steady", 3 * 7_625_000), what="the missed periods billed once")
    await operator.stop()
    operator.start()  # and a restart right after billing re-bills nothing
    await ready(apiserver, "deployments", "steady")
    c = await ledger.observe_contract(key="default/steady")
    assert c.billed_total == 3 * 7_625_000
    assert (await ledger.get_account(name="p-none")).balance == 100 * TFT - 3 * 7_625_000



async def _billed_on_ledger(lg, key: str, total: int) -> bool:
    return (await lg.contract_summaries())[key].billed_total == total


async def test_counters_refresh_on_their_schedule_and_a_refused_status_write_is_retried(apiserver, grid_clock,
                                                                                     ledger_path):
    """counter_refresh_s = 2 h: a billedTotal that moved alone is written at most every two grid hours; a status
    write the API refused is written again on a later tick."""

    from e2e.conftest import CONFIG, OperatorThread
    from tfgrid_operator import backend

    op = OperatorThread(ledger_path, grid_clock, counter_refresh_s=2 * H)
    op.start()
    lg = await backend.open_backend(ledger_path, CONFIG)
    try:
        await two_nodes(apiserver)
        await fund(lg, "p-none", 100, apiserver)
        await create(apiserver, deployment("d", payer="p-none"))
        await ready(apiserver, "deployments", "d")
        grid_clock.set(START + H)
        await eventually(billed(apiserver, "d", 7_625_000), what="the first bill shown")
        grid_clock.set(START + 2 * H)
        await eventually(lambda: _billed_on_ledger(lg, "default/d", 2 * 7_625_000), what="billed on the ledger …")
        await op.ticks(10)  # ten ticks since
        assert obj(apiserver, "deployments", "d")["status"]["billedTotal"] == 7_625_000  # … not yet written
        apiserver.fault = refusals = PatchFaults("deployments", 500, times=2)
        grid_clock.set(START + 3 * H)  # two hours since the last write: due, refused twice, then written
        await eventually(billed(apiserver, "d", 3 * 7_625_000), what="the counter written after two refusals")
        assert refusals.left == 0
    finally:
        apiserver.fault = None
        await lg.close()
        await op.stop()
