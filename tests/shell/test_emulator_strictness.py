"""The emulator behaves like a real API server where kmock alone is lenient. Plain HTTP here (the kmock fixture):
these tests are about API semantics; transport and authentication over TLS are tests/shell/test_kube_client_config.py."""

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


async def test_schema_defaults_are_set_as_the_api_server_sets_them(api):
    created = await (await api.post(G, json=farm(dedicated=True))).json()
    assert created["spec"]["certified"] is False and created["spec"]["dedicated"] is True
    resp = await api.patch(f"{G}/f", json={"spec": {"certified": None}}, headers={"Content-Type": "application/merge-patch+json"})
    assert (await resp.json())["spec"]["certified"] is False  # removed, and defaulted again


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


# ---------------------------------------------------------------- CEL rules, namespaces, authentication
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
async def grid_api(kmock):
    for plural in ("deployments", "nodes", "proposals"):
        crd = yaml.safe_load((ROOT / "crds" / f"grid.threefold.io_{plural}.yaml").read_text())
        assert (await kmock.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)).status == 201
    return kmock


def deployment(payer):
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"resources": {"cru": 1, "mru": 1}, "payer": payer}}


@pytest.mark.parametrize("payer, says", [
    ({}, "payer needs secretRef"),
    ({"account": "alice", "secretRef": {"name": "s"}}, "exactly one of payer.account and payer.secretRef"),
    ({"grantRef": {"name": "g"}, "secretRef": {"name": "s"}}, "payer.grantRef needs payer.account"),
])
async def test_cel_refuses_both_payers_and_none_at_admission(grid_api, payer, says):
    url = "/apis/grid.threefold.io/v1alpha1/namespaces/a/deployments"
    resp = await grid_api.post(url, json=deployment(payer))
    assert resp.status == 422
    body = await resp.json()
    assert body["reason"] == "Invalid" and body["message"].startswith(
        f'Deployment.grid.threefold.io "d" is invalid: spec.payer: Invalid value: "object": {says}')
    assert grid_api.read("deployments", "a", "d") is None


@pytest.mark.parametrize("payer", [{"secretRef": {"name": "s"}}, {"account": "alice", "grantRef": {"name": "g"}},
                                   {"account": "alice"}])  # the last is admitted, and refused by the operator
async def test_cel_admits_each_payer_proof(grid_api, payer):
    url = "/apis/grid.threefold.io/v1alpha1/namespaces/a/deployments"
    assert (await grid_api.post(url, json=deployment(payer))).status == 201


async def test_cel_transition_rule_makes_a_nodes_farm_immutable(grid_api):
    node = {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Node", "metadata": {"name": "n"},
            "spec": {"farm": "f1", "publicKey": KEY, "resources": {"cru": 1, "mru": 2, "sru": 0}}}
    url = "/apis/grid.threefold.io/v1alpha1/namespaces/a/nodes"
    assert (await grid_api.post(url, json=node)).status == 201  # no oldSelf on create
    moved = await grid_api.patch(f"{url}/n", json={"spec": {"farm": "f2"}}, headers=MERGE)
    assert moved.status == 422 and "a Node's farm cannot change" in (await moved.json())["message"]
    assert (await grid_api.patch(f"{url}/n", json={"spec": {"resources": {"cru": 2}}}, headers=MERGE)).status == 200
    assert grid_api.read("nodes", "a", "n")["spec"]["farm"] == "f1"


async def test_cel_ratchets_an_object_stored_before_the_rule(grid_api):
    url = "/apis/grid.threefold.io/v1alpha1/namespaces/a/deployments"
    grid_api.cel = False
    assert (await grid_api.post(url, json=deployment({}))).status == 201
    grid_api.cel = True
    # an update that leaves the offending part alone is admitted (Kubernetes ≥1.30 ratcheting) …
    assert (await grid_api.patch(f"{url}/d", json={"metadata": {"finalizers": ["x/y"]}}, headers=MERGE)).status == 200
    # … and a new object like it is judged
    assert (await grid_api.post(url, json={**deployment({}), "metadata": {"name": "d2"}})).status == 422


async def test_deleting_a_namespace_deletes_its_objects_and_refuses_new_content(api):
    await api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    url = "/apis/grid.threefold.io/v1alpha1/namespaces/a/farms"
    await api.post(url, json={**farm(), "metadata": {"name": "held", "finalizers": ["x/y"]}})
    await api.post(url, json={**farm(), "metadata": {"name": "free"}})
    await api.post("/apis/grid.threefold.io/v1alpha1/namespaces/b/farms", json=farm())
    assert (await api.delete("/api/v1/namespaces/a")).status == 200
    assert api.read("namespaces", None, "a")["status"]["phase"] == "Terminating"
    assert api.read("farms", "a", "free") is None
    assert api.read("farms", "a", "held")["metadata"]["deletionTimestamp"]
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "held."}, "reason": "R"}
    refused = await api.post("/api/v1/namespaces/a/events", json=event)
    assert refused.status == 403 and "because it is being terminated" in (await refused.json())["message"]
    await api.patch(f"{url}/held", json={"metadata": {"finalizers": []}}, headers=MERGE)
    assert api.read("farms", "a", "held") is None and api.read("namespaces", None, "a") is None  # gone with its last
    assert api.read("farms", "b", "f") is not None  # another namespace is untouched


async def test_authentication_is_required_when_configured(api):
    from tfgrid_operator.sandbox.transport import Authn

    api.authn = Authn(tokens={"good": "alice"})
    assert (await api.get(G)).status == 401
    assert (await api.get(G, headers={"Authorization": "Bearer bad"})).status == 401
    resp = await api.get(G, headers={"Authorization": "Bearer good"})
    assert resp.status == 200 and api.users[-1] == "alice"


async def test_a_place_with_a_control_character_is_refused_by_the_crd_and_by_the_spec_model(kmock):
    """A Node's country and city have no control characters (PostgreSQL refuses a NUL in text: a node with one could
    never be registered, and the ledger's error would read as unavailable). The CRD's pattern is RE2, as
    kube-apiserver reads it; the spec model checks the same pattern."""
    from tfgrid_operator.api.node import Location

    crd = yaml.safe_load((ROOT / "crds" / "grid.threefold.io_nodes.yaml").read_text())
    assert (await kmock.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)).status == 201
    nodes = "/apis/grid.threefold.io/v1alpha1/namespaces/default/nodes"

    def node(name: str, city: str) -> dict:
        return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Node", "metadata": {"name": name},
                "spec": {"farm": "f", "publicKey": KEY, "resources": {"cru": 2, "mru": 4, "sru": 100},
                         "location": {"country": "BE", "city": city}}}
    assert (await kmock.post(nodes, json=node("n1", "Zürich"))).status == 201
    for bad in ("x\x00", "a\tb", "\x7f"):
        resp = await kmock.post(nodes, json=node("n2", bad))
        assert resp.status == 422 and "city" in (await resp.json())["message"]
        with pytest.raises(ValueError):
            Location(country="BE", city=bad)
    assert kmock.read("nodes", "default", "n2") is None
