"""Issue 17, target 2, end to end: a billing period's status write-back goes out at the loop's budget
(settings.status_writes_per_s), a change a person needs now (a grace period) before counters, every object reaching
the ledger's status, and no object patched twice for counters in a period (settings.counter_refresh_s, default one
billing period). Counts of the loop's own writes and of the loop's ticks, never timings; the budget's rate per window
of time is held in tests/shell/test_pacing.py on a clock the test moves."""

from __future__ import annotations

import collections

import pytest

from e2e.conftest import START, OperatorThread
from e2e.objects import create, deployment, farm, node, obj, ready, twin_account, with_reason
from polling import eventually
from tfgrid_operator.domain import money

pytestmark = pytest.mark.e2e
H = 3600
RICH = [f"d{i}" for i in range(16)]
BUDGET = 2  # writes a second: the period's 17 status writes take several seconds and many ticks


@pytest.fixture
async def operator(apiserver, grid_clock, ledger_path):
    op = OperatorThread(ledger_path, grid_clock, status_writes_per_s=BUDGET)  # counter_refresh_s: the default
    async with op.running():
        yield op


def record_loop_patches(op: OperatorThread) -> list[tuple[str, dict]]:
    """Every status PATCH the loop sends (kopf's handlers write through a client of their own), in order."""
    kube, seen = op.rt.kube, []
    patch_status = kube.patch_status

    async def recorded(group, version, plural, ns, name, change):
        if plural == "deployments":
            seen.append((name, change))
        return await patch_status(group, version, plural, ns, name, change)
    kube.patch_status = recorded  # type: ignore[method-assign]
    return seen


async def shows_the_ledger(apiserver, ledger, names: list[str], period: int) -> bool:
    """Every deployment billed for ``period`` on the ledger, and its status showing the ledger's total."""
    contracts = await ledger.contract_summaries()
    return all(contracts[f"default/{n}"].last_billed_at == START + (period + 1) * H and
               obj(apiserver, "deployments", n)["status"].get("billedTotal") == contracts[f"default/{n}"].billed_total
               for n in names)


async def test_a_periods_write_back_is_paced_urgent_first_and_once_per_object(apiserver, operator, ledger,
                                                                              grid_clock):
    await create(apiserver, farm(), *(node(f"n{i}", cru=16) for i in range(3)))
    await ready(apiserver, "nodes", "n0", "n1", "n2")
    for payer, tft in (("rich", 10_000), ("short", 1)):
        await twin_account(ledger, apiserver, payer)
        await ledger.fund(name=payer, amount=tft * money.UNITS_PER_TFT, now=grid_clock.now())
    await create(apiserver, *(deployment(d, payer="rich", cru=1, public_ips=0) for d in RICH))
    await create(apiserver, deployment("d-short", payer="short"))  # the last object: the last of a plain queue
    everyone = [*RICH, "d-short"]
    await ready(apiserver, "deployments", *everyone, timeout=30)
    await operator.ticks(2)
    patches = record_loop_patches(operator)

    grid_clock.set(START + H)  # the first period: every deployment's counters moved, nothing else
    await eventually(lambda: shows_the_ledger(apiserver, ledger, everyone, 0), timeout=60, what="the period shown")
    await operator.ticks(20)  # many ticks of the same period later: nobody is written again
    assert collections.Counter(n for n, _ in patches) == {n: 1 for n in everyone}, patches
    assert all(set(c) <= {"billedTotal", "lastBilledAt", "discount", "reserve", "lastBill"} for _, c in patches)

    del patches[:]
    grid_clock.set(START + 2 * H)  # the second: counters again, and d-short cannot pay (GracePeriod, urgent)
    d = await with_reason(apiserver, "deployments", "d-short", "GracePeriod")
    assert d["status"]["contractState"] == "GracePeriod"
    await eventually(lambda: shows_the_ledger(apiserver, ledger, everyone, 1), timeout=60, what="the period shown")
    await operator.ticks(20)
    assert collections.Counter(n for n, _ in patches) == {n: 1 for n in everyone}, patches
    # its budget's first second holds BUDGET writes: the grace period is among them, ahead of 16 queued counters
    assert "d-short" in [n for n, _ in patches[:BUDGET]], [n for n, _ in patches]
