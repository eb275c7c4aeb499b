"""DAO end to end (§5): council-signed proposals, signed farm votes, tally, deadline, vetoes, execution once.

Every farm here has one node of 8 cores, 32 GiB, 1000 GiB SSD. §5 weight by hand: CU_w = 2·floor(min(2·8,
1000/50)) = 32, SU_w = floor(1000/250) = 4 → 2·32 + 4 = 68 per farm.
"""

from __future__ import annotations

import pytest

from e2e.conftest import COUNCIL, START, condition
from e2e.objects import (
    NS,
    create,
    deployment,
    events,
    farm,
    held_a_period,
    node,
    obj,
    proposal,
    ready,
    twin_account,
    with_reason,
)
from polling import eventually
from tfgrid_operator import agent, ballot
from tfgrid_operator.domain import identity, money
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient

pytestmark = pytest.mark.e2e
H = 3600
OWNERS = {f"f{i}": identity.KeyPair.generate() for i in range(1, 7)}
NODE_KEYS = {f"n{f}": identity.KeyPair.generate() for f in OWNERS}
CHEAPER_CU = {"type": "SetPricingPolicy", "pricing": {"cu": 50_000}}  # halves §4.1's 100,000 units USD per CU-hour
MERGE = {"Content-Type": "application/merge-patch+json"}


async def six_farms(apiserver, ledger):
    await create(apiserver, *(farm(f, owner=k.public_key) for f, k in OWNERS.items()),
                 *(node(f"n{f}", f, key=NODE_KEYS[f"n{f}"]) for f in OWNERS))
    await ready(apiserver, "nodes", *(f"n{f}" for f in OWNERS))
    async with KubeClient() as kube:  # DAO weight is the capacity each node's agent attested (issue 13)
        for n, key in NODE_KEYS.items():
            await agent.send_report(kube, key, namespace="default", node=n, ts=START, uptime=100,
                                    capacity=Resources(cru=8, mru=32, sru=1000))
    await eventually(lambda: _attested(ledger), what="capacity attested")
    await held_a_period(ledger, NODE_KEYS)  # held over a minted period: now each farm weighs 68 in votes (§5)


async def _attested(ledger):
    return set(NODE_KEYS) <= set(await ledger.attestations())


def vote(body, farm_name, approve, key=None, seq=None):
    return ballot.vote_on(body, key or OWNERS[farm_name], farm=farm_name, approve=approve, seq=seq)


async def opened(apiserver, name):
    return await eventually(lambda: "proposalId" in prop(apiserver, name)["status"] and prop(apiserver, name),
                            what=f"{name} open")


async def put_votes(apiserver, name, votes):
    resp = await apiserver.patch(f"{NS}/proposals/{name}", headers=MERGE, json={"spec": {"votes": votes}})
    assert resp.status == 200, await resp.text()


def prop(apiserver, name):
    return obj(apiserver, "proposals", name)


