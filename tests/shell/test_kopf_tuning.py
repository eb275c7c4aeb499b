"""kopf's watch events without managedFields, decoded by orjson (handlers/kopf_tuning.py, kube/jsonwire.py): kopf's
own watch stream runs against the strict emulator over HTTPS, which serves objects with managedFields as
kube-apiserver does; what kopf would queue has none, and nothing else of the object is lost. kopf's JSON patches:
the same operations, without a copy of the object when there are none."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import gc
import json
import logging
import math
import sys

import kopf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kopf._cogs.aiokits import aiotasks, aiotime
from kopf._cogs.clients import auth, fetching
from kopf._cogs.clients import errors as kopf_errors
from kopf._cogs.clients import watching as kopf_watching
from kopf._cogs.structs import bodies, credentials, finalizers, patches, references
from kopf._core.actions import application
from kopf._core.reactor import queueing

from polling import eventually
from tfgrid_operator.handlers import kopf_tuning, startup
from tfgrid_operator.kube import jsonwire

API = "/apis/grid.threefold.io/v1alpha1"
FARMS = references.Resource(group="grid.threefold.io", version="v1alpha1", plural="farms", kind="Farm",
                            namespaced=True, verbs=["list", "watch"])


def farm(name: str) -> dict:
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Farm",
            "metadata": {"name": name, "labels": {"team": "x"}, "annotations": {"note": "y"}},
            "spec": {"ownerKey": "A" * 43 + "=", "payoutAccount": "p", "publicIPs": 1}}


@pytest.fixture
async def kopf_logged_in(tls, monkeypatch):
    await tls.namespace("a")
    monkeypatch.setenv("KUBECONFIG", str(tls.kubeconfig(tls.token_user())))
    vault = credentials.Vault()
    await vault.populate({"login": startup.login()})
    token = auth.vault_var.set(vault)
    yield tls
    auth.vault_var.reset(token)


async def test_kopf_queues_objects_without_managed_fields_and_nothing_else_lost(kopf_logged_in, monkeypatch):
    c = kopf_logged_in
    monkeypatch.setattr(kopf_watching, "infinite_watch", kopf_watching.infinite_watch)  # undone after the test
    monkeypatch.setattr(kopf_tuning.kopf_api, "json", kopf_tuning.kopf_api.json)
    monkeypatch.setattr(kopf_tuning.kopf_api, "request", kopf_tuning.KOPF_REQUEST)
    kopf_tuning.install()
    assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm("listed"))).status == 201
    served = await (await c.emulator.get(f"{API}/namespaces/a/farms/listed")).json()
    assert served["metadata"]["managedFields"]  # the emulator serves them, as kube-apiserver does
    seen: list[dict] = []

    async def consume() -> None:  # what kopf's queueing.watcher iterates: its LIST, then its WATCH
        stream = kopf_watching.infinite_watch(settings=kopf.OperatorSettings(), resource=FARMS, namespace=None)
        assert stream.ag_code is kopf_tuning.KOPF_INFINITE_WATCH.__code__  # kopf's own generator, no wrapper
        async for raw_event in stream:
            if isinstance(raw_event, dict):
                seen.append(raw_event)

    task = asyncio.create_task(consume())
    try:
        await eventually(lambda: bool(seen), what="the listed farm")
        assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm("watched"))).status == 201
        await eventually(lambda: len(seen) >= 2, what="the watched farm")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen[:2]] == [(None, "listed"), ("ADDED", "watched")]
    listed = seen[0]["object"]
    assert "managedFields" not in listed["metadata"] and "managedFields" not in seen[1]["object"]["metadata"]
    served["metadata"].pop("managedFields")
    assert listed == {"apiVersion": served["apiVersion"], "kind": served["kind"], **served}


class Recording:
    """A tap that records what it is shown; it fails on the first watch event (kopf's stream must go on)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def listing(self) -> None:
        self.seen.append(("listing", ""))

    def listed(self, body: dict) -> None:
        self.seen.append(("listed", body["metadata"]["name"]))

    def listed_all(self) -> None:
        self.seen.append(("listed_all", ""))

    def changed(self, kind: str, body: dict) -> None:
        self.seen.append((kind, body["metadata"]["name"]))
        if len([k for k, _ in self.seen if k in ("ADDED", "MODIFIED", "DELETED")]) == 1:
            raise RuntimeError("a tap that fails")

    def lost(self) -> None:
        self.seen.append(("lost", ""))


async def test_a_tap_sees_what_kopfs_own_stream_brings_and_its_failure_never_stops_the_stream(kopf_logged_in,
                                                                                              monkeypatch, caplog):
    c = kopf_logged_in
    monkeypatch.setattr(kopf_watching, "infinite_watch", kopf_watching.infinite_watch)  # undone after the test
    monkeypatch.setattr(kopf_watching, "continuous_watch", kopf_watching.continuous_watch)
    kopf_tuning.install()
    assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm("listed"))).status == 201
    settings, tap = kopf.OperatorSettings(), Recording()
    kopf_tuning.tap(settings, "grid.threefold.io", "farms", tap)
    kopf_tuning.tap(kopf.OperatorSettings(), "grid.threefold.io", "farms", Recording())  # another operator's: apart
    seen: list = []

    async def consume() -> None:  # as kopf's watcher: the stream iterated, each event handed on
        async for raw_event in kopf_watching.infinite_watch(settings=settings, resource=FARMS, namespace=None):
            seen.append(raw_event)

    task = asyncio.create_task(consume())
    try:
        await eventually(lambda: ("listed_all", "") in tap.seen, what="the listing shown")
        for name in ("w1", "w2"):
            assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm(name))).status == 201
        assert (await c.emulator.delete(f"{API}/namespaces/a/farms/listed")).status == 200
        await eventually(lambda: ("DELETED", "listed") in tap.seen, what="the events shown")
        await eventually(lambda: sum(1 for e in seen if isinstance(e, dict) and e["type"] == "DELETED") == 1,
                         what="the events kopf's watcher got")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert tap.seen[:6] == [("listing", ""), ("listed", "listed"), ("listed_all", ""), ("ADDED", "w1"),
                            ("ADDED", "w2"), ("DELETED", "listed")]
    await eventually(lambda: tap.seen[6:] == [("lost", "")], what="the stream's end shown")  # the watcher stopped
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen if isinstance(e, dict)] == [
        (None, "listed"), ("ADDED", "w1"), ("ADDED", "w2"), ("DELETED", "listed")]  # the tap's failure lost nothing
    assert kopf_watching.Bookmark.LISTED in seen and "a tap that fails" in caplog.text


