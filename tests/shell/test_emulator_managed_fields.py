"""The emulator returns objects as kube-apiserver does: ``metadata.managedFields`` kept by the server's rules for
writes that are not server-side applies, and the rest of its server-set metadata, in every reply, list and watch.
Plain HTTP (the kmock fixture), as test_emulator_strictness.py: these are API semantics."""

import asyncio
import json
import pathlib

import pytest
import yaml

from tfgrid_operator.sandbox import managedfields

ROOT = pathlib.Path(__file__).resolve().parents[2]
API = "grid.threefold.io/v1alpha1"
FARMS = f"/apis/{API}/namespaces/a/farms"
KEY = "A" * 43 + "="
MERGE = {"Content-Type": "application/merge-patch+json"}
KUBECTL = {"User-Agent": "kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b"}
OPERATOR = {"User-Agent": "tfgrid-operator/0.9 (python)"}
KOPF = {"User-Agent": "kopf/1.37.2"}


@pytest.fixture
async def api(kmock):
    for plural in ("farms", "nodes"):
        crd = yaml.safe_load((ROOT / "crds" / f"grid.threefold.io_{plural}.yaml").read_text())
        assert (await kmock.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)).status == 201
    return kmock


def farm(**spec):
    return {"apiVersion": API, "kind": "Farm", "metadata": {"name": "f", "labels": {"tier": "gold"}},
            "spec": {"ownerKey": KEY, "payoutAccount": "p", **spec}}


def entries(obj):
    """managedFields by (manager, subresource), each its fieldsV1."""
    return {(e["manager"], e.get("subresource", "")): e["fieldsV1"] for e in obj["metadata"].get("managedFields", [])}


CONDITION = {"type": "Ready", "status": "True", "reason": "Available", "message": "", "observedGeneration": 1,
             "lastTransitionTime": "2026-01-01T00:00:00Z"}


