"""The emulator behaves like a real API server where kmock alone is lenient."""

import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
G = "/apis/grid.threefold.io/v1alpha1/namespaces/default/farms"
KEY = "A" * 43 + "="


@pytest.fixture
async def api(kmock):
    crd = yaml.safe_load((ROOT / "crds" / "grid.threefold.io_farms.yaml").read_text())
    assert (await kmock.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)).status == 201
    return kmock


def farm(**spec):
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Farm", "metadata": {"name": "f"},
            "spec": {"ownerKey": KEY, "payoutAccount": "p", **spec}}


async def test_schema_violation_is_rejected_with_422(api):
    resp = await api.post(G, json=farm(publicIPs=-1))
    assert resp.status == 422
    assert "publicIPs" in (await resp.json())["message"]
    assert api.read("farms", "default", "f") is None


async def test_undeclared_fields_are_pruned_in_spec_and_status(api):
    assert (await api.post(G, json=farm(junk=1))).status == 201
    assert "junk" not in api.read("farms", "default", "f")["spec"]
    resp = await api.patch(f"{G}/f/status", json={"status": {"farmId": 3, "undeclared": True}},
                           headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status == 200
    status = api.read("farms", "default", "f")["status"]
    assert status == {"farmId": 3}


async def test_status_isolation_generation_and_conflicts(api):
    await api.post(G, json={**farm(), "status": {"farmId": 9}})
    obj = api.read("farms", "default", "f")
    assert "status" not in obj and obj["metadata"]["generation"] == 1
    await api.patch(f"{G}/f", json={"spec": {"publicIPs": 3}}, headers={"Content-Type": "application/merge-patch+json"})
    assert api.read("farms", "default", "f")["metadata"]["generation"] == 2
    await api.patch(f"{G}/f/status", json={"status": {"farmId": 1}}, headers={"Content-Type": "application/merge-patch+json"})
    assert api.read("farms", "default", "f")["metadata"]["generation"] == 2
    stale = await api.patch(f"{G}/f", json={"metadata": {"resourceVersion": "1"}, "spec": {"publicIPs": 4}},
                            headers={"Content-Type": "application/merge-patch+json"})
    assert stale.status == 409
    failing_test = await api.patch(f"{G}/f", json=[{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}],
                                   headers={"Content-Type": "application/json-patch+json"})
    assert failing_test.status == 422


async def test_finalizer_holds_deletion_and_blocks_new_finalizers(api):
    await api.post(G, json={**farm(), "metadata": {"name": "f", "finalizers": ["x/y"]}})
    await api.delete(f"{G}/f")
    assert api.read("farms", "default", "f")["metadata"]["deletionTimestamp"]
    more = await api.patch(f"{G}/f", json={"metadata": {"finalizers": ["x/y", "a/b"]}},
                           headers={"Content-Type": "application/merge-patch+json"})
    assert more.status == 422
    await api.patch(f"{G}/f", json={"metadata": {"finalizers": []}}, headers={"Content-Type": "application/merge-patch+json"})
    assert api.read("farms", "default", "f") is None


async def test_generate_name_and_selectors(api):
    for i in range(3):
        body = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "e.", "labels": {"i": str(i)}},
                "reason": "R"}
        assert (await api.post("/api/v1/namespaces/default/events", json=body)).status == 201
    listed = await (await api.get("/api/v1/namespaces/default/events?labelSelector=i%20in%20(0,2)")).json()
    assert len(listed["items"]) == 2
    assert ("create", "", "events", "") in [c[:4] for c in api.calls]
