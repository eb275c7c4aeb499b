"""The loop's own view of our objects (loop/mirror.py), here from a LIST + WATCH per kind (kube/follow.py) against the
strict emulator over HTTPS, slim bodies (no managedFields, labels, annotations or kopf's bookkeeping), deletions, a
watch dropped by a restarting API server, and the namespace scope `run -n` gives."""

from __future__ import annotations

import asyncio
import json
import types

import pytest

from kube_emulator import Cluster
from polling import eventually
from tfgrid_operator import clock, metrics, runtime
from tfgrid_operator.kube import client, follow
from tfgrid_operator.loop import mirror
from tfgrid_operator.settings import Settings

API = "/apis/grid.threefold.io/v1alpha1"


def farm(name: str) -> dict:
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Farm",
            "metadata": {"name": name, "labels": {"team": "x"}, "annotations": {"note": "y" * 500}},
            "spec": {"ownerKey": "A" * 43 + "=", "payoutAccount": "p", "publicIPs": 1}}


async def create(c: Cluster, ns: str, name: str) -> None:
    resp = await c.emulator.post(f"{API}/namespaces/{ns}/farms", json=farm(name))
    assert resp.status == 201, await resp.text()


async def follow_farms(rt: runtime.Runtime) -> None:
    """The view of Farms, kept from a LIST + WATCH of its own (kube.follow; the operator's comes from kopf's streams,
    tests/shell/test_kopf_tuning.py)."""
    base = rt.kube.path(runtime.GROUP, runtime.VERSION, "farms", rt.settings.watch_namespace or None)
    await follow.follow(rt.kube, base, mirror.View(rt, "farms"), "farms")


def make_runtime(namespace: str = "") -> runtime.Runtime:
    return runtime.Runtime(settings=Settings(watch_namespace=namespace), clock=clock.ManualClock(0),
                           ledger=None, kube=client.KubeClient(), metrics=metrics.Metrics())  # type: ignore[arg-type]


async def test_the_mirror_lists_watches_and_keeps_only_what_the_loop_reads(cluster):
    await create(cluster, "a", "listed")  # before the mirror starts: the LIST brings it
    rt = make_runtime()
    task = asyncio.create_task(follow_farms(rt))
    try:
        await eventually(lambda: ("farms", "a", "listed") in rt.objects, what="the listed farm")
        await create(cluster, "b", "watched")  # after: the WATCH brings it, from another namespace too
        await eventually(lambda: ("farms", "b", "watched") in rt.objects, what="the watched farm")
        resp = await cluster.emulator.patch(f"{API}/namespaces/b/farms/watched/status", json={"status": {
            "farmId": 7, "kopf": {"progress": {"x": {"retries": 1}}}, "lastHandledConfiguration": "{\"spec\": 1}"}},
            headers={"Content-Type": "application/merge-patch+json"})
        assert resp.status == 200, await resp.text()
        await eventually(lambda: rt.objects[("farms", "b", "watched")]["status"] == {"farmId": 7}, what="the status")
        body = rt.objects[("farms", "b", "watched")]
        assert set(body) == {"metadata", "spec", "status"}
        assert set(body["metadata"]) <= set(mirror.KEPT_METADATA)  # no labels, annotations or managedFields
        assert body["metadata"]["uid"] and mirror.spec_of(body)["publicIPs"] == 1
        assert (await cluster.emulator.delete(f"{API}/namespaces/a/farms/listed")).status == 200
        await eventually(lambda: ("farms", "a", "listed") not in rt.objects, what="the deletion")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.kube.close()


async def test_a_dropped_watch_goes_on_and_misses_nothing(cluster):
    rt = make_runtime()
    task = asyncio.create_task(follow_farms(rt))
    try:
        await create(cluster, "a", "before")
        await eventually(lambda: ("farms", "a", "before") in rt.objects, what="the first farm")
        await cluster.restart()  # every watch drops; the store survives
        await create(cluster, "a", "after")
        assert (await cluster.emulator.delete(f"{API}/namespaces/a/farms/before")).status == 200
        await eventually(lambda: ("farms", "a", "after") in rt.objects and ("farms", "a", "before") not in rt.objects,
                    what="what changed while the watch was down")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.kube.close()


