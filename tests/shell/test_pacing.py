"""The loop's write budget (issue 17, target 2): a period's write-back spread over time at the budget's rate, never
a burst; nothing lost; what a person needs now before counters; one write per object, with its latest change.

Time here is a clock the test moves (the budget's injectable monotonic clock and sleep): counts of writes per window
of that clock, never timings of this machine."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging

import pydantic
import pytest

from tfgrid_operator import clock, metrics, runtime
from tfgrid_operator.backend.config import LedgerConfig
from tfgrid_operator.domain.pricing import PricingPolicy
from tfgrid_operator.loop import pacing, refresh, requeue
from tfgrid_operator.settings import Settings

TICK_S = 1.0


class FakeTime:
    """A monotonic clock and an asyncio sleep that only move when the test moves them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list = []
        self.seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self.sleepers, (self.now + seconds, next(self.seq), fut))
        await fut

    async def run_until(self, t: float) -> None:
        """Move to ``t``, waking each sleeper at its own deadline on the way."""
        while True:
            await settle()
            if not self.sleepers or self.sleepers[0][0] > t:
                break
            deadline, _, fut = heapq.heappop(self.sleepers)
            self.now = max(self.now, deadline)
            fut.set_result(None)
        self.now = t
        await settle()


async def settle() -> None:
    for _ in range(50):  # every coroutine here finishes without real waits: this many turns run them all
        await asyncio.sleep(0)


def key(i: int) -> pacing.Key:
    return ("deployments", "ns", f"d{i}")


class Recorder:
    def __init__(self, t: FakeTime) -> None:
        self.t, self.sent = t, []

    async def __call__(self, w: pacing.Write) -> None:
        await asyncio.sleep(0)
        self.sent.append((self.t.now, w.kind, w.key, w.change))


def paced(rate: float) -> tuple[FakeTime, Recorder, pacing.PacedWrites]:
    t = FakeTime()
    rec = Recorder(t)
    return t, rec, pacing.PacedWrites(rate, rec, monotonic=t.monotonic, sleep=t.sleep)


async def test_a_periods_write_back_keeps_to_the_budget_spreads_over_ticks_and_loses_nothing():
    budget, n = 10, 200
    t, rec, writes = paced(budget)
    for i in range(n):  # the billing period's tick: every deployment's counters moved
        writes.offer_status(key(i), "u", {"billedTotal": i}, urgent=False)
    per_tick = []
    for k in range(40):  # counted ticks, TICK_S of the budget's clock apart
        before = len(rec.sent)
        await writes.flush()
        await t.run_until((k + 1) * TICK_S)
        per_tick.append(len(rec.sent) - before)
    await writes.close()
    assert sorted(k for _, _, k, _ in rec.sent) == sorted(key(i) for i in range(n))  # each once, none lost
    assert all(change == {"billedTotal": int(k[2][1:])} for _, _, k, change in rec.sent)
    assert per_tick[0] <= 2 * budget * TICK_S  # a second's worth saved up, and the first tick's own
    for i in range(len(per_tick)):  # any run of ticks: at most the budget for their time, plus one second's worth
        for j in range(i + 1, len(per_tick) + 1):
            assert sum(per_tick[i:j]) <= budget * (j - i) * TICK_S + budget, (i, j, per_tick)
    assert sum(1 for c in per_tick if c) >= n // budget - 1  # spread over ~n / budget ticks, not a burst


async def test_what_a_person_needs_now_overtakes_queued_counters():
    t, rec, writes = paced(5)
    for i in range(50):
        writes.offer_status(key(i), "u", {"billedTotal": 1}, urgent=False)
    await writes.flush()  # the budget's first second: five counters
    counters_first = len(rec.sent)
    writes.offer_status(key(99), "u", {"conditions": [{"type": "Ready", "status": "False"}]}, urgent=True)
    writes.offer_nudge(("nodes", "ns", "n1"), "u")
    writes.offer_status(key(30), "u", {"billedTotal": 2, "movedFrom": "n0"}, urgent=True)  # a queued counter moves up
    await t.run_until(1.0)
    await writes.close()
    nxt = [(kind, k) for _, kind, k, _ in rec.sent[counters_first:counters_first + 3]]
    assert nxt == [("status", key(99)), ("nudge", ("nodes", "ns", "n1")), ("status", key(30))], rec.sent
    assert [k for _, _, k, _ in rec.sent].count(key(30)) == 1


