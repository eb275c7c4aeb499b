"""Issue 13's last gaps, end to end: the real operator against the strict API emulator, objects in two or more
namespaces, an attacker who has only namespace rights (create, update, delete the grid kinds and Secrets of its
own namespace, write its own objects' status). After every scenario the ledger conserves money (funding + minted =
balances + reserves; billed = paid + owed, to the unit).

* Debt follows the payer: a Deployment deleted in its grace period leaves its debt to its payer, who opens nothing
  anywhere until a funding pays it (PayerInDebt), and whose Deployments resume by themselves when it is paid.
* DAO weight is the capacity held over the last minted period: capacity attested just before a vote weighs
  nothing; a node key is one node's.
* A council signature opens one proposal, once; a copy in another namespace opens nothing and spends nothing.
* movedFrom and a proposal's rejected votes are the operator's word, whatever a tenant writes into status.
* A Farm's payoutAccount takes no name a twin may register, nor another namespace's payout.
"""

from __future__ import annotations

import pytest

from e2e.conftest import COUNCIL, PERIOD, START, condition
from e2e.objects import events, held_a_period, proposal, twin_account
from e2e.tenants import conserved, create, deployment, farm, get, node, patch, reason
from polling import eventually
from tfgrid_operator import agent, ballot
from tfgrid_operator.domain import billing, identity, money, units
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient

pytestmark = pytest.mark.e2e

A, B = "team-a", "team-b"
H = 3600
TFT = money.UNITS_PER_TFT
FARMER, MALLORY = identity.KeyPair.generate(), identity.KeyPair.generate()
CAPACITY = Resources(cru=8, mru=32, sru=1000)  # what tenants.node's spec says, and its agent attests
MERGE = {"headers": {"Content-Type": "application/merge-patch+json"}}


async def victim(apiserver, nodes=("node1", "node2"), report: bool = False) -> dict[str, identity.KeyPair]:
    """team-a's farm and nodes; with ``report`` their agents report (and attest) at START."""
    keys = {n: identity.KeyPair.generate() for n in nodes}
    await create(apiserver, A, farm("freefarm", FARMER, "farmer"), *(node(n, "freefarm", k) for n, k in keys.items()))
    for n in nodes:
        await reason(apiserver, A, "nodes", n, "Available")
    if report:
        async with KubeClient() as kube:
            for n, k in keys.items():
                await agent.send_report(kube, k, namespace=A, node=n, ts=START, uptime=100, capacity=CAPACITY)
    return keys


