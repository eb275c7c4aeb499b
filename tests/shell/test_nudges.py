"""Which objects the loop nudges (a requeue annotation touch): those whose report was lost, never those
still waiting in kopf's queue during a burst."""

from __future__ import annotations

import time

from tfgrid_operator import clock, metrics, runtime
from tfgrid_operator.loop import requeue
from tfgrid_operator.settings import Settings


def rt_with(objects: dict, **fields) -> runtime.Runtime:
    rt = runtime.Runtime(settings=Settings(nudge_after_s=10), clock=clock.ManualClock(0), ledger=None,  # type: ignore[arg-type]
                         kube=None, metrics=metrics.Metrics())  # type: ignore[arg-type]
    rt.objects.update(objects)
    for k, v in fields.items():
        setattr(rt, k, v)
    return rt


def body(generation: int, observed: int | None) -> dict:
    return {"metadata": {"generation": generation}, "spec": {}, "status": {} if observed is None else
            {"observedGeneration": observed}}


def due_after(rt: runtime.Runtime, seconds: float) -> list:
    assert requeue.unobserved(rt) == []  # the first sight starts the clock
    for key in rt.unobserved_since:
        rt.unobserved_since[key] -= seconds
    return requeue.unobserved(rt)


def test_a_report_lost_after_a_reconcile_ran_is_nudged_even_while_kopf_is_busy():
    lost, current = ("deployments", "ns", "lost"), ("deployments", "ns", "ok")
    rt = rt_with({lost: body(2, 1), current: body(2, 2)}, handled={lost: 2, current: 2}, last_reconcile=time.monotonic())
    assert due_after(rt, 11) == [lost]


def test_objects_still_queued_in_a_burst_are_left_to_kopf():
    queued = ("deployments", "ns", "queued")
    rt = rt_with({queued: body(1, None)}, last_reconcile=time.monotonic())  # handlers are finishing right now
    assert due_after(rt, 11) == []


def test_when_kopf_is_quiet_an_object_no_reconcile_reached_is_nudged():
    stuck = ("nodes", "ns", "n0")  # kopf's finalizer write failed: the handler never ran
    rt = rt_with({stuck: body(1, None)}, last_reconcile=time.monotonic() - 60)
    assert due_after(rt, 11) == [stuck]
    assert requeue.unobserved(rt) == []  # nudged once, then the clock starts over


def waiting_body(reason: str) -> dict:
    """An object whose status says ``reason``."""
    return {"metadata": {"generation": 1, "uid": "u"}, "spec": {},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": reason}]}}


def test_objects_waiting_on_the_world_are_requeued_with_a_capped_backoff():
    unschedulable, ready = ("deployments", "ns", "big"), ("deployments", "ns", "ok")
    rt = rt_with({unschedulable: waiting_body("Unschedulable"), ready: waiting_body("Available")},
                 reported={unschedulable: ("u", "Unschedulable", {}), ready: ("u", "Available", {})})  # its handler's
    rt.retry_delay_s = 1.0
    waits = []
    for _ in range(7):
        assert requeue.requeues(rt) == []  # not before its time
        _, wait = rt.requeue_at[unschedulable]
        rt.requeue_at[unschedulable] = (time.monotonic() - 0.001, wait)  # its time has come
        assert requeue.requeues(rt) == [unschedulable]
        waits.append(rt.requeue_at[unschedulable][1])
    assert waits == [2, 4, 8, 12, 12, 12, 12]  # doubling, capped at REQUEUE_BACKOFF_CAP × retry_delay_s
    assert ready not in rt.requeue_at
    rt.objects[unschedulable] = waiting_body("Available")  # placed at last: its backoff is forgotten
    rt.reported[unschedulable] = ("u", "Available", {})
    assert requeue.requeues(rt) == [] and unschedulable not in rt.requeue_at


def test_a_reason_only_the_status_claims_is_not_the_handlers():
    """A user can write status: a waiting reason no handler reported (or one reported for an earlier object of
    the name, another uid) never makes the loop treat the object as waiting."""
    written, earlier = ("deployments", "ns", "written"), ("deployments", "ns", "earlier")
    rt = rt_with({written: waiting_body("Unschedulable"), earlier: waiting_body("Unschedulable")},
                 reported={earlier: ("old-uid", "Unschedulable", {})})  # no report for written
    rt.retry_delay_s = 0.0
    assert requeue.requeues(rt) == [] and rt.requeue_at == {}


def test_a_wait_that_keeps_observed_generation_behind_is_requeued_not_nudged():
    """A resize with no room reports ResizeBlocked with observedGeneration still at the applied generation: its
    report did land, so it is not a lost write; requeues() retries it with a backoff."""
    blocked = ("deployments", "ns", "grow")
    b = {"metadata": {"generation": 2}, "spec": {}, "status": {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "False", "reason": "ResizeBlocked", "observedGeneration": 1}]}}
    rt = rt_with({blocked: b}, handled={blocked: 2}, last_reconcile=time.monotonic() - 60)
    assert due_after(rt, 11) == []