async def test_a_create_and_a_status_patch_by_another_client_make_two_entries(api):
    created = await (await api.post(FARMS, json=farm(publicIPs=2), headers=KUBECTL)).json()
    [entry] = created["metadata"]["managedFields"]
    assert entry["manager"] == "kubectl" and entry["operation"] == "Update" and entry["apiVersion"] == API
    assert entry["fieldsType"] == "FieldsV1" and "subresource" not in entry
    assert len(entry["time"]) == 20 and entry["time"].endswith("Z")  # RFC 3339, seconds
    # the spec as sent and the schema's defaults (the server defaults what it is sent, so the writer owns them); no
    # f:name, f:uid … (server-set metadata is owned by no one)
    assert created["spec"]["certified"] is False and created["spec"]["dedicated"] is False
    spec = {".": {}, "f:certified": {}, "f:dedicated": {}, "f:ownerKey": {}, "f:payoutAccount": {}, "f:publicIPs": {}}
    assert entry["fieldsV1"] == {"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}, "f:spec": spec}

    resp = await api.patch(f"{FARMS}/f/status", json={"status": {"farmId": 3, "conditions": [CONDITION]}},
                           headers={**MERGE, **OPERATOR})
    assert resp.status == 200
    obj = await resp.json()
    assert entries(obj) == {
        ("kubectl", ""): {"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}, "f:spec": spec},
        ("tfgrid-operator", "status"): {"f:status": {".": {}, "f:farmId": {}, "f:conditions": {
            ".": {}, 'k:{"type":"Ready"}': {".": {}, "f:lastTransitionTime": {}, "f:message": {},
                                            "f:observedGeneration": {}, "f:reason": {}, "f:status": {},
                                            "f:type": {}}}}}}
    status_entry = obj["metadata"]["managedFields"][1]
    assert status_entry["subresource"] == "status" and list(status_entry)[-1] == "subresource"
    assert api.read("farms", "a", "f") == obj  # what is stored is what is served


async def test_ownership_moves_and_an_emptied_entry_goes(api):
    await api.post(FARMS, json=farm(publicIPs=2), headers=KUBECTL)
    # kopf adds its finalizer and an annotation: the fields are its own
    await api.patch(f"{FARMS}/f", json={"metadata": {"finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
                                                     "annotations": {"a": "1"}}}, headers={**MERGE, **KOPF})
    # the operator changes a field kubectl wrote, removes kubectl's label and writes the value kopf's annotation has
    resp = await api.patch(f"{FARMS}/f", json={"spec": {"publicIPs": 5}, "metadata": {"labels": {"tier": None},
                                                                                       "annotations": {"a": "1"}}},
                           headers={**MERGE, **OPERATOR})
    obj = await resp.json()
    got = entries(obj)
    assert got[("kubectl", "")] == {"f:spec": {".": {}, "f:certified": {}, "f:dedicated": {}, "f:ownerKey": {},
                                               "f:payoutAccount": {}}}  # lost both
    assert got[("tfgrid-operator", "")] == {"f:spec": {"f:publicIPs": {}}}  # an unchanged value moves nothing
    assert got[("kopf", "")] == {"f:metadata": {"f:annotations": {".": {}, "f:a": {}},
                                                "f:finalizers": {".": {}, 'v:"kopf.zalando.org/KopfFinalizerMarker"': {}}}}
    # kopf's only fields removed by another manager: its entry goes; a removal gives the remover nothing
    resp = await api.patch(f"{FARMS}/f", json={"metadata": {"finalizers": [], "annotations": None}},
                           headers={**MERGE, "User-Agent": "cleaner/1"})
    got = entries(await resp.json())
    assert ("kopf", "") not in got and ("cleaner", "") not in got
    assert set(got) == {("kubectl", ""), ("tfgrid-operator", "")}


async def test_a_write_that_changes_nothing_changes_no_entry(api):
    first = await (await api.post(FARMS, json=farm(), headers=KUBECTL)).json()
    again = await api.patch(f"{FARMS}/f", json={"spec": {"payoutAccount": "p"}}, headers={**MERGE, **OPERATOR})
    assert (await again.json()) == first  # the same resourceVersion and managedFields: no one gained a field
    assert api.noop_writes == [("farms", "", "f")]


async def test_the_manager_is_the_field_manager_or_the_user_agents_prefix(api):
    await api.post(f"{FARMS}?fieldManager=kubectl-create", json=farm(), headers=KUBECTL)
    await api.patch(f"{FARMS}/f", json={"spec": {"publicIPs": 1}}, headers={**MERGE, "User-Agent": ""})
    assert set(entries(api.read("farms", "a", "f"))) == {("kubectl-create", ""), ("unknown", "")}
    assert managedfields.manager_name(None, "kopf/1.37.2 (aiohttp)") == "kopf"
    assert managedfields.manager_name(None, "Python\x07 bot/3") == "Python bot"
    assert managedfields.manager_name(None, "x" * 200) == "x" * 128
    too_long = await api.patch(f"{FARMS}/f?fieldManager={'m' * 129}", json={"spec": {"publicIPs": 2}}, headers=MERGE)
    assert too_long.status == 422


async def test_clients_writing_managed_fields_follow_the_servers_rules(api):
    await api.post(FARMS, json=farm(), headers=KUBECTL)
    await api.patch(f"{FARMS}/f/status", json={"status": {"farmId": 1}}, headers={**MERGE, **OPERATOR})
    # absent or null: kept (a client that does not know the field cannot drop it)
    await api.patch(f"{FARMS}/f", json={"metadata": {"managedFields": None}, "spec": {"publicIPs": 1}},
                    headers={**MERGE, **KOPF})
    assert set(entries(api.read("farms", "a", "f"))) == {("kubectl", ""), ("tfgrid-operator", "status"), ("kopf", "")}
    # on the status subresource a request's managedFields are ignored
    await api.patch(f"{FARMS}/f/status", json={"metadata": {"managedFields": []}, "status": {"farmId": 2}},
                    headers={**MERGE, **OPERATOR})
    assert len(entries(api.read("farms", "a", "f"))) == 3
    # a valid list replaces them
    mine = [{"manager": "me", "operation": "Update", "apiVersion": API, "time": "2026-01-01T00:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:payoutAccount": {}}}}]
    replaced = await (await api.patch(f"{FARMS}/f", json={"metadata": {"managedFields": mine}},
                                      headers={**MERGE, **KOPF})).json()
    assert replaced["metadata"]["managedFields"] == mine
    # a malformed one is ignored
    bad = [{"manager": "x", "operation": "Delete", "fieldsType": "FieldsV1", "fieldsV1": {}}]
    kept = await (await api.patch(f"{FARMS}/f", json={"metadata": {"managedFields": bad}, "spec": {"publicIPs": 4}},
                                  headers={**MERGE, **KOPF})).json()
    assert set(entries(kept)) == {("me", ""), ("kopf", "")}
    # an empty list resets them: the writer then owns what this write changed, and only that
    reset = await (await api.patch(f"{FARMS}/f", json={"metadata": {"managedFields": []}, "spec": {"publicIPs": 9}},
                                   headers={**MERGE, **KOPF})).json()
    assert entries(reset) == {("kopf", ""): {"f:spec": {"f:publicIPs": {}}}}
    cleared = await (await api.patch(f"{FARMS}/f", json={"metadata": {"managedFields": [{}]}},
                                     headers={**MERGE, **KOPF})).json()
    assert "managedFields" not in cleared["metadata"]


async def test_at_most_ten_update_entries(api):
    await api.post(FARMS, json=farm(), headers=KUBECTL)
    for i in range(11):
        await api.patch(f"{FARMS}/f", json={"metadata": {"labels": {f"l{i}": "x"}}},
                        headers={**MERGE, "User-Agent": f"writer-{i:02}/1"})
    got = entries(api.read("farms", "a", "f"))
    assert len(got) == 10 and ("ancient-changes", "") in got
    ancient = got[("ancient-changes", "")]["f:metadata"]["f:labels"]
    assert "f:tier" in ancient  # kubectl's, the oldest, merged there