async def test_a_tapped_stream_that_ends_before_its_listing_is_complete_leaves_the_tap_lost(monkeypatch):
    async def listing_fails(**_: object):
        yield {"type": None, "object": {"metadata": {"name": "f1"}}}
        raise ConnectionResetError("dropped while listing")

    async def listing_completes(**_: object):
        yield {"type": None, "object": {"metadata": {"name": "f1"}}}
        yield kopf_watching.Bookmark.LISTED

    settings = kopf.OperatorSettings()
    for inner, shown in ((listing_fails, ["listing", "listed", "lost"]),
                         (listing_completes, ["listing", "listed", "listed_all", "lost"])):  # ended: lost either way
        monkeypatch.setattr(kopf_tuning, "KOPF_CONTINUOUS_WATCH", inner)
        tap = Recording()
        kopf_tuning.tap(settings, "grid.threefold.io", "farms", tap)
        with contextlib.suppress(ConnectionResetError):
            async for _ in kopf_tuning.continuous_watch(settings=settings, resource=FARMS):
                pass
        assert [k for k, _ in tap.seen] == shown
    untapped = kopf_tuning.continuous_watch(settings=kopf.OperatorSettings(), resource=FARMS)
    assert untapped.ag_code is listing_completes.__code__  # no tap: kopf's own generator, no wrapper
    await untapped.aclose()


async def test_a_stopped_watchers_stream_is_closed_in_order_before_the_loop_closes(kopf_logged_in, monkeypatch):
    """kopf's watcher cancelled between two events leaves its stream open inside kopf's streaming_block; asyncio.run
    would close the two side by side ("generator didn't stop after athrow()" when the block's goes first).
    close_streams closes the stream itself, which unwinds the block in order, and reports nothing."""
    c = kopf_logged_in
    monkeypatch.setattr(kopf_watching, "infinite_watch", kopf_watching.infinite_watch)  # undone after the test
    kopf_tuning.install()
    assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm("f1"))).status == 201
    reported: list[dict] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "call_exception_handler", reported.append)
    streams: list = []
    got_one = asyncio.Event()

    async def watcher() -> None:  # as kopf's: the stream iterated, each event handed on with an await between
        stream = kopf_watching.infinite_watch(settings=kopf.OperatorSettings(), resource=FARMS, namespace=None)
        streams.append(stream)
        async for _ in stream:
            got_one.set()
            await asyncio.sleep(3600)  # cancelled here, between two events

    task = asyncio.create_task(watcher())
    await asyncio.wait_for(got_one.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    [stream] = streams
    assert stream in kopf_tuning.STREAMS and stream.ag_frame is not None  # left open by its watcher
    await kopf_tuning.close_streams()
    assert stream.ag_frame is None and not reported
    await kopf_tuning.close_streams()  # nothing left to close: a no-op


async def test_kopfs_responses_are_decoded_by_jsonwire_into_what_the_server_sent(kopf_logged_in, monkeypatch):
    """kopf's GET (its LISTs) and PATCH answers go through kube.jsonwire: the same values the standard library reads,
    each object without its managedFields."""
    c = kopf_logged_in
    monkeypatch.setattr(kopf_tuning.kopf_api, "request", kopf_tuning.KOPF_REQUEST)  # undone after the test
    kopf_tuning.install()
    kopf_tuning.install()  # idempotent: one wrapper, not two
    assert kopf_tuning.kopf_api.request is kopf_tuning.request
    decoded: list[object] = []
    real = jsonwire.loads
    monkeypatch.setattr(jsonwire, "loads", lambda data: decoded.append(data) or real(data))
    assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm("f1"))).status == 201
    settings, logger = kopf.OperatorSettings(), logging.getLogger("test")
    listed = await kopf_tuning.kopf_api.get(f"{API}/namespaces/a/farms", settings=settings, logger=logger)
    served = await (await c.emulator.get(f"{API}/namespaces/a/farms")).json()
    assert served["items"][0]["metadata"].pop("managedFields")
    assert listed["items"] == served["items"] and len(decoded) == 1
    patched = await kopf_tuning.kopf_api.patch(f"{API}/namespaces/a/farms/f1", settings=settings, logger=logger,
                                               payload={"metadata": {"labels": {"n": "2"}}},
                                               headers={"Content-Type": "application/merge-patch+json"})
    assert patched["metadata"]["labels"] == {"team": "x", "n": "2"} and len(decoded) == 2
    assert "managedFields" not in patched["metadata"]


