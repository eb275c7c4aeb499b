"""Deployment end to end: placement, Unschedulable with the failing constraint, exact billing, final bill."""

from __future__ import annotations

import base64

import pytest

from e2e.conftest import START, condition
from e2e.objects import paid_by, twin_account
from polling import eventually
from tfgrid_operator.domain import identity, money

pytestmark = pytest.mark.e2e

NS = "/apis/grid.threefold.io/v1alpha1/namespaces/default"
OWNER = identity.KeyPair.generate()


def deployment(name, **placement):
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"resources": {"cru": 2, "mru": 4, "sru": 50}, "publicIPs": 1, "payer": paid_by("alice"),
                     "placement": placement}}


async def grid(apiserver):
    await apiserver.post(f"{NS}/farms", json={"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Farm",
                                              "metadata": {"name": "farm1"},
                                              "spec": {"ownerKey": OWNER.public_key, "payoutAccount": "farmer1",
                                                       "publicIPs": 2}})
    for name in ("n1", "n2"):
        await apiserver.post(f"{NS}/nodes", json={
            "apiVersion": "grid.threefold.io/v1alpha1", "kind": "Node", "metadata": {"name": name},
            "spec": {"farm": "farm1", "publicKey": identity.KeyPair.generate().public_key,
                     "resources": {"cru": 8, "mru": 32, "sru": 1000}, "location": {"country": "BE"}}})
    await eventually(lambda: all(condition(apiserver.read("grid.threefold.io/v1alpha1/nodes", "default", n))["status"] == "True"
                                 for n in ("n1", "n2")), what="nodes Ready")


async def test_place_bill_exactly_and_final_bill_on_delete(apiserver, operator, ledger, grid_clock):
    await grid(apiserver)
    await twin_account(ledger, apiserver, "alice")
    await ledger.fund(name="alice", amount=2000 * money.UNITS_PER_TFT, now=grid_clock.now())
    await apiserver.post(f"{NS}/deployments", json=deployment("web"))
    d = await eventually(lambda: condition(dep(apiserver, "web"))["status"] == "True"
                         and dep(apiserver, "web"), what="deployment Ready")
    assert d["status"]["node"] in ("n1", "n2") and d["status"]["contractState"] == "Created"
    grid_clock.set(START + 3600)  # one billing period (1 h, §2.5) has ended
    d = await eventually(lambda: dep(apiserver, "web")["status"].get("billedTotal")
                         and dep(apiserver, "web"), what="billed")
    # §2.6 by hand at 20 mUSD/TFT: 152,500 units USD = 0.7625 TFT; 2000 TFT covers 3.64 months → Bronze ×0.7
    assert d["status"]["billedTotal"] == 5_337_500
    assert d["status"]["discount"] == "Bronze"
    grid_clock.set(START + 3600 + 1800)
    await apiserver.delete(f"{NS}/deployments/web")
    await eventually(lambda: dep(apiserver, "web") is None, what="deployment gone")
    closed = await ledger.observe_contract(key="default/web")
    # the final bill covers the used half hour: 0.38125 TFT gross; balance now covers far more → Bronze ×0.7
    assert closed.state == "Deleted" and closed.billed_total == 5_337_500 + 2_668_750


async def test_unschedulable_names_the_constraint_and_recovers(apiserver, operator, ledger):
    await grid(apiserver)
    await twin_account(ledger, apiserver, "alice")
    await apiserver.post(f"{NS}/deployments", json=deployment("far", country="EG"))
    d = await eventually(lambda: condition(dep(apiserver, "far"))["reason"] == "Unschedulable"
                         and dep(apiserver, "far"), what="Unschedulable")
    assert "Country" in condition(d)["message"]
    await apiserver.patch(f"{NS}/deployments/far", json={"spec": {"placement": {"country": "BE"}}},
                          headers={"Content-Type": "application/merge-patch+json"})
    await eventually(lambda: condition(dep(apiserver, "far"))["status"] == "True",
                     what="placed after the constraint changed")


def dep(apiserver, name):
    return apiserver.read("grid.threefold.io/v1alpha1/deployments", "default", name)


async def test_invalid_spec_gets_condition_and_event_and_touches_no_ledger(apiserver, operator, ledger):
    bad = deployment("nopayer")
    bad["spec"]["payer"] = {}  # the operator needs a secretRef (a twin key or a grant)
    assert (await apiserver.post(f"{NS}/deployments", json=bad)).status == 422  # the CRD's CEL rule says so too
    apiserver.cel = False  # a cluster whose CRDs predate the rule (or a hostile writer): the operator checks itself
    assert (await apiserver.post(f"{NS}/deployments", json=bad)).status == 201
    apiserver.cel = True
    d = await eventually(lambda: condition(dep(apiserver, "nopayer"))["reason"] == "InvalidSpec" and dep(apiserver, "nopayer"),
                         what="InvalidSpec")
    assert "payer needs secretRef" in condition(d)["message"]
    assert condition(d, "Synced")["status"] == "False"
    await eventually(lambda: any(e.get("reason") == "InvalidSpec" for e in apiserver.read_all("events")), what="Event")
    assert await ledger.observe_contract(key="default/nopayer") is None