async def test_approved_pricing_change_executes_once_and_bills_the_next_period(apiserver, operator, ledger, grid_clock):
    await six_farms(apiserver, ledger)
    await twin_account(ledger, apiserver, "alice")
    await ledger.fund(name="alice", amount=100 * money.UNITS_PER_TFT, now=grid_clock.now())  # < 1.5 months of cost: no discount
    await create(apiserver, deployment("web"))
    await ready(apiserver, "deployments", "web")
    await create(apiserver, proposal("cheap", COUNCIL[0], CHEAPER_CU))
    body = await opened(apiserver, "cheap")
    votes = [vote(body, f, True) for f in ("f1", "f2", "f3", "f4")] + [vote(body, "f5", False)]
    votes += [vote(body, "f6", True, key=OWNERS["f1"]),  # forged: f1's key signing for f6
              vote(body, "f1", False),  # a second entry for f1: DuplicateVote
              vote(body, "f9", True, key=identity.KeyPair.generate())]  # no such farm
    await put_votes(apiserver, "cheap", votes)
    p = await eventually(lambda: prop(apiserver, "cheap")["status"].get("ayes") == 4 and prop(apiserver, "cheap"),
                         what="votes tallied")
    assert (p["status"]["ayesWeight"], p["status"]["naysWeight"], p["status"]["nays"]) == (4 * 68, 68, 1)
    assert p["status"]["state"] == "Open" and condition(p)["reason"] == "Voting"
    assert p["status"]["deadline"] == "1970-01-27T00:00:00Z"  # START (26 Jan 1970 00:00) + 24 h
    assert sorted((r["farm"], r["reason"]) for r in p["status"]["rejectedVotes"]) == [
        ("f1", "DuplicateVote"), ("f6", "BadSignature"), ("f9", "UnknownFarm")]
    await eventually(lambda: len(events(apiserver, "VoteRejected", "cheap")) == 3, what="one Event per rejected vote")
    assert len(events(apiserver, "VoteCounted", "cheap")) == 5
    # restart before the deadline, then across it: executed exactly once
    await operator.stop()
    grid_clock.set(START + 24 * H)
    operator.start()
    p = await with_reason(apiserver, "proposals", "cheap", "Executed")
    assert p["status"]["state"] == "Executed" and p["status"]["executedAt"] == "1970-01-27T00:00:00Z"
    await operator.stop()
    operator.start()
    await eventually(lambda: events(apiserver, "Executed", "cheap"), what="Executed Event")
    assert len(events(apiserver, "Executed", "cheap")) == 1
    assert (await ledger.observe_proposal(key="default/cheap")).executed_at == START + 24 * H
    assert (await ledger.policies())[0].cu == 50_000
    # the 24 hours before the deadline were billed at the old price, the next one at the new:
    # old 152,500 units USD/h → 7,625,000 units; new 50,000 + 12,500 + 40,000 = 102,500 → 5,125,000 units
    await eventually(lambda: obj(apiserver, "deployments", "web")["status"].get("billedTotal") == 24 * 7_625_000)
    grid_clock.set(START + 25 * H)
    await eventually(lambda: obj(apiserver, "deployments", "web")["status"].get("billedTotal")
                     == 24 * 7_625_000 + 5_125_000, what="next period at the new price")
    assert obj(apiserver, "deployments", "web")["status"]["costPerHour"] == 5_125_000