async def test_after_the_last_finalizer_is_removed_kopf_waits_for_no_version(kopf_logged_in, monkeypatch):
    """kopf's patch of an object's last finalizer on its deletion marks the version to wait for as one that never
    arrives (its worker then holds its slot for the whole consistency timeout); through the tuning it waits for
    none. Any other patch still waits for the version the server answered with."""
    c = kopf_logged_in
    monkeypatch.setattr(application, "patch_and_check", application.patch_and_check)  # undone after the test
    kopf_tuning.install()
    assert application.patch_and_check is kopf_tuning.patch_and_check
    resource = references.Resource(group="grid.threefold.io", version="v1alpha1", plural="farms", kind="Farm",
                                   namespaced=True, subresources=["status"], verbs=["patch"])
    settings, logger = kopf.OperatorSettings(), logging.getLogger("test")
    body = {**farm("going"), "metadata": {**farm("going")["metadata"], "finalizers": ["grid.threefold.io/f", "x/y"]}}
    assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=body)).status == 201
    assert (await c.emulator.delete(f"{API}/namespaces/a/farms/going")).status == 200

    async def remove(finalizer: str) -> str | None:
        served = await (await c.emulator.get(f"{API}/namespaces/a/farms/going")).json()
        patch = patches.Patch(body=served, fns=[lambda b: finalizers.allow_deletion(body=b, finalizer=finalizer)])
        version, _remaining = await application.patch_and_check(
            settings=settings, resource=resource, body=bodies.Body(served), patch=patch, logger=logger)
        return version

    awaited = kopf_tuning.AWAITED.get(kopf_tuning.kind_of(resource), 0)
    version = await remove("x/y")  # another finalizer still holds it: the version of that PATCH is waited for
    assert version is not None and kopf_tuning.NEVER_ARRIVES not in version
    assert kopf_tuning.AWAITED[kopf_tuning.kind_of(resource)] == awaited + 1  # counted for a listing of farms
    assert await remove("grid.threefold.io/f") is None  # the last one: the object is gone, nothing to wait for
    assert kopf_tuning.AWAITED[kopf_tuning.kind_of(resource)] == awaited + 1
    assert (await c.emulator.get(f"{API}/namespaces/a/farms/going")).status == 404
    assert (await kopf_tuning.KOPF_PATCH_AND_CHECK(  # kopf's own, for the record: the mark the tuning drops
        settings=settings, resource=resource, body=bodies.Body({"metadata": {"name": "gone", "namespace": "a"}}),
        patch=patches.Patch(), logger=logger)) == (None, None)


class Blocked:
    """A processor of kopf's workers that holds each object until released, noting what waited for a worker in its
    watcher's scheduler; each object it takes counts as a PATCH awaiting its echo when ``patches`` is set."""

    def __init__(self, patches: bool) -> None:
        self.release, self.seen, self.waiting, self.patches = asyncio.Event(), [], [], patches
        self.watcher: asyncio.Task | None = None

    def scheduler(self) -> kopf_tuning.Scheduler:
        assert self.watcher is not None
        return kopf_tuning.SCHEDULERS[self.watcher]

    async def __call__(self, *, raw_event: dict, **_: object) -> None:
        self.seen.append(raw_event["object"]["metadata"]["name"])
        self.waiting.append(self.scheduler().waiting())
        if self.patches:  # as kopf_tuning.patch_and_check counts one (tested below, against the emulator)
            kind = kopf_tuning.kind_of(FARMS)
            kopf_tuning.AWAITED[kind] = kopf_tuning.AWAITED.get(kind, 0) + 1
        await self.release.wait()


