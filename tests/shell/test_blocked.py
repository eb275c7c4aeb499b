"""Blocked deletes (handlers/blocked.py): woken by the last of what blocks them, never before kopf stored the block;
finished in one write; something new in the way is waited for in turn; a ledger failure is left to kopf's retry."""

from __future__ import annotations

import asyncio
from typing import Any

from tfgrid_operator import clock, metrics, runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.handlers import blocked
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.settings import Settings

HANDLER = "delete_widget"


class Cluster:
    """One Widget being deleted, blocked: kopf stores the block on the ``stored``-th read (as its PATCH lands)."""

    path = staticmethod(KubeClient.path)

    def __init__(self, stored: int = 1) -> None:
        self.reads, self.stored, self.writes = 0, stored, []

    def body(self) -> dict[str, Any]:
        progress = {HANDLER: {"retries": 1, "delayed": "2030-01-01T00:00:00.000000+00:00"}} \
            if self.reads >= self.stored else {}
        return {"kind": "Widget", "metadata": {
            "name": "w1", "namespace": "ns", "uid": "u1", "resourceVersion": str(self.reads),
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["other/keep", blocked.FINALIZER]},
            "status": {"kopf": {"progress": progress}}}

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        if method == "GET":
            self.reads += 1
            return self.body()
        self.writes.append((method, path, body, content_type))
        return {}

    async def patch_status(self, group: str, version: str, plural: str, namespace: str, name: str, status: Any) -> Any:
        return await self.request("PATCH", self.path(group, version, plural, namespace, name) + "/status", status)


def make_runtime(kube: Cluster) -> runtime.Runtime:
    return runtime.Runtime(settings=Settings(), clock=clock.ManualClock(0), ledger=None,  # type: ignore[arg-type]
                           kube=kube, metrics=metrics.Metrics())  # type: ignore[arg-type]


async def settled() -> None:
    while blocked._waking:
        await asyncio.gather(*blocked._waking)


def closer(outcomes: list[BaseException | None]) -> Any:
    async def close(rt: runtime.Runtime, body: Any) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
    return close


async def test_the_last_dependent_finishes_the_delete_in_one_write_once_kopf_stored_the_block(monkeypatch):
    monkeypatch.setattr(blocked, "WAKE_POLL_S", 0.001)
    kube = Cluster(stored=3)  # kopf's write of the block lands after the dependents are gone
    rt = make_runtime(kube)
    blocked.closes("widgets", "gadgets", closer([None]))
    blocked.wait(rt, kube.body(), "widgets", HANDLER, 0, ["gadgets:g1", "gadgets:g2"])
    blocked.wait(rt, {"metadata": {"name": "box", "namespace": "ns", "uid": "u2"}}, "boxes", "delete_box", 0,
                 ["widgets:w1"])
    blocked.gone(rt, "gadgets:g1")
    await settled()
    assert kube.reads == 0 and not kube.writes  # g2 still blocks it: not even read
    blocked.gone(rt, "gadgets:g2")
    await settled()
    # read until kopf's block was stored (the third read); then the box's wake read (this fake answers any read
    # with the widget, whose uid is not the box's: it leaves it alone)
    assert kube.reads == 4
    [(method, path, ops, content_type)] = kube.writes  # the finalizer, on the resourceVersion read
    assert (method, content_type) == ("PATCH", "application/json-patch+json")
    assert path.endswith("/namespaces/ns/widgets/w1")
    assert ops == [{"op": "test", "path": "/metadata/resourceVersion", "value": "3"},
                   {"op": "remove", "path": "/metadata/finalizers/1"}]
    assert ("boxes", "ns", "box") not in rt.waits and not rt.waited_for


async def test_something_new_in_the_way_is_waited_for_and_a_ledger_failure_is_left_to_kopf(monkeypatch):
    monkeypatch.setattr(blocked, "WAKE_POLL_S", 0.001)
    kube = Cluster()
    rt = make_runtime(kube)
    outcomes: list[BaseException | None] = [errors.Conflict("a gadget was placed since", blockers=("g3",)),
                                            errors.Unavailable("database is locked")]
    blocked.closes("widgets", "gadgets", closer(outcomes))
    kube.reads = 1  # kopf stored its block
    blocked.wait(rt, kube.body(), "widgets", HANDLER, 0, ["gadgets:g1"])
    blocked.gone(rt, "gadgets:g1")
    await settled()
    assert not kube.writes and rt.waits[("widgets", "ns", "w1")][3] == {"gadgets:g3"}  # no write: waits for g3
    blocked.gone(rt, "gadgets:g3")
    await settled()
    # the ledger failed: kopf's stored delay is cleared, so that its retry reports the failure and backs off
    [(_, path, status, _)] = kube.writes
    assert path.endswith("/widgets/w1/status") and status == {"kopf": {"progress": {HANDLER: {"delayed": None}}}}
    assert not outcomes and not rt.waits and not rt.waited_for