async def test_server_side_apply_owns_what_it_applies_and_conflicts(api):
    apply = {"Content-Type": "application/apply-patch+yaml"}
    body = {"apiVersion": API, "kind": "Farm", "metadata": {"name": "f"},
            "spec": {"ownerKey": KEY, "payoutAccount": "p"}}
    assert (await api.patch(f"{FARMS}/f", json=body, headers=apply)).status == 400  # no fieldManager
    created = await api.patch(f"{FARMS}/f?fieldManager=ci", json=body, headers=apply)
    assert created.status == 201
    [entry] = (await created.json())["metadata"]["managedFields"]
    assert entry["operation"] == "Apply" and entry["manager"] == "ci"
    await api.patch(f"{FARMS}/f", json={"spec": {"publicIPs": 1}}, headers={**MERGE, **OPERATOR})
    clash = {**body, "spec": {**body["spec"], "publicIPs": 2}}
    refused = await api.patch(f"{FARMS}/f?fieldManager=ci", json=clash, headers=apply)
    assert refused.status == 409 and 'conflict with "tfgrid-operator"' in (await refused.json())["message"]
    forced = await (await api.patch(f"{FARMS}/f?fieldManager=ci&force=true", json=clash, headers=apply)).json()
    assert ("tfgrid-operator", "") not in entries(forced)
    assert entries(forced)[("ci", "")]["f:spec"]["f:publicIPs"] == {}
    assert [e["operation"] for e in forced["metadata"]["managedFields"]] == ["Apply"]


async def test_lists_and_watches_deliver_the_same_full_objects(api):
    await api.post(FARMS, json=farm(), headers=KUBECTL)
    rv = api.read("farms", "a", "f")["metadata"]["resourceVersion"]
    watch = await api.get(f"{FARMS}?watch=true&resourceVersion={rv}")
    await api.patch(f"{FARMS}/f/status", json={"status": {"farmId": 1}}, headers={**MERGE, **OPERATOR})
    await api.patch(f"{FARMS}/f", json={"metadata": {"finalizers": ["x/y"]}}, headers={**MERGE, **KOPF})
    assert (await api.delete(f"{FARMS}/f")).status == 200
    await api.patch(f"{FARMS}/f", json={"metadata": {"finalizers": None}}, headers={**MERGE, **KOPF})
    events = [json.loads(await asyncio.wait_for(watch.content.readline(), 5)) for _ in range(4)]
    watch.close()
    api.drop_watches()
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    status_write, finalizer, deleting, deleted = (e["object"] for e in events)
    assert set(entries(status_write)) == {("kubectl", ""), ("tfgrid-operator", "status")}
    assert set(entries(finalizer)) == {("kubectl", ""), ("tfgrid-operator", "status"), ("kopf", "")}
    # a delete held by a finalizer: the server sets these, bumps the generation and owns them for no one
    meta = deleting["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 0 and meta["generation"] == 2
    assert meta["managedFields"] == finalizer["metadata"]["managedFields"]
    assert int(deleted["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert "managedFields" in deleted["metadata"]

    await api.post(FARMS, json=farm(), headers=KUBECTL)
    listed = await (await api.get(FARMS)).json()
    assert listed["items"] == [api.read("farms", "a", "f")] and listed["items"][0]["metadata"]["managedFields"]


async def test_deleted_events_carry_the_deletions_resource_version(api):
    await api.post(FARMS, json=farm(), headers=KUBECTL)
    before = api.read("farms", "a", "f")["metadata"]["resourceVersion"]
    watch = await api.get(f"{FARMS}?watch=true&resourceVersion={before}")
    assert (await api.delete(f"{FARMS}/f")).status == 200
    event = json.loads(await asyncio.wait_for(watch.content.readline(), 5))
    watch.close()
    api.drop_watches()
    assert event["type"] == "DELETED" and int(event["object"]["metadata"]["resourceVersion"]) == int(before) + 1


async def test_server_set_metadata_of_built_in_kinds(api):
    ns = await (await api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": "b"}}, headers=KUBECTL)).json()
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "b"}
    assert ns["spec"] == {"finalizers": ["kubernetes"]} and ns["status"] == {"phase": "Active"}
    assert "generation" not in ns["metadata"] and ns["metadata"]["uid"] and ns["metadata"]["creationTimestamp"]
    assert entries(ns) == {("kubectl", ""): {"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/metadata.name": {}}}}}
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "reason": "R",
             "involvedObject": {"kind": "Farm", "name": "f"}}
    ev = await (await api.post("/api/v1/namespaces/b/events", json=event, headers=OPERATOR)).json()
    assert "generation" not in ev["metadata"]
    assert entries(ev) == {("tfgrid-operator", ""): {"f:involvedObject": {".": {}, "f:kind": {}, "f:name": {}},
                                                     "f:reason": {}}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"key": "eA=="}}
    sec = await (await api.post("/api/v1/namespaces/b/secrets", json=secret, headers=KUBECTL)).json()
    assert sec["type"] == "Opaque" and entries(sec) == {("kubectl", ""): {"f:data": {".": {}, "f:key": {}}, "f:type": {}}}