async def watch_blocked(c, monkeypatch, objects: int, *, patches: bool = False) -> tuple[Blocked, object]:
    """kopf's own watcher of farms (chunks of 5, 2 workers) over ``objects`` farms, its processor blocked."""
    monkeypatch.setattr(fetching, "fetch_objs", fetching.fetch_objs)  # undone after the test
    monkeypatch.setattr(aiotasks, "Scheduler", aiotasks.Scheduler)
    monkeypatch.setattr(queueing, "Stream", queueing.Stream)
    kopf_tuning.install()
    for i in range(objects):
        assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm(f"f{i:02}"))).status == 201
    settings = kopf.OperatorSettings()
    settings.watching.chunk_size = 5
    settings.queueing.worker_limit, settings.queueing.idle_timeout, settings.queueing.exit_timeout = 2, 0.05, 0.5
    blocked, calls0 = Blocked(patches), len(c.emulator.calls)
    blocked.watcher = asyncio.create_task(
        queueing.watcher(namespace=None, settings=settings, resource=FARMS, processor=blocked))

    def calls(verb: str) -> int:
        return sum(1 for call in c.emulator.calls[calls0:] if call.verb == verb and call.resource == "farms")

    await eventually(lambda: len(blocked.seen) == 2, what="both workers busy")
    return blocked, calls


async def stop(blocked: Blocked) -> None:
    blocked.release.set()
    assert blocked.watcher is not None
    blocked.watcher.cancel()
    await asyncio.gather(blocked.watcher, return_exceptions=True)
    assert blocked.watcher not in kopf_tuning.SCHEDULERS  # forgotten once kopf's watcher closed it


async def listed_whole_with_workers_busy(blocked: Blocked, calls) -> None:
    """Every chunk listed and every object queued (as kopf alone would), the two workers still busy; then stopped."""
    try:  # the last chunk is fetched, then handed on: wait for its objects, not its LIST
        await eventually(lambda: blocked.scheduler().waiting() == 28, what="every object queued")
        assert calls("list") == 6 and len(blocked.seen) == 2 and blocked.scheduler().waiting() == 28
    finally:
        await stop(blocked)


async def test_a_listing_waits_for_kopfs_workers_before_its_next_chunk(kopf_logged_in, monkeypatch):
    """kopf queues every listed object for a worker at once (a restart at grid size: ~8,400 waiting, decoded). With
    2 workers busy and 3 objects of the first chunk waiting, the second chunk is fetched but not handed on, the third
    not asked for; once the workers go on, every object is listed and processed, never more than the limit and a
    chunk waiting, and the WATCH follows."""
    c = kopf_logged_in
    blocked, calls = await watch_blocked(c, monkeypatch, 30)
    try:
        await asyncio.sleep(0.5)
        assert len(blocked.seen) == 2 and calls("list") == 2 and blocked.scheduler().waiting() == 3
        assert calls("watch") == 0  # kopf alone: all 6 chunks listed, 28 waiting, and watching
        blocked.release.set()
        await eventually(lambda: len(blocked.seen) >= 30, what="every farm processed")
        assert sorted(blocked.seen) == [f"f{i:02}" for i in range(30)] and calls("list") == 6
        assert max(blocked.waiting) <= 2 + 5 - 1  # under the limit, and one chunk
        assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm("watched"))).status == 201
        await eventually(lambda: "watched" in blocked.seen, what="the watched farm")
        assert blocked.seen[-1] == "watched"
    finally:
        await stop(blocked)


async def test_after_its_last_chunk_a_listing_never_waits_the_watch_starts(kopf_logged_in, monkeypatch):
    """One chunk of 4: 2 workers busy, 2 objects waiting (as many as the limit), and the WATCH starts all the same."""
    blocked, calls = await watch_blocked(kopf_logged_in, monkeypatch, 4)
    try:
        await eventually(lambda: calls("watch") >= 1, what="the WATCH")
        assert calls("list") == 1 and calls("watch") >= 1 and len(blocked.seen) == 2
        assert blocked.scheduler().waiting() == 2
    finally:
        await stop(blocked)


async def test_a_listing_waits_for_kopfs_workers_list_hold_s_at_most(kopf_logged_in, monkeypatch):
    """Workers stuck longer than LIST_HOLD_S: the listing goes on (an API server's continue token and watch cache do
    not live for ever), every object queued as kopf would."""
    monkeypatch.setattr(kopf_tuning, "LIST_HOLD_S", 0.3)
    blocked, calls = await watch_blocked(kopf_logged_in, monkeypatch, 30)
    await listed_whole_with_workers_busy(blocked, calls)


async def test_a_listing_stops_waiting_once_workers_await_the_echoes_of_their_patches(kopf_logged_in, monkeypatch):
    """No echo arrives before the WATCH starts: workers that PATCHed hold their slots for kopf's consistency timeout,
    so once more than worker_limit / ECHO_SHARE of them did (here 2 of 2 workers), the listing lists as kopf does."""
    blocked, calls = await watch_blocked(kopf_logged_in, monkeypatch, 30, patches=True)
    await listed_whole_with_workers_busy(blocked, calls)