async def test_rejected_on_weight_and_on_threshold_vetoed_unauthorized_and_closed(apiserver, operator, ledger,
                                                                                     grid_clock):
    await six_farms(apiserver, ledger)
    # 5 farms vote but the nays weigh more (3·68 > 2·68); only 3 farms vote (threshold 5)
    await create(apiserver,
                 proposal("heavy-nays", COUNCIL[0], CHEAPER_CU), proposal("too-few", COUNCIL[1], CHEAPER_CU),
                 proposal("vetoed", COUNCIL[2], {"type": "SetFarmingPolicy", "policyId": 1, "farming": {"cu": 1}}))
    body = await opened(apiserver, "heavy-nays")
    await put_votes(apiserver, "heavy-nays", [vote(body, f, f in ("f1", "f2")) for f in ("f1", "f2", "f3", "f4", "f5")])
    too_few = await opened(apiserver, "too-few")
    await put_votes(apiserver, "too-few", [vote(too_few, f, True) for f in ("f1", "f2", "f3")])
    await eventually(lambda: prop(apiserver, "too-few")["status"].get("ayes") == 3, what="too-few votes counted")
    await eventually(lambda: prop(apiserver, "heavy-nays")["status"].get("nays") == 3, what="heavy-nays counted")
    # not signed by a council member: never reaches the ledger
    await create(apiserver, proposal("rogue", identity.KeyPair.generate(), CHEAPER_CU))
    p = await with_reason(apiserver, "proposals", "rogue", "Unauthorized")
    assert "not a council member" in condition(p)["message"]
    assert await ledger.observe_proposal(key="default/rogue") is None
    await eventually(lambda: events(apiserver, "Unauthorized", "rogue"), what="Unauthorized Event")
    # vetoes: one from outside the council is rejected; three council vetoes close it at once (§5 MinVetos)
    voting_on = await with_reason(apiserver, "proposals", "vetoed", "Voting")
    async with KubeClient() as kube:
        await ballot.add_entry(kube, namespace="default", name="vetoed", field="vetoes", same="memberKey",
                               entry=ballot.veto_on(voting_on, identity.KeyPair.generate()))
        await eventually(lambda: events(apiserver, "VetoRejected", "vetoed"), what="VetoRejected Event")
        for member in COUNCIL:  # each signs the proposal's ledger id and council nonce
            await ballot.add_entry(kube, namespace="default", name="vetoed", field="vetoes", same="memberKey",
                                   entry=ballot.veto_on(voting_on, member))
    p = await with_reason(apiserver, "proposals", "vetoed", "Vetoed")
    assert p["status"]["vetoes"] == 3 and p["status"]["rejectedVetoes"][0]["reason"] == "NotCouncil"
    grid_clock.set(START + 24 * H)
    p = await with_reason(apiserver, "proposals", "heavy-nays", "Rejected")
    assert (p["status"]["ayesWeight"], p["status"]["naysWeight"]) == (136, 204)
    p = await with_reason(apiserver, "proposals", "too-few", "Rejected")
    assert p["status"]["ayes"] == 3 and "threshold 5" in condition(p)["message"]
    assert (await ledger.policies())[0].cu == 100_000  # nothing executed
    # a late vote on a closed proposal does not count; editing a closed proposal neither reopens nor executes it
    late_votes = [v for v in prop(apiserver, "too-few")["spec"]["votes"]] + [vote(too_few, f, True) for f in ("f4", "f5")]
    late = {"votes": late_votes, "action": {"pricing": {"cu": 1}}}
    refused = await apiserver.patch(f"{NS}/proposals/too-few", headers=MERGE, json={"spec": late})
    assert refused.status == 422 and "fixed once proposed" in await refused.text()  # the CRD's CEL rule
    apiserver.cel = False  # a cluster whose CRDs predate the rule: the operator still never applies the edit
    await apiserver.patch(f"{NS}/proposals/too-few", headers=MERGE, json={"spec": late})
    apiserver.cel = True
    p = await eventually(lambda: condition(prop(apiserver, "too-few"), "Synced").get("reason") == "SpecLocked"
                         and prop(apiserver, "too-few"), what="SpecLocked")
    assert "do not reopen or re-execute" in condition(p, "Synced")["message"]
    assert p["status"]["state"] == "Rejected"
    assert {(r["farm"], r["reason"]) for r in p["status"]["rejectedVotes"]} == {("f4", "ProposalClosed"),
                                                                                 ("f5", "ProposalClosed")}
    assert (await ledger.policies())[0].cu == 100_000
    assert (await ledger.observe_proposal(key="default/too-few")).state == "Rejected"


async def test_cli_vote_signs_and_patches_the_proposal(apiserver, operator, ledger, tmp_path):
    from click.testing import CliRunner

    from tfgrid_operator import cli

    await six_farms(apiserver, ledger)
    await create(apiserver, proposal("via-cli", COUNCIL[0], CHEAPER_CU))
    await opened(apiserver, "via-cli")
    key_file, wrong = tmp_path / "f1.key", tmp_path / "wrong.key"
    key_file.write_text(OWNERS["f1"].to_text())
    wrong.write_text(OWNERS["f2"].to_text())
    runner = CliRunner()
    args = ["vote", "--proposal", "via-cli", "--farm", "f1", "--key-file", str(key_file)]
    out = await _in_thread(runner.invoke, cli.main, [*args, "--yes"])
    assert out.exit_code == 0, out.output
    assert "counted" in out.output and "ayes 68 vs nays 0" in out.output  # it waited for the operator's verdict
    first = prop(apiserver, "via-cli")["spec"]["votes"][0]
    out = await _in_thread(runner.invoke, cli.main, [*args, "--no"])  # §5: a farm may switch its vote
    assert out.exit_code == 0, out.output
    p = await eventually(lambda: prop(apiserver, "via-cli")["status"].get("naysWeight") == 68 and prop(apiserver, "via-cli"),
                         what="switched vote counted")
    assert p["status"]["ayesWeight"] == 0 and len(p["spec"]["votes"]) == 1
    # the superseded "yes", validly signed, replayed by anyone who may edit the object: refused, "no" still counts
    await put_votes(apiserver, "via-cli", [first])
    p = await eventually(lambda: prop(apiserver, "via-cli")["status"].get("rejectedVotes") and prop(apiserver, "via-cli"),
                         what="replay refused")
    assert p["status"]["rejectedVotes"] == [{"farm": "f1", "reason": "Superseded", "seq": first["seq"]}]
    assert (p["status"]["ayesWeight"], p["status"]["naysWeight"]) == (0, 68)
    # the wrong key: a non-zero exit with the operator's reason
    bad = await _in_thread(runner.invoke, cli.main, ["vote", "--proposal", "via-cli", "--farm", "f1", "--yes",
                                                     "--key-file", str(wrong)])
    assert bad.exit_code == 1 and "does not count: BadSignature" in bad.output, bad.output
    missing = await _in_thread(runner.invoke, cli.main, ["vote", "--proposal", "nope", "--farm", "f1", "--yes",
                                                         "--key-file", str(key_file)])
    assert missing.exit_code == 1 and missing.output.strip() == "Error: proposal default/nope does not exist"