# ---------------------------------------------------------------- debt follows the payer
async def test_a_deployment_deleted_in_grace_leaves_its_debt_to_its_payer(apiserver, operator, ledger, grid_clock):
    await victim(apiserver)
    for ns in (A, B):  # carol granted both namespaces; mallory is team-b's own twin
        await twin_account(ledger, apiserver, "carol", namespace=ns)
    await twin_account(ledger, apiserver, "mallory", namespace=B)
    await ledger.fund(name="mallory", amount=100 * TFT, now=grid_clock.now())
    funded = 100 * TFT
    await create(apiserver, A, deployment("web", "carol"))
    await reason(apiserver, A, "deployments", "web", "Available")
    grid_clock.set(START + H)  # carol cannot pay the first hour: grace (§2.4)
    await reason(apiserver, A, "deployments", "web", "GracePeriod")
    in_grace = await ledger.observe_contract(key=f"{A}/web")
    # team-a deletes its deployment in grace: the contract closes with its final bill, its debt carol's
    resp = await apiserver.delete(f"/apis/grid.threefold.io/v1alpha1/namespaces/{A}/deployments/web")
    assert resp.status in (200, 202)
    await eventually(lambda: get(apiserver, A, "deployments", "web") is None, what="web deleted")
    closed = await ledger.observe_contract(key=f"{A}/web")
    assert (closed.id, closed.state) == (in_grace.id, "Deleted") and closed.overdraft > 0
    assert (await ledger.get_account(name="carol")).debt == closed.overdraft
    # carol opens nothing while she owes: not the re-created web, not team-b's api; mallory is not held by it
    await create(apiserver, A, deployment("web", "carol"))
    await create(apiserver, B, deployment("api", "carol"), deployment("mine", "mallory"))
    for ns, name in ((A, "web"), (B, "api")):
        d = await reason(apiserver, ns, "deployments", name, "PayerInDebt")
        assert condition(d)["status"] == "False" and "owes" in condition(d)["message"]
        assert "contractId" not in d["status"]
    assert (await ledger.observe_contract(key=f"{A}/web")).id == closed.id  # no new contract
    assert await ledger.observe_contract(key=f"{B}/api") is None
    await reason(apiserver, B, "deployments", "mine", "Available")
    assert events(apiserver, "PayerInDebt")
    await conserved(ledger, funded)
    # the attacker in team-b tries to escape carol's debt for her: naming another twin it has no grant of
    await patch(apiserver, B, "deployments", "api", {"spec": {"payer": {"account": "mallory"}}})
    await reason(apiserver, B, "deployments", "api", "PayerNotAuthorized")
    await patch(apiserver, B, "deployments", "api", {"spec": {"payer": {"account": "carol",
                                                                        "grantRef": {"name": "carol-grant"}}}})
    await reason(apiserver, B, "deployments", "api", "PayerInDebt")
    # carol is funded: her debt is paid first, split as its bills would have been; both deployments open by
    # themselves (the loop retries them), nobody re-applies anything
    before = {a.name: a.balance for a in await ledger.list_accounts()}
    paid = await ledger.fund(name="carol", amount=100 * TFT, now=grid_clock.now())
    funded += 100 * TFT
    assert (paid.collected, paid.debt) == (closed.overdraft, 0)
    share = billing.split(closed.overdraft)
    after = {a.name: a.balance for a in await ledger.list_accounts()}
    assert (after[f"{A}/farmer"] - before[f"{A}/farmer"], after["foundation"] - before["foundation"],
            after["staking-pool"] - before["staking-pool"]) == (share.farmer, share.foundation, share.staking_pool)
    for ns, name in ((A, "web"), (B, "api")):
        d = await reason(apiserver, ns, "deployments", name, "Available")
        assert d["status"]["contractId"] != closed.id
    assert [p.reason for p in await ledger.payouts(key=f"{A}/web") if p.contract_id == closed.id][-1] == "Debt"
    await conserved(ledger, funded)


# ---------------------------------------------------------------- DAO weight, node keys
async def test_weight_bought_a_second_before_a_vote_weighs_nothing(apiserver, operator, ledger, grid_clock):
    keys = await victim(apiserver, nodes=("node1",), report=True)
    await eventually(lambda: _attested(ledger, "node1"), what="node1 attested")
    # the attacker's five farms, each with a node whose key it holds
    fakes = {f"fake{i}": identity.KeyPair.generate() for i in range(5)}
    fake_nodes = {f"fn{i}": identity.KeyPair.generate() for i in range(5)}
    await create(apiserver, B, *(farm(f, k, "evil") for f, k in fakes.items()),
                 *(node(f"fn{i}", f"fake{i}", fake_nodes[f"fn{i}"]) for i in range(5)))
    for i in range(5):
        await reason(apiserver, B, "nodes", f"fn{i}", "Available")
    # a stolen node key: the attacker's node with the victim's node key is refused, nothing changes
    victim_node = await ledger.observe_node(name="node1")
    await create(apiserver, B, node("stolen", "fake0", keys["node1"]))
    taken = await reason(apiserver, B, "nodes", "stolen", "NameTaken")
    assert "registered for another node" in condition(taken)["message"] and A not in str(taken["status"])
    assert await ledger.observe_node(name="stolen") is None and await ledger.observe_node(name="node1") == victim_node
    # period 100 is held and minted (the victim's node reported through it); the vote opens after it
    await held_a_period(ledger, keys)
    grid_clock.set(START + PERIOD + H)
    async with KubeClient() as kube:  # a second before the vote: the Node maximum, signed by each fake node's key
        for n, k in fake_nodes.items():
            await agent.send_report(kube, k, namespace=B, node=n, ts=grid_clock.now(), uptime=100,
                                    capacity=units.NODE_MAXIMUM)
    await eventually(lambda: _attested(ledger, *fake_nodes), what="the fake nodes attested")
    await create(apiserver, A, proposal("p", COUNCIL[0], {"type": "SetPricingPolicy", "pricing": {"cu": 1}},
                                        namespace=A))
    body = await eventually(lambda: "proposalId" in (get(apiserver, A, "proposals", "p").get("status") or {})
                            and get(apiserver, A, "proposals", "p"), what="p open")
    votes = [ballot.vote_on(body, k, farm=f, approve=False) for f, k in fakes.items()]
    votes.append(ballot.vote_on(body, FARMER, farm="freefarm", approve=True))
    await patch(apiserver, A, "proposals", "p", {"spec": {"votes": votes}})
    p = await eventually(lambda: len(get(apiserver, A, "proposals", "p")["status"].get("rejectedVotes") or []) == 5
                         and get(apiserver, A, "proposals", "p"), what="the fake votes refused")
    assert {r["reason"] for r in p["status"]["rejectedVotes"]} == {"FarmHasNoNodes"}
    assert p["status"]["counted"] == [{"farm": "freefarm", "approve": True, "weight": units.dao_weight(CAPACITY),
                                       "seq": votes[-1]["seq"]}]
    # the tenant of team-a writes its proposal's verdicts over (what `vote` reads): the operator writes them back
    await patch(apiserver, A, "proposals", "p", {"status": {"rejectedVotes": [], "counted": []}}, "/status")
    await eventually(lambda: len(get(apiserver, A, "proposals", "p")["status"].get("rejectedVotes") or []) == 5
                     and get(apiserver, A, "proposals", "p")["status"]["counted"], what="verdicts written back")
    await conserved(ledger)