def test_a_kind_whose_watch_stopped_is_neither_nudged_nor_requeued_until_it_is_listed_again():
    """A standby replica: kopf paused its streams, so its view is as last seen (a status that never catches up
    would be nudged forever); the view's kind is unfollowed from its stream's end to its next LIST."""
    from tfgrid_operator.loop import mirror

    lost, waiting = ("deployments", "ns", "lost"), ("deployments", "ns", "big")
    rt = rt_with({lost: body(2, 1), waiting: waiting_body("Unschedulable")}, handled={lost: 2},
                 last_reconcile=time.monotonic(), reported={waiting: ("u", "Unschedulable", {})}, retry_delay_s=0)
    view = mirror.View(rt, "deployments")
    view.lost()  # kopf's stream of the kind ended: paused
    assert due_after(rt, 11) == [] and requeue.requeues(rt) == []
    view.listing()  # followed again (the LIST under way; what it lists replaces what the view held)
    assert requeue.requeues(rt) == [waiting] and due_after(rt, 11) == [lost]


async def test_the_ticks_pass_finds_what_both_find_and_lets_other_tasks_run_between_slices(monkeypatch):
    """``due`` is ``unobserved`` and ``requeues`` in one pass that yields every ``every`` objects (a pass over the
    grid held the event loop ~70 ms a tick in one piece), each object looked at as it is when its turn comes."""
    import asyncio

    lost, waiting = ("deployments", "ns", "lost"), ("deployments", "ns", "big")
    fine = {("deployments", "ns", f"ok{i}"): body(1, 1) for i in range(25)}
    gone = ("deployments", "ns", "zz-gone")  # last in key order: deleted while the pass runs
    rt = rt_with({lost: body(2, 1), waiting: waiting_body("Unschedulable"), **fine, gone: body(2, 1)},
                 handled={lost: 2, gone: 2}, last_reconcile=time.monotonic(),
                 reported={waiting: ("u", "Unschedulable", {})}, retry_delay_s=0)
    for key in (lost, gone):
        rt.unobserved_since[key] = time.monotonic() - 11  # unobserved for longer than nudge_after_s
    looked: list = []
    original = requeue._unobserved

    def counting(rt, key, body, now, quiet):
        looked.append(key)
        return original(rt, key, body, now, quiet)

    seen: list[int] = []

    async def other() -> None:  # kopf's handlers, say: how far the pass was each time they ran
        while len(looked) < len(rt.objects):
            seen.append(len(looked))
            if len(looked) >= 10:
                rt.objects.pop(gone, None)
            await asyncio.sleep(0)

    monkeypatch.setattr(requeue, "_unobserved", counting)
    task = asyncio.create_task(other())
    found = await requeue.due(rt, every=10)
    task.cancel()
    assert found == sorted([lost, waiting])  # what unobserved() and requeues() find, and not the one gone
    assert {10, 20} <= set(seen) and gone not in looked


def test_an_object_both_unobserved_and_waiting_keeps_both_books():
    """``due`` runs both checks on every object (each keeps its own bookkeeping): one whose status lags and whose
    handler reported a wait is nudged and its requeue backoff moves on."""
    import asyncio

    both = ("deployments", "ns", "both")
    b = {"metadata": {"generation": 2, "uid": "u"}, "spec": {}, "status": {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Available"}]}}  # what the status shows: not a wait
    rt = rt_with({both: b}, handled={both: 2}, last_reconcile=time.monotonic(),
                 reported={both: ("u", "Unschedulable", {})}, retry_delay_s=1.0)  # what its handler reported
    rt.unobserved_since[both] = time.monotonic() - 11
    rt.requeue_at[both] = (time.monotonic() - 0.001, 1.0)  # its retry is due
    assert asyncio.run(requeue.due(rt, every=10)) == [both]
    assert rt.requeue_at[both][1] == 2.0  # the backoff doubled: the requeue check ran too
    assert rt.unobserved_since[both] > time.monotonic() - 1  # the nudge's clock started over