async def test_a_continue_token_expired_while_a_listing_waited_ends_it_as_a_lost_connection(monkeypatch):
    """kopf's watch returns on a lost connection or a timeout during its listing and lists again; a 410 on a LIST
    would stop the operator. Any other refusal is kopf's to handle, as it was."""
    async def expiring(**_: object):
        yield [{"metadata": {"name": "first"}}], "7"
        raise kopf_errors.APIClientError({"code": 410, "message": "too old"}, status=410, headers={})

    monkeypatch.setattr(kopf_tuning, "KOPF_FETCH_OBJS", expiring)
    chunks = []
    with pytest.raises(TimeoutError, match="continue token expired"):
        async for chunk in kopf_tuning.fetch_objs(resource=FARMS):
            chunks.append(chunk)
    assert chunks == [([{"metadata": {"name": "first"}}], "7")]

    async def forbidden(**_: object):
        raise kopf_errors.APIForbiddenError({"code": 403}, status=403, headers={})
        yield

    monkeypatch.setattr(kopf_tuning, "KOPF_FETCH_OBJS", forbidden)
    with pytest.raises(kopf_errors.APIForbiddenError):
        async for _ in kopf_tuning.fetch_objs(resource=FARMS):
            pass


@given(st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text()
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
def test_an_event_that_waits_is_kept_as_json_and_comes_back_the_same(value):
    backlog = kopf_tuning.Backlog()
    event = {"type": "MODIFIED", "object": {"metadata": {"name": "n"}, "spec": value}}
    backlog.put_nowait(copy.deepcopy(event))
    backlog.put_nowait(end := object())  # kopf's end-of-stream mark (or anything not an event): as it is
    # as JSON where that decodes to the same values; an integer past 64 bits keeps its event as it is
    assert isinstance(backlog._items[0], bytes) == (jsonwire.dumps_exact(event) is not None)
    assert backlog._items[1] is end and backlog.qsize() == 2
    assert backlog.get_nowait() == event and backlog.get_nowait() is end and backlog.empty()
    with pytest.raises(asyncio.QueueEmpty):
        backlog.get_nowait()
    packing = kopf_tuning.Packing()  # deflated, as past PACK_FROM waiting events: the same values back
    packing.waiting = kopf_tuning.PACK_FROM
    packed = packing.pack(copy.deepcopy(event))
    if packed is not None:
        assert isinstance(packed, kopf_tuning.Packed) and packing.unpack(packed) == event


def deployment_event(i: int) -> dict:
    return {"type": "MODIFIED", "object": {
        "apiVersion": "grid.threefold.io/v1alpha1", "kind": "Deployment",
        "metadata": {"name": f"vm-{i}", "namespace": "team-a", "uid": f"5c1b2a3e-1d2c-4b5a-9e8f-{i:012d}",
                     "resourceVersion": str(1000 + i), "finalizers": ["grid.threefold.io/finalizer"]},
        "spec": {"resources": {"cru": 1, "mru": 2, "sru": 25}, "payer": {"secretRef": {"name": "twin"}}},
        "status": {"node": f"node-{i % 7}", "contractId": i, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Available", "message": f"contract {i} on node node-{i % 7}",
             "lastTransitionTime": "2026-12-04T21:00:03Z", "observedGeneration": 1}]}}}


def test_many_waiting_events_are_kept_deflated_and_come_back_the_same(monkeypatch):
    """Past PACK_FROM events waiting in all backlogs, each is deflated against a dictionary of its kind (an event
    of that kind): several times smaller than its JSON; every event comes back the same, in order, and the count
    of waiting events goes back to where it was."""
    monkeypatch.setattr(kopf_tuning, "PACK_FROM", 2)
    monkeypatch.setattr(kopf_tuning, "PACKING", kopf_tuning.Packing())
    backlogs = [kopf_tuning.Backlog() for _ in range(3)]
    events = [deployment_event(i) for i in range(12)] + [{"type": "MODIFIED", "object": {"kind": "Node", "n": 1}}]
    for i, event in enumerate(events):
        backlogs[i % 3].put_nowait(copy.deepcopy(event))
    held = [item for b in backlogs for item in b._items]
    assert sum(isinstance(item, bytes) for item in held) == 2  # the first PACK_FROM: JSON
    packed = [item for item in held if isinstance(item, kopf_tuning.Packed)]
    assert len(packed) == 11 and kopf_tuning.PACKING.waiting == 13
    deployments = [p for p in packed if p.dictionary is kopf_tuning.PACKING.dictionaries["Deployment"]]
    assert len(deployments) == 10 and all(len(p.data) * 4 < len(jsonwire.dumps(events[5])) for p in deployments)
    assert set(kopf_tuning.PACKING.dictionaries) == {"Deployment", "Node"}
    assert [b.get_nowait() for _ in range(5) for b in backlogs if not b.empty()] == \
        [events[i + j] for i in range(0, 13, 3) for j in range(3) if i + j < 13]
    assert kopf_tuning.PACKING.waiting == 0 and all(b.empty() for b in backlogs)
    dropped = kopf_tuning.Backlog()  # its worker stopped with events waiting: they no longer count
    for event in events[:3]:
        dropped.put_nowait(copy.deepcopy(event))
    assert kopf_tuning.PACKING.waiting == 3
    del dropped
    assert kopf_tuning.PACKING.waiting == 0


async def test_an_event_a_worker_waits_for_is_handed_over_as_it_is_and_order_is_kept():
    backlog = kopf_tuning.Backlog()
    taker = asyncio.create_task(backlog.get())
    await asyncio.sleep(0)  # the worker waits
    first, second = ({"type": t, "object": {"metadata": {"name": "n"}}} for t in ("ADDED", "MODIFIED"))
    await backlog.put(first)
    await backlog.put(second)  # the worker has not run yet: this one waits, as JSON
    assert await taker is first and isinstance(backlog._items[0], bytes)
    assert await backlog.get() == second and backlog.empty()