async def _attested(ledger, *nodes: str) -> bool:
    return set(nodes) <= set(await ledger.attestations())


# ---------------------------------------------------------------- a council signature opens once
async def test_a_signed_proposal_copied_to_another_namespace_opens_nothing_and_spends_nothing(apiserver, operator,
                                                                                            ledger):
    signed = proposal("cheaper", COUNCIL[0], {"type": "SetPricingPolicy", "pricing": {"cu": 1}}, namespace=A)
    # the attacker got the council-signed manifest for team-a and applies it first, in its own namespace
    await create(apiserver, B, signed)
    copied = await reason(apiserver, B, "proposals", "cheaper", "Unauthorized")
    assert "does not verify" in condition(copied)["message"]
    await create(apiserver, A, signed)  # the nonce was not spent by the copy: the real one opens
    opened = await eventually(lambda: "proposalId" in (get(apiserver, A, "proposals", "cheaper").get("status") or {})
                              and get(apiserver, A, "proposals", "cheaper"), what="team-a's proposal open")
    assert (await ledger.observe_proposal(key=f"{A}/cheaper")).nonce == signed["spec"]["nonce"]
    assert await ledger.observe_proposal(key=f"{B}/cheaper") is None
    # its nonce is fixed once proposed (the CRD's CEL rule); on a cluster without the rule, the edit is SpecLocked
    edit = {"spec": {"nonce": "f" * 32}}
    refused = await apiserver.patch(f"/apis/grid.threefold.io/v1alpha1/namespaces/{A}/proposals/cheaper", json=edit,
                                    **MERGE)
    assert refused.status == 422 and "nonce is the council signature's" in await refused.text()
    apiserver.cel = False
    await patch(apiserver, A, "proposals", "cheaper", edit)
    locked = await eventually(lambda: condition(get(apiserver, A, "proposals", "cheaper"), "Synced").get("reason")
                              == "SpecLocked" and get(apiserver, A, "proposals", "cheaper"), what="SpecLocked")
    assert "nonce" in condition(locked, "Synced")["message"]
    await patch(apiserver, A, "proposals", "cheaper", {"spec": {"nonce": signed["spec"]["nonce"]}})
    apiserver.cel = True
    # team-a withdraws it and applies it again: the same signature never opens it a second time
    resp = await apiserver.delete(f"/apis/grid.threefold.io/v1alpha1/namespaces/{A}/proposals/cheaper")
    assert resp.status in (200, 202)
    await eventually(lambda: get(apiserver, A, "proposals", "cheaper") is None, what="withdrawn")
    await create(apiserver, A, signed)
    again = await reason(apiserver, A, "proposals", "cheaper", "Unauthorized")
    assert "opens one proposal, once" in condition(again)["message"]
    assert await ledger.observe_proposal(key=f"{A}/cheaper") is None
    withdrawn = await ledger.observe_proposal(key=f"{A}/cheaper#withdrawn-{opened['status']['proposalId']}")
    assert withdrawn.state == "Withdrawn"
    await conserved(ledger)