async def test_the_mirror_sees_only_the_namespace_run_watches(cluster):
    rt = make_runtime("a")
    task = asyncio.create_task(follow_farms(rt))
    try:
        await create(cluster, "b", "elsewhere")
        await create(cluster, "a", "mine")
        await eventually(lambda: ("farms", "a", "mine") in rt.objects, what="the farm in the watched namespace")
        assert ("farms", "b", "elsewhere") not in rt.objects
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.kube.close()


async def test_reads_of_one_secret_asked_together_share_one_get_and_a_failure_is_never_reused(cluster):
    secrets = "/api/v1/namespaces/a/secrets"
    resp = await cluster.emulator.post(secrets, json={"apiVersion": "v1", "kind": "Secret",
                                                      "metadata": {"name": "payer"}, "data": {"key": "eA=="}})
    assert resp.status == 201, await resp.text()

    def gets() -> int:
        return sum(1 for c in cluster.emulator.calls if c.verb == "get" and c.resource == "secrets")

    async with client.KubeClient() as kube:
        answers = await asyncio.gather(*(kube.get_shared(f"{secrets}/payer", 60) for _ in range(20)))
        assert gets() == 1 and all(a["data"] == {"key": "eA=="} for a in answers)
        await kube.get_shared(f"{secrets}/payer", 60)  # within reuse_s: the same answer
        assert gets() == 1
        await kube.get_shared(f"{secrets}/payer", 0)  # past it: asked again
        assert gets() == 2
        for _ in range(2):  # a 404 serves nobody after it
            with pytest.raises(client.ApiError):
                await kube.get_shared(f"{secrets}/missing", 60)
        assert gets() == 4


async def test_lists_come_in_chunks_that_add_up_to_the_whole_list(cluster, monkeypatch):
    """kube-apiserver's chunked LIST (limit, continue), as the emulator serves it and KubeClient.list_pages reads it;
    the mirror lists that way (LIST_CHUNK), and a bad token or limit is refused, not ignored."""
    for i in range(5):
        await create(cluster, "ab"[i % 2], f"f{i}")
    kube = client.KubeClient()
    try:
        base = f"{API}/farms"
        whole = await kube.request("GET", base)
        pages = [(items, version) async for items, version in kube.list_pages(base, limit=2)]
        assert [len(items) for items, _ in pages] == [2, 2, 1]
        assert {version for _, version in pages} == {whole["metadata"]["resourceVersion"]}
        keys = [(o["metadata"]["namespace"], o["metadata"]["name"]) for items, _ in pages for o in items]
        assert keys == sorted(keys) == sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in whole["items"])
        for bad in ("limit=x", "limit=2&continue=not-a-token"):
            with pytest.raises(client.ApiError) as err:
                await kube.request("GET", f"{base}?{bad}")
            assert err.value.status == 400
    finally:
        await kube.close()
    monkeypatch.setattr(client, "LIST_CHUNK", 2)
    calls0 = len(cluster.emulator.calls)
    rt = make_runtime()
    task = asyncio.create_task(follow_farms(rt))
    try:
        await eventually(lambda: len([k for k in rt.objects if k[0] == "farms"]) == 5, what="five farms listed in chunks of 2")
        listed = [c for c in cluster.emulator.calls[calls0:] if c.verb == "list" and c.resource == "farms"]
        assert len(listed) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.kube.close()


async def test_a_chunked_list_sorts_once_and_a_later_chunk_shows_what_was_written_since(cluster, monkeypatch):
    """The emulator serves the chunks of one listing from one sort (a server reads each chunk from its key on):
    the objects are looked at once per listing, not once per chunk; a write between chunks makes the next chunk
    show the objects after the token's key as they are now."""
    from tfgrid_operator.sandbox import emulator

    for i in range(6):
        await create(cluster, "a", f"f{i}")
    looked = [0]
    real = emulator.in_scope

    def counted(*args):
        looked[0] += 1
        return real(*args)
    monkeypatch.setattr(emulator, "in_scope", counted)
    kube = client.KubeClient()
    try:
        base = f"{API}/farms"
        pages = [[o["metadata"]["name"] for o in items] async for items, _ in kube.list_pages(base, limit=2)]
        assert pages == [["f0", "f1"], ["f2", "f3"], ["f4", "f5"]] and looked[0] == 6
        chunks = kube.list_pages(base, limit=2)
        first, _ = await anext(chunks)
        await create(cluster, "a", "f11")  # after f1 in key order: the next chunk shows it
        rest = [o["metadata"]["name"] for o in first]
        async for items, _ in chunks:
            rest += [o["metadata"]["name"] for o in items]
        assert rest == ["f0", "f1", "f11", "f2", "f3", "f4", "f5"]
    finally:
        await kube.close()


