"""A second independent review of issue 13, end to end: the real operator against the strict API emulator, a tenant
in team-a and an attacker in team-b with only namespace rights (create, update, delete the grid kinds, Secrets and
Leases of its own namespace; write its own objects' status). Each scenario failed before its fix.

* A council veto binds to the proposal's ledger identity — its id and the nonce of the council signature that opened
  it — so a veto signed against a forged ``status.proposalId`` never counts on a later proposal of the same name.
* A council certification names the capacity the council saw: a farmer who holds the signed annotation back and has
  its agent attest a bigger machine first gets CertificationRejected, and its node stays DIY.
* A malformed uptime report (a time past any integer) on a Lease of the attacker's namespace naming another tenant's
  node is refused as malformed, never an operator error.
"""

from __future__ import annotations

import pytest

from e2e.conftest import COUNCIL, START
from e2e.objects import events, proposal
from e2e.tenants import conserved, create, farm, get, node, patch, reason
from polling import eventually
from tfgrid_operator import agent, ballot
from tfgrid_operator.domain import identity
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.handlers import leases
from tfgrid_operator.kube.client import KubeClient

pytestmark = pytest.mark.e2e

A, B = "team-a", "team-b"
CHEAPER = {"type": "SetPricingPolicy", "pricing": {"cu": 1}}


async def test_a_veto_signed_against_a_forged_proposal_id_never_counts_on_a_later_proposal(apiserver, operator,
                                                                                           ledger):
    """team-a's tenant writes its open proposal's status.proposalId as the id the ledger will give out next; the
    three council members veto what they read. Their vetoes do not verify there (another id), so the tenant
    withdraws the proposal and applies a newly signed one of the same name with those vetoes copied in: it gets
    that id. Before the fix the vetoes counted on it (they signed only the name and the id)."""
    await create(apiserver, A, proposal("cheaper", COUNCIL[0], CHEAPER, namespace=A))
    first = await reason(apiserver, A, "proposals", "cheaper", "Voting")
    pid = first["status"]["proposalId"]
    await patch(apiserver, A, "proposals", "cheaper", {"status": {"proposalId": pid + 1}}, "/status")
    forged = get(apiserver, A, "proposals", "cheaper")
    forged["status"]["proposalId"] = pid + 1  # what each member's `council veto` read, had it read it then
    vetoes = [ballot.veto_on(forged, member) for member in COUNCIL]
    await patch(apiserver, A, "proposals", "cheaper", {"spec": {"vetoes": vetoes}})
    rejected = await eventually(lambda: len(get(apiserver, A, "proposals", "cheaper")["status"].get("rejectedVetoes")
                                            or []) == 3 and get(apiserver, A, "proposals", "cheaper"),
                                what="the vetoes for another id rejected")
    assert {r["reason"] for r in rejected["status"]["rejectedVetoes"]} == {"BadSignature"}
    assert (await ledger.observe_proposal(key=f"{A}/cheaper")).state == "Open"
    # withdrawn, and signed anew (a fresh nonce) with the forged-for vetoes copied in: it opens as id pid + 1
    resp = await apiserver.delete(f"/apis/grid.threefold.io/v1alpha1/namespaces/{A}/proposals/cheaper")
    assert resp.status in (200, 202)
    await eventually(lambda: get(apiserver, A, "proposals", "cheaper") is None, what="withdrawn")
    again = proposal("cheaper", COUNCIL[1], CHEAPER, namespace=A)
    again["spec"]["vetoes"] = vetoes
    await create(apiserver, A, again)
    second = await eventually(lambda: len((get(apiserver, A, "proposals", "cheaper") or {}).get("status", {})
                                          .get("rejectedVetoes") or []) == 3 and get(apiserver, A, "proposals", "cheaper"),
                              what="the copied vetoes rejected on the new proposal")
    assert second["status"]["proposalId"] == pid + 1
    assert second["status"]["state"] == "Open" and second["status"].get("vetoes", 0) == 0
    assert (await ledger.observe_proposal(key=f"{A}/cheaper")).state == "Open"
    # a veto read from the proposal as the operator opened it counts there, as before
    for member in COUNCIL:
        entry = ballot.veto_on(get(apiserver, A, "proposals", "cheaper"), member)
        async with KubeClient() as kube:
            await ballot.add_entry(kube, namespace=A, name="cheaper", field="vetoes", entry=entry, same="memberKey")
    vetoed = await reason(apiserver, A, "proposals", "cheaper", "Vetoed")
    assert vetoed["status"]["vetoes"] == 3
    await conserved(ledger)