async def test_a_vote_binds_to_its_proposal_and_deleting_an_open_one_withdraws_it(apiserver, operator, ledger):
    await six_farms(apiserver, ledger)
    signed_once = proposal("one", COUNCIL[0], CHEAPER_CU)
    await create(apiserver, signed_once, proposal("two", COUNCIL[1], CHEAPER_CU))
    one, two = await opened(apiserver, "one"), await opened(apiserver, "two")
    # a vote signed for "one" copied onto "two" (same action and threshold) does not count there
    await put_votes(apiserver, "two", [vote(one, "f1", True)])
    p = await eventually(lambda: prop(apiserver, "two")["status"].get("rejectedVotes") and prop(apiserver, "two"),
                         what="foreign vote refused")
    assert [(r["farm"], r["reason"]) for r in p["status"]["rejectedVotes"]] == [("f1", "BadSignature")]
    await put_votes(apiserver, "one", [vote(one, "f1", True)])
    await eventually(lambda: prop(apiserver, "one")["status"].get("ayes") == 1, what="vote counted")
    old_id = one["status"]["proposalId"]
    await apiserver.delete(f"{NS}/proposals/one")
    await eventually(lambda: prop(apiserver, "one") is None, what="proposal gone")
    assert await ledger.observe_proposal(key="default/one") is None  # withdrawn: its name is free
    withdrawn = await ledger.observe_proposal(key=f"default/one#withdrawn-{old_id}")
    assert withdrawn.state == "Withdrawn" and len(withdrawn.votes) == 1
    # created again with the same council signature: it opens one proposal, once (its nonce is spent)
    await create(apiserver, {**signed_once, "spec": {**signed_once["spec"], "votes": [vote(one, "f1", True)]}})
    refused = await with_reason(apiserver, "proposals", "one", "Unauthorized")
    assert "opens one proposal, once" in condition(refused)["message"] and "proposalId" not in refused["status"]
    assert await ledger.observe_proposal(key="default/one") is None
    await apiserver.delete(f"{NS}/proposals/one")
    await eventually(lambda: prop(apiserver, "one") is None, what="refused proposal gone")
    # signed anew (a fresh nonce): a new proposal, where the old vote, replayed, does not count
    await create(apiserver, proposal("one", COUNCIL[0], CHEAPER_CU, votes=[vote(one, "f1", True)]))
    again = await eventually(lambda: prop(apiserver, "one")["status"].get("rejectedVotes") and prop(apiserver, "one"),
                             what="re-created")
    assert again["status"]["proposalId"] != old_id and again["status"]["ayes"] == 0
    assert two["status"]["proposalId"] not in (old_id, again["status"]["proposalId"])


async def _in_thread(fn, *args):
    import asyncio

    return await asyncio.to_thread(fn, *args)