def event_body(uid: str = "u1", rv: str = "1", spec: dict | None = None, status: dict | None = None,
               **meta: str) -> dict:
    return {"metadata": {"name": "f", "namespace": "a", "uid": uid, "resourceVersion": rv, "generation": 1,
                         "managedFields": [{"manager": "kubectl"}], **meta},
            "spec": dict(spec if spec is not None else {"publicIPs": 1}),
            "status": dict(status if status is not None else {"farmId": 7, "kopf": {"progress": {}}})}


def test_an_event_that_moves_only_metadata_updates_the_kept_copy_in_place():
    rt = types.SimpleNamespace(objects={})
    mirror.remember(rt, "farms", event_body())
    kept = rt.objects[("farms", "a", "f")]
    spec, status = kept["spec"], kept["status"]
    # a deletion's MODIFIED event: new resourceVersion and a deletionTimestamp, kopf's bookkeeping moved too
    mirror.remember(rt, "farms", event_body(rv="2", status={"farmId": 7, "kopf": {"dummy": "x"}},
                                            deletionTimestamp="2026-12-04T00:00:00Z"))
    again = rt.objects[("farms", "a", "f")]
    assert again is kept and again["spec"] is spec and again["status"] is status  # nothing copied anew
    assert again["metadata"] == {"name": "f", "namespace": "a", "uid": "u1", "resourceVersion": "2", "generation": 1,
                                 "deletionTimestamp": "2026-12-04T00:00:00Z"}
    mirror.remember(rt, "farms", event_body(rv="3"))  # a key the event no longer has is dropped
    assert "deletionTimestamp" not in rt.objects[("farms", "a", "f")]["metadata"]


@pytest.mark.parametrize("changed", [
    event_body(rv="2", spec={"publicIPs": 2}),  # the spec
    event_body(rv="2", status={"farmId": 8}),  # a status field the loop reads
    event_body(rv="2", status={"farmId": 7, "farmName": "x"}),  # a status field added
    event_body(rv="2", status={}),  # a status field gone
    event_body(uid="u2", rv="2"),  # another object of that name
])
def test_an_event_that_moves_spec_status_or_uid_replaces_the_kept_copy(changed):
    rt = types.SimpleNamespace(objects={})
    mirror.remember(rt, "farms", event_body())
    kept = rt.objects[("farms", "a", "f")]
    mirror.remember(rt, "farms", changed)
    assert rt.objects[("farms", "a", "f")] is not kept
    assert rt.objects[("farms", "a", "f")] == mirror.slim(changed)


def test_the_kept_copy_is_small_and_reads_back_the_same():
    """The spec is kept as its JSON (keys sorted: a spec sent in another order is the same kept copy) and reads back
    equal; the short strings of the status and the namespace are one object across the view (a grid's objects repeat
    them), a long one is left as it is; what is kept compares equal to what was sent."""
    rt = types.SimpleNamespace(objects={})
    spec = {"resources": {"cru": 1, "mru": 2}, "payer": {"secretRef": {"name": "twin", "key": "key"}}}
    long = "x" * (mirror.SHORT + 1)
    status = {"node": "node-1", "conditions": [{"type": "Ready", "status": "True", "message": long}]}
    for name in ("f", "g"):
        mirror.remember(rt, "farms", json.loads(json.dumps(event_body(spec=spec, status=status, name=name))))
    f, g = rt.objects[("farms", "a", "f")], rt.objects[("farms", "a", "g")]
    assert isinstance(f["spec"], bytes) and mirror.spec_of(f) == spec and mirror.spec_of(f) is not mirror.spec_of(f)
    assert f["status"] == g["status"] == status
    assert f["status"]["node"] is g["status"]["node"]
    assert f["status"]["conditions"][0]["status"] is g["status"]["conditions"][0]["status"]
    assert f["status"]["conditions"][0]["message"] is not g["status"]["conditions"][0]["message"]
    assert f["metadata"]["namespace"] is g["metadata"]["namespace"]
    assert all(key[1] is f["metadata"]["namespace"] for key in rt.objects)  # the view's keys hold the same one
    reordered = event_body(spec=dict(reversed(list(spec.items()))), status=status, rv="2", name="f")
    mirror.remember(rt, "farms", reordered)
    assert rt.objects[("farms", "a", "f")] is f  # the same spec, sent in another order: only the metadata moved