async def test_a_report_with_a_time_past_any_integer_is_malformed_not_an_operator_error(apiserver, operator):
    """team-b labels a Lease of its own namespace with team-a's node and writes a report whose time is 1e400 (JSON
    reads it as infinity): before the fix int() raised OverflowError in the handler, outside its error handling."""
    report = '{"node": "node1", "ts": 1e400, "uptime": 1, "signature": "x"}'
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "node1-uptime", "labels": {leases.NODE_LABEL: "node1"},
                          "annotations": {leases.REPORT_ANNOTATION: report}},
             "spec": {"holderIdentity": "node1"}}
    made = await apiserver.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": B}})
    assert made.status in (201, 409)
    resp = await apiserver.post(f"/apis/coordination.k8s.io/v1/namespaces/{B}/leases", json=lease)
    assert resp.status == 201, await resp.text()
    await eventually(lambda: events(apiserver, "UptimeRejected", "node1"), what="the report refused as malformed")
    assert any("malformed" in e.get("message", "") for e in events(apiserver, "UptimeRejected", "node1"))
    assert operator.rt.metrics.reconcile_errors.labels("lease")._value.get() == 0  # refused, not a handler crash


async def test_a_certification_held_back_never_certifies_the_bigger_machine_attested_since(apiserver, operator,
                                                                                          ledger, grid_clock):
    """team-b's farmer: its node's agent attests the real machine, a council member certifies what the status shows;
    the farmer removes the annotation before the operator sees it (here: keeps the printed entry), has the agent
    attest 8 times the machine, then puts the certification on. Before the fix the ledger certified the big one."""
    owner, node_key = identity.KeyPair.generate(), identity.KeyPair.generate()
    real, fake = Resources(cru=8, mru=32, sru=1000), Resources(cru=64, mru=256, sru=8000)
    await create(apiserver, B, farm("bfarm", owner, "farmer"), node("bnode", "bfarm", node_key))
    await reason(apiserver, B, "nodes", "bnode", "Available")
    async with KubeClient() as kube:
        await agent.send_report(kube, node_key, namespace=B, node="bnode", ts=START, uptime=100, capacity=real)
        seen = await eventually(lambda: (get(apiserver, B, "nodes", "bnode")["status"].get("attested") or {})
                                .get("cru") == 8 and get(apiserver, B, "nodes", "bnode"), what="real capacity attested")
        entry = ballot.certification_on(seen, COUNCIL[0], certified=True, ts=START + 1)  # `council certify --print`
        grid_clock.set(START + 120)
        await agent.send_report(kube, node_key, namespace=B, node="bnode", ts=START + 120, uptime=220, capacity=fake)
        await eventually(lambda: (get(apiserver, B, "nodes", "bnode")["status"].get("attested") or {}).get("cru") == 64,
                         what="the bigger machine attested")
        await ballot.certify(kube, namespace=B, node="bnode", entry=entry)
        rejected = await eventually(lambda: events(apiserver, "CertificationRejected", "bnode"),
                                    what="the held-back certification rejected")
        assert "the council certifies the capacity it saw" in rejected[0]["message"]
        assert (await ledger.attestations())["bnode"].certified is False
        # back on the machine the council saw, the same certification applies
        grid_clock.set(START + 240)
        await agent.send_report(kube, node_key, namespace=B, node="bnode", ts=START + 240, uptime=340, capacity=real)
        await eventually(lambda: (get(apiserver, B, "nodes", "bnode")["status"].get("attested") or {}).get("cru") == 8,
                         what="the real machine attested again")
        await patch(apiserver, B, "nodes", "bnode", {"metadata": {"annotations": {
            ballot.CERTIFICATION_ANNOTATION: None}}})  # taken off and put on again: the operator sees it anew
        await ballot.certify(kube, namespace=B, node="bnode", entry=entry)
    await eventually(lambda: _certified(ledger, "bnode"), what="certified on the capacity the council saw")


async def _certified(ledger, name):
    return (await ledger.attestations())[name].certified