async def test_recreated_deployment_gets_a_new_contract(apiserver, operator, ledger):
    await grid(apiserver)
    await twin_account(ledger, apiserver, "alice")
    await apiserver.post(f"{NS}/deployments", json=deployment("again"))
    first = await eventually(lambda: condition(dep(apiserver, "again"))["status"] == "True" and dep(apiserver, "again"))
    await apiserver.delete(f"{NS}/deployments/again")
    await eventually(lambda: dep(apiserver, "again") is None, what="deleted")
    await apiserver.post(f"{NS}/deployments", json=deployment("again"))
    second = await eventually(lambda: condition(dep(apiserver, "again"))["status"] == "True" and dep(apiserver, "again"),
                              what="the new object placed")
    assert second["status"]["contractId"] != first["status"]["contractId"]


async def test_payer_from_a_secret_held_twin_key_never_leaks(apiserver, operator, ledger, caplog):
    await grid(apiserver)
    twin = identity.KeyPair.generate()
    await ledger.ensure_account(name="bob", public_key=twin.public_key)
    seed = twin.to_text()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bob-twin"},
              "data": {"twinKey": base64.b64encode(seed.encode()).decode(), "junk": base64.b64encode(b"nope").decode()}}
    body = deployment("paid")
    body["spec"]["payer"] = {"secretRef": {"name": "bob-twin"}}
    await apiserver.post(f"{NS}/deployments", json=body)
    # the Secret does not exist yet: PayerNotFound, then placed once it appears
    d = await eventually(lambda: condition(dep(apiserver, "paid"))["reason"] == "PayerNotFound" and dep(apiserver, "paid"))
    assert "secret 'bob-twin' does not exist" in condition(d)["message"]
    assert (await apiserver.post("/api/v1/namespaces/default/secrets", json=secret)).status == 201
    await eventually(lambda: condition(dep(apiserver, "paid"))["status"] == "True", what="placed")
    assert (await ledger.observe_contract(key="default/paid")).payer == "bob"
    # another twin's key in the Secret it names: the contract re-binds to that twin from then on; back again, to bob
    carol = identity.KeyPair.generate()
    await ledger.ensure_account(name="carol", public_key=carol.public_key)
    assert (await apiserver.post("/api/v1/namespaces/default/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "carol-twin"},
        "data": {"twinKey": base64.b64encode(carol.to_text().encode()).decode()}})).status == 201
    for secret_name, payer in (("carol-twin", "carol"), ("bob-twin", "bob")):
        await apiserver.patch(f"{NS}/deployments/paid", json={"spec": {"payer": {"secretRef": {"name": secret_name}}}},
                              headers={"Content-Type": "application/merge-patch+json"})
        await eventually(lambda p=payer: _payer_is(ledger, "default/paid", p), what=f"re-bound to {payer}")
    # a Secret key that holds no twin key proves nothing: a clear PayerNotAuthorized, and never echoes the value
    bad = deployment("badkey")
    bad["spec"]["payer"] = {"secretRef": {"name": "bob-twin", "key": "junk"}}
    await apiserver.post(f"{NS}/deployments", json=bad)
    d = await eventually(lambda: condition(dep(apiserver, "badkey"))["reason"] == "PayerNotAuthorized"
                         and dep(apiserver, "badkey"))
    assert "is not a base64 ed25519 twin key" in condition(d)["message"]
    everything = repr([dep(apiserver, "paid"), dep(apiserver, "badkey"), apiserver.read_all("events")]) + caplog.text
    assert seed not in everything and "nope" not in everything


async def test_steady_state_writes_nothing(apiserver, operator, ledger, grid_clock):
    """Once every status is current, ticks of the batched loop and the watch send zero PATCHes (no churn for
    Argo CD, no load on the API server)."""

    await grid(apiserver)
    await twin_account(ledger, apiserver, "alice")
    await ledger.fund(name="alice", amount=100 * money.UNITS_PER_TFT, now=grid_clock.now())
    await apiserver.post(f"{NS}/deployments", json=deployment("calm"))
    await eventually(lambda: condition(dep(apiserver, "calm"))["status"] == "True")
    grid_clock.set(START + 3600)
    await eventually(lambda: dep(apiserver, "calm")["status"].get("billedTotal"), what="billed")
    await operator.ticks(10)  # let every status settle
    before = len(apiserver.calls)
    await operator.ticks(15)
    writes = [c for c in apiserver.calls[before:] if c.verb in ("patch", "update", "create")]
    assert writes == [], writes


async def _payer_is(ledger, key: str, payer: str) -> bool:
    c = await ledger.observe_contract(key=key)
    return c is not None and c.payer == payer
