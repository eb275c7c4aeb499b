"""Issue 13, invariant 3 end to end: attested capacity, council certification, status, in two namespaces."""

from __future__ import annotations

import asyncio

import pytest

from e2e.conftest import COUNCIL, PERIOD, START, condition
from e2e.objects import held_a_period
from polling import eventually
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
    for ns, name in (("alpha", "a1"), ("beta", "b1")):  # the API server requires the namespace, as a cluster does
        await apiserver.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
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
        forged = ballot.signed_certification(OWNERS["alpha"], node="a1", node_id=node_id, certified=True, ts=START,
                                              resources=Resources(**SPEC))
        await ballot.certify(kube, namespace="alpha", node="a1", entry=forged)
        await eventually(lambda: any(e.get("reason") == "CertificationRejected" for e in apiserver.read_all("events")),
                         what="CertificationRejected")
        entry = ballot.signed_certification(COUNCIL[0], node="a1", node_id=node_id, certified=True, ts=START + 1,
                                            resources=Resources(**SPEC))
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


async def _conserved(ledger, funded=0):
    """Funding + minted = all balances, to the unit."""
    minted = sum(s.minted_total for s in (await ledger.node_summaries(now=0)).values())
    assert sum(a.balance for a in await ledger.list_accounts()) == funded + minted


async def test_the_lease_channel_never_credits_more_than_wall_time_and_a_spec_raise_mints_nothing(
        apiserver, operator, ledger, grid_clock):
    """Two tenants' nodes; beta's farmer floods its Lease with fast reports alternating with "reboots", and raises
    its spec a minute before the mint. Alpha is honest. Credit stays within wall time; only attested capacity
    mints; money is conserved."""
    await grid(apiserver)
    async with KubeClient() as kube:
        for name, ns in (("a1", "alpha"), ("b1", "beta")):
            await agent.send_report(kube, KEYS[name], namespace=ns, node=name, ts=START, uptime=100,
                                    capacity=Resources(cru=2, mru=4, sru=100))
        await eventually(lambda: _both_attested(ledger), what="attested")
        ts, up = START, 100
        for i in range(40):  # 80 s of wall time
            ts += 2
            up = 1 if i % 2 else up + 62
            grid_clock.set(ts)
            await agent.send_report(kube, KEYS["b1"], namespace="beta", node="b1", ts=ts, uptime=up)
            await asyncio.sleep(0.02)
        await eventually(lambda: _last(ledger, "b1", ts), what="the flood handled")
        assert (await ledger.node_summaries(now=ts))["b1"].uptime_s <= ts - START
        # the spec raised (a tenant or the farmer edits it): status shows the mismatch, minting ignores it
        await apiserver.patch(f"{API}/beta/nodes/b1", headers={"Content-Type": "application/merge-patch+json"},
                              json={"spec": {"resources": {"cru": 1024, "mru": 1 << 20, "sru": 1 << 24}}})
        await eventually(lambda: condition(obj(apiserver, "beta", "nodes", "b1"), "Attested").get("reason")
                         == "CapacityMismatch", what="mismatch shown")
        for step in range(1, PERIOD // 2400 + 1):
            ts = START + step * 2400
            grid_clock.set(ts)
            for name, ns in (("a1", "alpha"), ("b1", "beta")):
                await agent.send_report(kube, KEYS[name], namespace=ns, node=name, ts=ts, uptime=ts - START + 100,
                                        capacity=Resources(cru=2, mru=4, sru=100))
            await eventually(lambda ts=ts: _last(ledger, "a1", ts), what=f"report {step}")
    grid_clock.set(START + PERIOD + 2460)
    a = await eventually(lambda: _minted(ledger, "a1"), what="a1 minted")
    b = await eventually(lambda: _minted(ledger, "b1"), what="b1 minted")
    assert a.inputs["cu"] == b.inputs["cu"] == "0.75"  # min(4, 3/4, 2): the attested 2 cores, never the spec
    assert b.inputs["uptimeSeconds"] <= PERIOD
    await _conserved(ledger)


async def _both_attested(ledger):
    return {"a1", "b1"} <= set(await ledger.attestations())


async def _last(ledger, name, ts):
    s = (await ledger.node_summaries(now=ts)).get(name)
    return s is not None and s.last_report_ts == ts


async def _minted(ledger, name):
    receipts = await ledger.mint_receipts(node=name)
    return receipts[0] if receipts and receipts[0].period == START // PERIOD else None


async def test_a_deleted_nodes_lease_is_ignored_quietly_after_a_restart(apiserver, operator, ledger):
    await grid(apiserver)
    async with KubeClient() as kube:
        await agent.send_report(kube, KEYS["a1"], namespace="alpha", node="a1", ts=START, uptime=100,
                                capacity=Resources(**SPEC))
        await eventually(lambda: _one_attested(ledger), what="attested")
    await apiserver.delete(f"{API}/alpha/nodes/a1")
    await eventually(lambda: obj(apiserver, "alpha", "nodes", "a1") is None, what="node gone")
    before = len(apiserver.read_all("events"))
    await operator.stop()
    operator.start()  # kopf lists the Lease again: its node is gone, so nothing is said about it
    await eventually(lambda: operator.rt.metrics.reconciled("lease") >= 1, what="lease seen again")
    assert not [e for e in apiserver.read_all("events")[before:] if e.get("reason") == "UptimeRejected"]


async def _one_attested(ledger):
    return "a1" in await ledger.attestations()


def _proposal(ns, name):
    spec = ballot.sign_proposal(COUNCIL[0], {"title": "cheaper", "action": {"type": "SetPricingPolicy",
                                                                            "pricing": {"cu": 1}},
                                             "durationHours": 24, "threshold": 5}, f"{ns}/{name}")
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Proposal", "metadata": {"name": name}, "spec": spec}


async def test_a_vote_counts_only_on_the_proposal_of_its_namespace(apiserver, operator, ledger):
    await grid(apiserver)
    async with KubeClient() as kube:
        await agent.send_report(kube, KEYS["a1"], namespace="alpha", node="a1", ts=START, uptime=100,
                                capacity=Resources(**SPEC))
        await eventually(lambda: _one_attested(ledger), what="attested")
    await held_a_period(ledger, {"a1": KEYS["a1"]})  # a farm weighs what its nodes held over a minted period (§5)
    for ns in ("alpha", "beta"):
        await apiserver.post(f"{API}/{ns}/proposals", json=_proposal(ns, "p"))
    bodies = {ns: await eventually(lambda ns=ns: "proposalId" in obj(apiserver, ns, "proposals", "p")["status"]
                                   and obj(apiserver, ns, "proposals", "p"), what=f"{ns}/p open")
              for ns in ("alpha", "beta")}
    entry = ballot.vote_on(bodies["alpha"], OWNERS["alpha"], farm="farm-alpha", approve=True)
    for ns in ("alpha", "beta"):  # beta's tenant copies alpha's vote onto its own proposal of the same name
        await apiserver.patch(f"{API}/{ns}/proposals/p", headers={"Content-Type": "application/merge-patch+json"},
                              json={"spec": {"votes": [entry]}})
    await eventually(lambda: obj(apiserver, "alpha", "proposals", "p")["status"].get("ayes") == 1, what="counted")
    b = await eventually(lambda: obj(apiserver, "beta", "proposals", "p")["status"].get("rejectedVotes")
                         and obj(apiserver, "beta", "proposals", "p"), what="refused in beta")
    assert [r["reason"] for r in b["status"]["rejectedVotes"]] == ["BadSignature"] and b["status"]["ayes"] == 0