async def test_a_newer_change_replaces_the_queued_one_in_place_and_an_empty_one_withdraws_it():
    t, rec, writes = paced(1)
    for i in range(3):
        writes.offer_status(key(i), "u", {"billedTotal": 1}, urgent=False)
    writes.offer_status(key(1), "u", {"billedTotal": 2}, urgent=False)  # the next tick's, still behind key(0)
    writes.withdraw(key(2))  # a handler wrote it meanwhile
    for s in range(1, 5):
        await writes.flush()
        await t.run_until(float(s))
    await writes.close()
    assert [(k, c) for _, _, k, c in rec.sent] == [(key(0), {"billedTotal": 1}), (key(1), {"billedTotal": 2})]


async def test_writes_of_objects_gone_or_replaced_are_forgotten():
    _, rec, writes = paced(100)
    writes.offer_status(key(0), "old-uid", {"billedTotal": 1}, urgent=False)
    writes.offer_status(key(1), "u", {"billedTotal": 1}, urgent=False)
    writes.keep(lambda w: w.uid == "u")
    await writes.flush()
    await writes.close()
    assert [k for _, _, k, _ in rec.sent] == [key(1)]


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError, match="rate > 0"):
        pacing.TokenBucket(0, 1, 0.0)
    with pytest.raises(pydantic.ValidationError, match="status_writes_per_s"):
        Settings(status_writes_per_s=0)
    with pytest.raises(pydantic.ValidationError, match="counter_refresh_s"):
        Settings(counter_refresh_s=-1)


class Kube:
    """What the loop's sender calls, recorded."""

    def __init__(self) -> None:
        self.patched: list = []

    async def patch_status(self, group, version, plural, ns, name, change):
        self.patched.append(((plural, ns, name), change))
        return {"status": change}


async def test_a_queued_change_whose_object_was_written_since_is_compared_again_not_sent():
    rt = runtime.Runtime(settings=Settings(), clock=clock.ManualClock(0), ledger=None,  # type: ignore[arg-type]
                         kube=Kube(), metrics=metrics.Metrics())  # type: ignore[arg-type]
    stale, current, going, handled = key(0), key(1), key(2), key(3)
    for k in (stale, current, going, handled):
        rt.objects[k] = {"metadata": {"uid": "u"}, "spec": {}, "status": {"billedTotal": 0}}
        rt.counters_written[k] = 0
    rt.objects[going]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    writes = refresh.paced_writes(rt)
    for k in (stale, current, going, handled):
        writes.offer_status(k, "u", {"billedTotal": 5}, urgent=False, basis={"billedTotal": 0})
    rt.objects[stale] = {**rt.objects[stale], "status": {"billedTotal": 3}}  # a handler's write arrived on the watch
    rt.busy[handled] = 1  # its reconcile handler runs now: what the ledger shows may be half of its work
    await writes.flush()
    await writes.close()
    assert rt.kube.patched == [(current, {"billedTotal": 5})]  # type: ignore[attr-defined]
    assert stale not in rt.counters_written  # the next tick compares it again and may write it at once
    assert handled not in rt.counters_written
    assert rt.objects[current]["status"] == {"billedTotal": 5}


class QuietLedger:
    """A ledger with nothing on it: what one refresh reads."""

    config = LedgerConfig()

    async def contract_summaries(self) -> dict:
        return {}

    async def policies(self) -> tuple:
        return PricingPolicy(), {}

    async def attestations(self) -> dict:
        return {}

    async def last_receipts(self) -> dict:
        return {}

    async def list_farms(self) -> list:
        return []


async def test_a_pass_over_every_object_lets_other_tasks_run_between_slices_and_sees_objects_as_they_are_then(
        monkeypatch):
    """The refresh yields to the event loop every YIELD_EVERY objects (kopf's handlers run between slices), and
    compares each object as it is when its turn comes: one gone meanwhile is skipped."""
    rt = runtime.Runtime(settings=Settings(), clock=clock.ManualClock(0), ledger=QuietLedger(),  # type: ignore[arg-type]
                         kube=Kube(), metrics=metrics.Metrics())  # type: ignore[arg-type]
    n = refresh.YIELD_EVERY * 3 + 7
    for i in range(n):
        rt.objects[key(i)] = {"metadata": {"uid": "u", "generation": 1}, "spec": {}, "status": {"observedGeneration": 1}}
    compared: list = []
    monkeypatch.setattr(refresh, "desired_status", lambda rt, ledger, k, body: compared.append(k))
    seen: list[int] = []

    async def other() -> None:  # kopf's handlers, say: records how far the pass was each time it ran
        while len(compared) < n - 3:
            seen.append(len(compared))
            if len(compared) >= refresh.YIELD_EVERY:
                rt.objects.pop(key(n - 1), None)  # deleted while the pass runs
                rt.busy[key(n - 2)] = 1  # its handler runs now
                rt.reported[key(n - 3)] = ("u", "Available", {})  # its handler reported after the ledger was read
            await asyncio.sleep(0)
    task = asyncio.create_task(other())
    writes = refresh.paced_writes(rt)
    await refresh.refresh(rt, 0, {}, {}, writes)
    await writes.close()
    await task
    assert sorted({x for x in seen if 0 < x < n}) == [refresh.YIELD_EVERY * k for k in (1, 2, 3)]
    assert len(compared) == n - 3 and not {key(n - 1), key(n - 2), key(n - 3)} & set(compared)


