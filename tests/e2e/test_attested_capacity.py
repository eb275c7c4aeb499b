"""Issue 13, invariant 3 end to end: attested capacity, council certification, status, in two namespaces."""

from __future__ import annotations

import pytest

from e2e.conftest import COUNCIL, START, condition, eventually
from tfgrid_operator import agent, ballot
from tfgrid_operator.domain import identity
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient

pytestmark = pytest.mark.e2e

API = "/apis/grid.threefold.io/v1alpha1/namespaces"
OWNERS = {ns: identity.KeyPair.generate() for ns in ("alpha", "beta")}
KEYS = {name: identity.KeyPair.generate() for name in ("a1", "b1")}
SPEC = {"cru": 8, "mru": 32, "sru": 1000, "hru": 4000}


def farm(ns):
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Farm", "metadata": {"name": f"farm-{ns}"},
            "spec": {"ownerKey": OWNERS[ns].public_key, "payoutAccount": f"payout-{ns}"}}


def node(name, ns, resources=SPEC, certified=False):
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Node", "metadata": {"name": name},
            "spec": {"farm": f"farm-{ns}", "publicKey": KEYS[name].public_key, "resources": dict(resources),
                     "certified": certified}}


def obj(apiserver, ns, plural, name):
    return apiserver.read(f"grid.threefold.io/v1alpha1/{plural}", ns, name)


async def grid(apiserver):
    for ns, name in (("alpha", "a1"), ("beta", "b1")):
        await apiserver.post(f"{API}/{ns}/farms", json=farm(ns))
        await apiserver.post(f"{API}/{ns}/nodes", json=node(name, ns, certified=True))
    for ns, name in (("alpha", "a1"), ("beta", "b1")):
        await eventually(lambda ns=ns, name=name: condition(obj(apiserver, ns, "nodes", name))["status"] == "True",
                         what=f"{name} Ready")


async def test_council_certification_and_attested_status(apiserver, operator, ledger, grid_clock):
    await grid(apiserver)
    async with KubeClient() as kube:
        n = await eventually(lambda: condition(obj(apiserver, "alpha", "nodes", "a1"), "Attested").get("reason")
                             == "NotAttested" and obj(apiserver, "alpha", "nodes", "a1"), what="NotAttested")
        await agent.send_report(kube, KEYS["a1"], namespace="alpha", node="a1", ts=START, uptime=100,
                                capacity=Resources(**SPEC))
        await eventually(lambda: condition(obj(apiserver, "alpha", "nodes", "a1"), "Attested").get("reason")
                         == "NotCertified", what="NotCertified")
        node_id = n["status"]["nodeId"]
        # a farmer's own key is not the council's: refused, with an Event
        forged = ballot.signed_certification(OWNERS["alpha"], node="a1", node_id=node_id, certified=True, ts=START)
        await ballot.certify(kube, namespace="alpha", node="a1", entry=forged)
        await eventually(lambda: any(e.get("reason") == "CertificationRejected" for e in apiserver.read_all("events")),
                         what="CertificationRejected")
        entry = ballot.signed_certification(COUNCIL[0], node="a1", node_id=node_id, certified=True, ts=START + 1)
        await ballot.certify(kube, namespace="alpha", node="a1", entry=entry)
        a1 = await eventually(lambda: condition(obj(apiserver, "alpha", "nodes", "a1"), "Attested").get("reason")
                              == "CapacityAttested" and obj(apiserver, "alpha", "nodes", "a1"), what="certified")
        assert a1["status"]["attested"] == {**SPEC, "certified": True, "since": a1["status"]["attested"]["since"]}
        assert (await ledger.observe_node(name="a1")).certified
        # the same council signature copied onto the other namespace's node does not certify it
        await agent.send_report(kube, KEYS["b1"], namespace="beta", node="b1", ts=START, uptime=100,
                                capacity=Resources(cru=2, mru=4, sru=100))
        await ballot.certify(kube, namespace="beta", node="b1", entry=entry)
        b1 = await eventually(lambda: condition(obj(apiserver, "beta", "nodes", "b1"), "Attested").get("reason")
                              == "CapacityMismatch" and obj(apiserver, "beta", "nodes", "b1"), what="mismatch")
        assert "cru 8 > attested 2" in condition(b1, "Attested")["message"]
        assert not (await ledger.observe_node(name="b1")).certified