async def test_a_get_timed_out_leaves_every_event_in_place():
    """kopf's worker takes an event under its idle timeout, then looks whether the backlog is empty: nothing put
    meanwhile is lost, also when the put and the timeout meet."""
    backlog = kopf_tuning.Backlog()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(backlog.get(), timeout=0.01)
    assert backlog._getter is None and backlog.empty()
    taker = asyncio.create_task(backlog.get())
    await asyncio.sleep(0)
    backlog.put_nowait(event := {"type": "ADDED", "object": {}})
    taker.cancel()  # the timeout fires after the put, before the worker runs
    await asyncio.gather(taker, return_exceptions=True)
    assert taker.cancelled() and not backlog.empty() and backlog._getter is None
    assert await asyncio.wait_for(backlog.get(), timeout=1) is event


def test_kopfs_watcher_makes_its_object_queues_backlogs(monkeypatch):
    monkeypatch.setattr(queueing, "Stream", queueing.Stream)  # undone after the test
    kopf_tuning.install()
    made = queueing.Stream(backlog=asyncio.Queue(), pressure=asyncio.Event())  # as the watcher makes one
    assert isinstance(made, kopf_tuning.KOPF_STREAM) and isinstance(made.backlog, kopf_tuning.Backlog)
    assert isinstance(made.pressure, kopf_tuning.Pressure)


async def test_pressure_wakes_its_sleepers_as_an_asyncio_event_does():
    """kopf sleeps on an object's pressure (aiotime.sleep: wait under a timeout) and sets and clears it: the
    same outcomes as with asyncio.Event, and no waiter left behind by a timeout."""
    for pressure in (kopf_tuning.Pressure(), asyncio.Event()):
        assert not pressure.is_set()
        assert await aiotime.sleep(0.01, wakeup=pressure) is None  # slept it all: not set, timed out
        sleepers = [asyncio.create_task(aiotime.sleep(5, wakeup=pressure)) for _ in range(2)]
        await asyncio.sleep(0)
        pressure.set()
        assert pressure.is_set() and all(0 < left <= 5 for left in await asyncio.gather(*sleepers))
        assert await asyncio.wait_for(pressure.wait(), timeout=1) is True  # set: no wait
        pressure.clear()
        assert not pressure.is_set()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pressure.wait(), timeout=0.01)
        sleeper = asyncio.create_task(aiotime.sleep(5, wakeup=pressure))
        await eventually(lambda p=pressure: p._waiters, what="the sleeper waiting")  # wait_for's inner task has begun
        pressure.set()
        pressure.clear()  # kopf's worker clears it before the sleeper runs: the sleeper is woken all the same
        assert 0 < await asyncio.wait_for(sleeper, timeout=1) <= 5 and not pressure.is_set()
        if isinstance(pressure, kopf_tuning.Pressure):
            assert pressure._waiters is None  # made while one waits, gone with the last