async def test_a_change_its_kinds_model_refuses_is_never_sent_and_stops_neither_the_tick_nor_another_write(
        monkeypatch, caplog):
    """Checked as it is sent, not as it is queued (where one refused change failed the whole tick): a change the
    CRD's status model refuses is never written, counted, logged as an error once per object and reason (then at
    debug level), and compared again next tick, its counters keeping their cadence; the other objects' writes go."""
    caplog.set_level(logging.DEBUG, logger="tfgrid_operator.loop")
    rt = runtime.Runtime(settings=Settings(), clock=clock.ManualClock(0), ledger=QuietLedger(),  # type: ignore[arg-type]
                         kube=Kube(), metrics=metrics.Metrics())  # type: ignore[arg-type]
    bad, good = key(0), key(1)
    for k in (bad, good):
        rt.objects[k] = {"metadata": {"uid": "u", "generation": 1}, "spec": {}, "status": {"billedTotal": 0}}
        rt.counters_written[k] = 0
    desired = {bad: {"billedTotal": -5, "notAField": 1}, good: {"overdraft": 3}}
    monkeypatch.setattr(refresh, "desired_status", lambda rt, ledger, k, body: {**body["status"], **desired[k]})
    writes = refresh.paced_writes(rt)
    for _ in range(2):  # two ticks: the refused change is found again, the written one is not
        assert await refresh.refresh(rt, 0, {}, {}, writes) >= 0
    await writes.close()
    assert rt.kube.patched == [(good, {"overdraft": 3})]  # type: ignore[attr-defined]
    assert rt.objects[bad]["status"] == {"billedTotal": 0} and rt.counters_written[bad] == 0
    refusals = [r for r in caplog.records if "Status of deployments ns/d0 not written" in r.getMessage()]
    assert [r.levelname for r in refusals] == ["ERROR", "DEBUG"] and "notAField" in refusals[0].getMessage()
    assert rt.metrics.status_refused.labels("deployment")._value.get() == 2
    del rt.objects[bad]
    requeue.forget_gone(rt)
    assert bad not in rt.refused


async def test_a_write_that_fails_never_stops_the_others(caplog):
    t = FakeTime()
    sent = []

    async def send(w: pacing.Write) -> None:
        if w.key == key(0):
            raise ConnectionResetError("dropped")
        sent.append(w.key)
    writes = pacing.PacedWrites(2, send, monotonic=t.monotonic, sleep=t.sleep)
    for i in range(4):
        writes.offer_status(key(i), "u", {"billedTotal": 1}, urgent=False)
    await writes.flush()
    await t.run_until(1.0)
    await writes.close()
    assert sent == [key(1), key(2), key(3)]
    assert "status write of deployments ns/d0 failed: dropped" in caplog.text


async def test_a_tick_sends_at_most_what_the_budget_held_as_it_ended_however_slow_the_api_is():
    t = FakeTime()

    async def slow(w: pacing.Write) -> None:
        t.now += 0.5  # every write takes half a second of the budget's clock: tokens refill meanwhile
    writes = pacing.PacedWrites(10, slow, monotonic=t.monotonic, sleep=t.sleep)
    for i in range(100):
        writes.offer_status(key(i), "u", {"billedTotal": 1}, urgent=False)
    assert await writes.flush() == 10  # a second's worth, then the tick goes on; the pacer has the other 90
    assert len(writes) == 90
    await writes.close()


def test_a_nodes_occupancy_is_written_at_once_after_a_quiet_spell_then_at_most_every_occupancy_refresh_s(monkeypatch):
    rt = runtime.Runtime(settings=Settings(occupancy_refresh_s=30, counter_refresh_s=3600), clock=clock.ManualClock(0),
                         ledger=None, kube=None, metrics=metrics.Metrics())  # type: ignore[arg-type]
    wall = [100.0]
    monkeypatch.setattr(refresh.time, "monotonic", lambda: wall[0])
    node = ("nodes", "ns", "n1")
    held = lambda change, now=0: refresh._routine_held(rt, node, change, now)  # noqa: E731
    assert not held({"used": {"cru": 2}, "deployments": 1})  # the first placement shows at once
    wall[0] += 10
    assert held({"used": {"cru": 4}, "deployments": 2})  # the next ten seconds later waits
    wall[0] += 25
    assert not held({"used": {"cru": 8}, "deployments": 4})  # 35 s after the last: written
    wall[0] += 1
    assert not held({"conditions": []})  # anything a person needs now is never held
    assert held({"free": {"cru": 0}})  # and leaves the occupancy clock alone
    assert not held({"uptimeSeconds": 5}, now=0)  # counters keep their own clock (grid time)
    assert held({"uptimeSeconds": 6, "used": {"cru": 9}}, now=60)  # neither clock due: held
    wall[0] += 30
    assert not held({"uptimeSeconds": 6, "used": {"cru": 9}}, now=60)  # occupancy due: the write takes both