# ---------------------------------------------------------------- movedFrom is the ledger's
async def test_moved_from_is_written_from_the_ledger_whatever_a_tenant_writes(apiserver, operator, ledger, grid_clock):
    keys = await victim(apiserver, report=True)
    await twin_account(ledger, apiserver, "alice", namespace=A)
    await twin_account(ledger, apiserver, "mallory", namespace=B)
    for account in ("alice", "mallory"):
        await ledger.fund(name=account, amount=100 * TFT, now=grid_clock.now())
    await create(apiserver, A, deployment("web", "alice"))
    await create(apiserver, B, deployment("web", "mallory"))
    for ns in (A, B):
        await reason(apiserver, ns, "deployments", "web", "Available")
    # a tenant claims its deployment was moved: it never was, so the claim is removed
    await patch(apiserver, A, "deployments", "web", {"status": {"movedFrom": "node9"}}, "/status")
    await eventually(lambda: "movedFrom" not in get(apiserver, A, "deployments", "web")["status"],
                     what="a made-up movedFrom removed")
    # team-a's node goes silent (its agent stops) while the other reports: self-healing moves web off it
    down = get(apiserver, A, "deployments", "web")["status"]["node"]
    up = next(n for n in keys if n != down)
    namesake_was = get(apiserver, B, "deployments", "web")["status"]["node"]  # team-b's "web", on either node
    grid_clock.set(START + 100 * 60)
    async with KubeClient() as kube:
        await agent.send_report(kube, keys[up], namespace=A, node=up, ts=START + 100 * 60, uptime=6100,
                                capacity=CAPACITY)
    moved = await eventually(lambda: get(apiserver, A, "deployments", "web")["status"].get("movedFrom") == down
                             and get(apiserver, A, "deployments", "web"), what="web moved")
    assert moved["status"]["node"] == up
    assert (await ledger.observe_contract(key=f"{A}/web")).moved_from == down
    # team-b's namesake moved only if it was on the silent node too; its movedFrom says so, and only then
    namesake = await eventually(lambda: get(apiserver, B, "deployments", "web")["status"]["node"] == up
                                and get(apiserver, B, "deployments", "web"), what="team-b's web on the live node")
    assert namesake["status"].get("movedFrom") == (down if namesake_was == down else None)
    await patch(apiserver, A, "deployments", "web", {"status": {"movedFrom": "elsewhere"}}, "/status")
    await eventually(lambda: get(apiserver, A, "deployments", "web")["status"].get("movedFrom") == down,
                     what="movedFrom written back from the ledger")
    await conserved(ledger, 200 * TFT)


# ---------------------------------------------------------------- payout accounts
async def test_a_farms_payout_account_squats_no_twins_name_nor_another_namespaces(apiserver, operator, ledger,
                                                                                 grid_clock):
    keys = await victim(apiserver, nodes=("node1",), report=True)
    # the attacker's farms name the victim's payout and a twin name nobody has registered yet
    evil_keys = {"en1": identity.KeyPair.generate(), "en2": identity.KeyPair.generate()}
    await create(apiserver, B, farm("evil1", MALLORY, "farmer"), farm("evil2", MALLORY, "dave"),
                 node("en1", "evil1", evil_keys["en1"]), node("en2", "evil2", evil_keys["en2"]))
    for plural, name in (("farms", "evil1"), ("farms", "evil2"), ("nodes", "en1"), ("nodes", "en2")):
        await reason(apiserver, B, plural, name, "Available")
    payouts = {f.name: f.payout_account for f in await ledger.list_farms()}
    assert payouts == {"freefarm": f"{A}/farmer", "evil1": f"{B}/farmer", "evil2": f"{B}/dave"}
    # dave registers later: the name is his, and he pays
    dave = identity.KeyPair.generate()
    assert (await ledger.ensure_account(name="dave", public_key=dave.public_key)).role == "twin"
    async with KubeClient() as kube:
        for n, k in evil_keys.items():
            await agent.send_report(kube, k, namespace=B, node=n, ts=START, uptime=100, capacity=CAPACITY)
    await eventually(lambda: _attested(ledger, "node1", *evil_keys), what="all attested")
    # each farm's node mints into its own namespace's account: nothing of the attacker's reaches team-a's
    await held_a_period(ledger, {**keys, **evil_keys})
    minted = {n: (await ledger.mint_receipts(node=n))[0].amount for n in ("node1", "en1", "en2")}
    assert all(minted.values())
    for account, expected in ((f"{A}/farmer", minted["node1"]), (f"{B}/farmer", minted["en1"]),
                              (f"{B}/dave", minted["en2"]), ("dave", 0)):
        assert (await ledger.get_account(name=account)).balance == expected, account
    await conserved(ledger)