def test_slim_passes_bookmarks_errors_and_odd_shapes_unchanged():
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    assert kopf_tuning.slim(error) == {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    assert kopf_tuning.slim(kopf_watching.Bookmark.LISTED) is kopf_watching.Bookmark.LISTED
    assert kopf_tuning.slim({"type": "ADDED", "object": {"metadata": None}}) == {"type": "ADDED",
                                                                                    "object": {"metadata": None}}
    event = {"type": "MODIFIED", "object": {"metadata": {"name": "n", "managedFields": [{"manager": "m"}]}}}
    assert kopf_tuning.slim(event) == {"type": "MODIFIED", "object": {"metadata": {"name": "n"}}}
    applied = {"type": "ADDED", "object": {"metadata": {"name": "n", "annotations": {
        kopf_tuning.LAST_APPLIED: '{"spec": {}}', "grid.threefold.io/certification": "c"}}}}
    assert kopf_tuning.slim(applied)["object"]["metadata"]["annotations"] == {"grid.threefold.io/certification": "c"}


def test_slim_response_slims_a_lists_items_or_the_one_object_and_passes_other_shapes():
    item = {"metadata": {"name": "n", "managedFields": [{"manager": "m"}]}}
    assert kopf_tuning.slim_response({"kind": "FarmList", "items": [copy.deepcopy(item), {"odd": 1}, None]}) == {
        "kind": "FarmList", "items": [{"metadata": {"name": "n"}}, {"odd": 1}, None]}
    assert kopf_tuning.slim_response(copy.deepcopy(item)) == {"metadata": {"name": "n"}}
    status = {"kind": "Status", "code": 404, "details": {"name": "n"}}
    assert kopf_tuning.slim_response(copy.deepcopy(status)) == status
    assert kopf_tuning.slim_response([1, 2]) == [1, 2] and kopf_tuning.slim_response("x") == "x"


def test_jsonwire_reads_what_the_standard_library_reads():
    doc = '{"a": [1, -2, 3.5, true, null, "\\u00e9\\n"], "b": {"c": 9223372036854775807}}'
    assert jsonwire.loads(doc) == json.loads(doc) == jsonwire.loads(doc.encode())
    assert jsonwire.loads("1e400") == math.inf  # orjson refuses it; the standard library reads it
    assert math.isnan(jsonwire.loads('{"x": NaN}')["x"])
    with pytest.raises(ValueError):
        jsonwire.loads("{not json")


def test_jsonwire_writes_what_the_standard_library_writes():
    value = {"status": {"billed": 2**63 - 1, "note": "é", "list": [1, 2.5, None, False]}}
    assert json.loads(jsonwire.dumps(value)) == value
    assert json.loads(jsonwire.dumps({"big": 2**70})) == {"big": 2**70}  # past 64 bits: the standard library


def test_json_patches_are_kopfs_own_and_an_empty_one_copies_nothing(monkeypatch):
    monkeypatch.setattr(patches.Patch, "as_json_patch", patches.Patch.as_json_patch)
    kopf_tuning.install()
    body = {"metadata": {"name": "n", "resourceVersion": "7"}, "spec": {"a": 1}}
    copies: list[object] = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda x, *a: copies.append(x) or real(x, *a))
    assert patches.Patch(body=body).as_json_patch(body) == []
    assert copies == []  # kopf's own deep-copied the whole object first
    finalizer = patches.Patch(fns=[lambda b: b["metadata"].setdefault("finalizers", []).append("grid/f")])
    assert finalizer.as_json_patch(body) == kopf_tuning.KOPF_AS_JSON_PATCH(finalizer, body) == [
        {"op": "add", "path": "/metadata/finalizers", "value": ["grid/f"]}]
    assert body == {"metadata": {"name": "n", "resourceVersion": "7"}, "spec": {"a": 1}}
    kopfs = patches.Patch({"spec": {"a": 2}}, fns=[functools.partial(finalizers.block_deletion, finalizer="grid/f")])
    served = {**body, "status": {"conditions": [{"type": "Ready"}]}}
    copies.clear()
    ops = kopfs.as_json_patch(served)
    assert copies and not [c for c in copies if isinstance(c, dict) and "status" in c]  # only what the patch names
    assert ops == kopf_tuning.KOPF_AS_JSON_PATCH(kopfs, served)
    # of the metadata, only its finalizers are copied and diffed: its labels and annotations are left out
    labelled = {**served, "metadata": {"name": "n", "labels": {"a": "b"}, "annotations": {"big": "x" * 1000},
                                       "finalizers": ["grid/f"]}}
    removal = patches.Patch(fns=[functools.partial(finalizers.allow_deletion, finalizer="grid/f")])
    copies.clear()
    ops = removal.as_json_patch(labelled)
    assert copies and not [c for c in copies if "x" * 1000 in repr(c)]
    assert ops == kopf_tuning.KOPF_AS_JSON_PATCH(removal, labelled) == [{"op": "remove", "path": "/metadata/finalizers"}]
    alone = {"metadata": {"finalizers": ["grid/f"]}}  # the last field of its metadata: kopf drops the metadata
    assert removal.as_json_patch(alone) == kopf_tuning.KOPF_AS_JSON_PATCH(removal, alone) == [
        {"op": "remove", "path": "/metadata"}]


_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.text("ab", max_size=2),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("xyz"), inner,
                                                                                     max_size=3), max_leaves=8)
_FIELDS = st.dictionaries(st.sampled_from(["metadata", "spec", "status", "data", "kind"]),
                          st.dictionaries(st.sampled_from(["finalizers", "name", "a", "b"]), _VALUES, max_size=3),
                          max_size=4)
_FINALIZER_FNS = st.lists(st.sampled_from([finalizers.block_deletion, finalizers.allow_deletion]).map(
    lambda f: functools.partial(f, finalizer="grid/f")), max_size=2)


@settings(max_examples=300, deadline=None)
@given(body=_FIELDS, merge=_FIELDS, fns=_FINALIZER_FNS, finalizers_now=st.lists(st.sampled_from(["grid/f", "o/g"]),
                                                                                max_size=2, unique=True))
def test_json_patches_of_finalizer_changes_are_kopfs_own_operations(body, merge, fns, finalizers_now):
    """A patch with kopf's finalizer functions (and any merge part) gives the operations kopf's own gives on the
    whole object, and neither changes the object."""
    body = {**body, "metadata": {**body.get("metadata", {}), "finalizers": finalizers_now}}
    before = copy.deepcopy(body)
    patch = patches.Patch(merge, fns=fns)
    try:
        expected = kopf_tuning.KOPF_AS_JSON_PATCH(patch, body)
    except Exception as err:  # what kopf's own cannot apply, the tuning cannot either
        with pytest.raises(type(err)):
            kopf_tuning.as_json_patch(patch, body)
        return
    assert kopf_tuning.as_json_patch(patch, body) == expected
    assert body == before