async def test_the_objects_gauge_counts_each_kind_by_ready_and_a_count_that_fell_to_none_reads_0(monkeypatch):
    """tfgrid_objects is counted in the refresh's sliced pass; every kind and Ready state is set each tick, so one
    that no object has any more reads 0, not the last count it had."""
    rt = runtime.Runtime(settings=Settings(), clock=clock.ManualClock(0), ledger=QuietLedger(),  # type: ignore[arg-type]
                         kube=Kube(), metrics=metrics.Metrics())  # type: ignore[arg-type]

    def ready(status: str) -> dict:
        return {"metadata": {"uid": "u", "generation": 1}, "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": status, "reason": "r"}]}}

    for i in range(refresh.YIELD_EVERY + 3):  # across a slice
        rt.objects[key(i)] = ready("False" if i < 2 else "True")
    rt.objects[("nodes", "ns", "n0")] = {"metadata": {"uid": "u"}, "spec": {}}  # no status yet
    rt.busy[key(1)] = 1  # its handler runs: the refresh leaves it alone, the gauge still counts it
    rt.unfollowed.add("nodes")  # a stopped watch: its objects as last seen, counted all the same
    monkeypatch.setattr(refresh, "desired_status", lambda rt, ledger, k, body: None)

    async def tick() -> dict:
        writes = refresh.paced_writes(rt)
        await refresh.refresh(rt, 0, {}, {}, writes)
        await writes.close()
        return {(kind, r): rt.metrics.registry.get_sample_value("tfgrid_objects", {"kind": kind, "ready": r})
                for kind in ("deployment", "node", "farm") for r in ("True", "False", "Unknown")}

    first = await tick()
    assert (first[("deployment", "False")], first[("deployment", "True")]) == (2, refresh.YIELD_EVERY + 1)
    assert first[("node", "Unknown")] == 1 and first[("farm", "True")] == 0
    rt.objects[key(0)] = rt.objects[key(1)] = ready("True")
    del rt.objects[("nodes", "ns", "n0")]
    rt.busy.clear()
    second = await tick()
    assert second[("deployment", "False")] == 0 and second[("deployment", "True")] == refresh.YIELD_EVERY + 3
    assert second[("node", "Unknown")] == 0


async def test_a_nudge_is_not_offered_for_an_object_deleted_after_the_search_found_it(monkeypatch):
    """The search for objects to nudge yields between slices: one found due and deleted before the search ends is
    not nudged (and does not stop the tick)."""
    import time

    rt = runtime.Runtime(settings=Settings(nudge_after_s=10), clock=clock.ManualClock(0), ledger=QuietLedger(),  # type: ignore[arg-type]
                         kube=Kube(), metrics=metrics.Metrics())  # type: ignore[arg-type]
    lost = key(0)  # first in the pass: its report was lost a while ago
    rt.objects[lost] = {"metadata": {"uid": "u", "generation": 2}, "spec": {}, "status": {"observedGeneration": 1}}
    for i in range(1, refresh.YIELD_EVERY * 2):
        rt.objects[key(i)] = {"metadata": {"uid": "u", "generation": 1}, "spec": {}, "status": {"observedGeneration": 1}}
    rt.handled[lost] = 2
    rt.unobserved_since[lost] = time.monotonic() - 11
    monkeypatch.setattr(refresh, "desired_status", lambda rt, ledger, k, body: None)

    ended = asyncio.Event()

    async def delete_during_the_search() -> None:
        while rt.unobserved_since.get(lost, 0) < time.monotonic() - 5 and not ended.is_set():
            await asyncio.sleep(0)  # until the search has looked at it (its clock starts over once found)
        if not ended.is_set():
            rt.objects.pop(lost, None)

    task = asyncio.create_task(delete_during_the_search())
    writes = refresh.paced_writes(rt)
    monkeypatch.setattr(writes, "flush", _no_flush)
    await refresh.refresh(rt, 0, {}, {}, writes)
    ended.set()  # a search that never found it fails below instead of waiting here for ever
    await task
    assert lost not in rt.objects and writes.urgent == {}  # found due, gone before the offer: no nudge
    await writes.close()


async def _no_flush() -> int:
    return 0