def count_finalized_async_generators() -> list[object]:
    """Every async generator first iterated from now on that asyncio's finalizer hook gets (left suspended, then
    collected); the caller puts the hooks back."""
    finalized: list[object] = []
    firstiter, finalizer = sys.get_asyncgen_hooks()

    def counted(agen: object) -> None:
        finalized.append(agen)
        finalizer(agen)
    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=counted)
    return finalized


async def test_kopfs_requests_leave_no_async_generator_to_the_garbage_collector(kopf_logged_in, monkeypatch):
    """kopf's own authenticated request leaves its vault's two generators suspended, and asyncio's finalizer makes a
    task for each; ours runs them to their end, and the answers are the same."""
    c = kopf_logged_in
    assert (await c.emulator.post(f"{API}/namespaces/a/farms", json=farm("f1"))).status == 201
    settings, logger = kopf.OperatorSettings(), logging.getLogger("test")
    hooks = sys.get_asyncgen_hooks()
    try:
        answers, counts = [], []
        for request in (kopf_tuning.KOPF_REQUEST, kopf_tuning.request):
            monkeypatch.setattr(kopf_tuning.kopf_api, "request", request)
            finalized = count_finalized_async_generators()
            for _ in range(3):
                answers.append(await kopf_tuning.kopf_api.get(f"{API}/namespaces/a/farms/f1", settings=settings,
                                                              logger=logger))
            gc.collect()
            await asyncio.sleep(0)  # the finalizer's aclose tasks run
            counts.append(len(finalized))
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert counts[0] >= 4 and counts[1] == 0  # kopf's: two a request (the last one's may still be held); ours: none
    assert all(a["metadata"].pop("managedFields") for a in answers[:3])  # kopf's decoding keeps them, ours not
    assert all(a == answers[0] for a in answers) and answers[0]["metadata"]["name"] == "f1"


async def test_a_401_invalidates_the_credentials_tried_and_the_next_are_used(kopf_logged_in, monkeypatch):
    vault = auth.vault_var.get()
    info = startup.login()
    await vault.populate({"other": info})  # two credentials of the same priority: either may be tried first
    tried: list[object] = []

    async def refused_once(*args, context, **kwargs):
        tried.append(context)
        if len(tried) == 1:
            raise kopf_errors.APIUnauthorizedError("expired", status=401, headers={})
        return "answer"
    monkeypatch.setattr(kopf_tuning, "KOPF_REQUEST", refused_once)
    hooks = sys.get_asyncgen_hooks()
    try:
        finalized = count_finalized_async_generators()
        assert await kopf_tuning.authenticated("get", "/x") == "answer"
        gc.collect()
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert len(tried) == 2 and tried[0] is not tried[1] and finalized == []
    assert len([key async for key, _ in vault]) == 1  # the refused credentials are gone from the vault
    for context in tried:
        await context.session.close()


async def test_an_objects_daemons_memory_is_its_own_only_where_a_daemon_needs_it(monkeypatch):
    """kopf runs its daemons' step only for a kind with a daemon or timer (its own gate); every object's memory shares
    one empty daemons' part until that step, which gives the object its own before kopf's own changes it."""
    from kopf._core.intents import causes
    from kopf._core.reactor import inventory, processing

    monkeypatch.setattr(processing, "process_spawning_cause", processing.process_spawning_cause)
    monkeypatch.setattr(inventory, "ResourceMemory", inventory.ResourceMemory)
    kopf_tuning.install()
    resource = references.Resource(group="grid.tf", version="v1", plural="farms", kind="Farm", namespaced=True,
                                   verbs=["list", "watch", "patch"])
    plain = kopf.OperatorRegistry()
    kopf.on.create("grid.tf", "v1", "farms", registry=plain)(lambda **_: None)
    assert not plain._spawning.has_handlers(resource=resource)  # kopf's gate: no daemons' step for this kind
    memory = await inventory.ResourceMemories().recall({"metadata": {"uid": "u1"}})  # as kopf makes it
    assert memory.daemons_memory is kopf_tuning.NO_DAEMONS
    timed = kopf.OperatorRegistry()
    kopf.timer("grid.tf", "v1", "farms", registry=timed, interval=60, initial_delay=3600)(lambda **_: None)
    assert timed._spawning.has_handlers(resource=resource)
    cause = causes.detect_spawning_cause(resource=resource, indices={}, logger=logging.getLogger("test"),
                                         patch=patches.Patch(), body=bodies.Body(farm("f1")), memo=memory.memo,
                                         reset=True)
    assert await processing.process_spawning_cause(registry=timed, settings=kopf.OperatorSettings(), memory=memory,
                                                   cause=cause, operator_paused=None) == []
    try:  # kopf's own, on a daemons' memory of the object's own: its timer reads the body
        assert memory.daemons_memory is not kopf_tuning.NO_DAEMONS
        assert memory.daemons_memory.live_fresh_body is not None and memory.daemons_memory.running_daemons
        unchanged = kopf_tuning.kopf_daemons.DaemonsMemory(idle_reset_time=0.0)
        assert unchanged == kopf_tuning.NO_DAEMONS  # the shared one is never changed
    finally:
        tasks = [daemon.task for daemon in memory.daemons_memory.running_daemons.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
