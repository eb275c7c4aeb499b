"""DAO weight cannot be bought a second before a vote (issue 13, invariant 3; docs/grid-rules.md §5), on SQLite and
PostgreSQL: a farm weighs the capacity its nodes attested and held, with the SLA's uptime, over the last minting
period the ledger minted — never a capacity attested just before voting — and a node key is one node's.

The victim is team-a's farm; the attacker has only team-b's namespace rights: it makes as many farms and nodes as
it likes and holds their keys, so it can sign any capacity for them. Each scenario ends with the conservation audit.
"""

from __future__ import annotations

import pytest

import ledger_setup
from backend.test_ledger_contract import signed_vote
from ledger_audit import conserved
from tfgrid_operator.backend import errors, records
from tfgrid_operator.domain import identity, minting, units, voting
from tfgrid_operator.domain.units import Resources

HONEST = Resources(cru=8, mru=32, sru=1000)
SMALL = Resources(cru=2, mru=8, sru=250)
VICTIM, ATTACKER = records.Owner("team-a", "uid-a"), records.Owner("team-b", "uid-b")
ACTION = {"type": "SetPricingPolicy", "pricing": {"cu": 1}}


class Farm:
    """A farm of ``owner`` with its nodes, each with a key of its own."""

    def __init__(self, name: str, owner: records.Owner, nodes: dict[str, Resources]) -> None:
        self.name, self.owner, self.key = name, owner, identity.KeyPair.generate()
        self.nodes = nodes
        self.keys = {n: identity.KeyPair.generate() for n in nodes}

    async def register(self, ledger, now: int = 0) -> None:
        await ledger.ensure_farm(name=self.name, owner=self.owner, owner_key=self.key.public_key,
                                 payout_account="payout", certified=False, dedicated=False, public_ips=0)
        for n, r in self.nodes.items():
            await ledger.ensure_node(name=n, owner=self.owner, farm=self.name, resources=r, country="", city="",
                                     certified=False, public_key=self.keys[n].public_key, now=now)

    async def attest(self, ledger, ts: int, resources: Resources | None = None) -> None:
        for n, r in self.nodes.items():
            await ledger_setup.attest(ledger, node=n, resources=resources or r, ts=ts, key=self.keys[n])

    async def vote(self, ledger, prop: records.Proposal, now: int, seq: int = 1) -> records.Proposal:
        return await ledger.cast_vote(proposal=prop.key, farm=self.name, approve=True, seq=seq, now=now,
                                      signature=signed_vote(prop, self.name, True, seq, key=self.key))


async def opened(ledger, end_ts: int) -> records.Proposal:
    return await ledger.ensure_proposal(key="team-a/p", action=ACTION, threshold=5, end_ts=end_ts, nonce="n" * 32)


async def test_capacity_attested_just_before_a_vote_weighs_nothing(ledger):
    honest = Farm("honest", VICTIM, {"h0": HONEST})
    await honest.register(ledger)
    await honest.attest(ledger, 0)
    fakes = [Farm(f"fake{i}", ATTACKER, {f"f{i}": SMALL}) for i in range(5)]
    for f in fakes:
        await f.register(ledger)
    p = await ledger_setup.held_a_period(ledger, honest.keys)
    prop = await opened(ledger, p.end + 10**6)
    # the attack of issue 13: five fake farms attest the Node maximum a second before voting
    for f in fakes:
        await f.attest(ledger, p.end + 60, resources=units.NODE_MAXIMUM)
    for f in fakes:
        with pytest.raises(errors.InvalidRequest, match="FarmHasNoNodes"):
            await f.vote(ledger, prop, p.end + 61)
    after = await honest.vote(ledger, prop, p.end + 62)
    assert [(v.farm, v.weight) for v in after.votes] == [("honest", units.dao_weight(HONEST))]
    await conserved(ledger)


async def test_a_capacity_raised_before_the_vote_or_late_in_the_period_buys_its_seconds_only(ledger):
    """The attacker's node did hold a small capacity all period, with uptime; raising it to the maximum before
    the vote adds nothing, and a minute before the period's end adds a minute's worth."""
    patient = Farm("patient", ATTACKER, {"pa": SMALL})
    late = Farm("late", ATTACKER, {"la": SMALL})
    for f in (patient, late):
        await f.register(ledger)
        await f.attest(ledger, 0)
    period_end = minting.period_by_index(0, epoch=0, length=ledger.config.minting_period_s).end
    await late.attest(ledger, period_end - 60, resources=units.NODE_MAXIMUM)
    p = await ledger_setup.held_a_period(ledger, {**patient.keys, **late.keys})
    await patient.attest(ledger, p.end + 30, resources=units.NODE_MAXIMUM)
    prop = await opened(ledger, p.end + 10**6)
    assert (await patient.vote(ledger, prop, p.end + 31)).votes[0].weight == units.dao_weight(SMALL)
    weights = {v.farm: v.weight for v in (await late.vote(ledger, prop, p.end + 32)).votes}
    held = [minting.Held(0, SMALL, False), minting.Held(period_end - 60, units.NODE_MAXIMUM, False)]
    assert weights["late"] == voting.held_weight(held, p) < units.dao_weight(SMALL) + units.dao_weight(
        units.NODE_MAXIMUM) // 300
    await conserved(ledger)


async def test_only_nodes_that_met_the_sla_weigh_and_never_more_than_they_attest_now(ledger):
    farm = Farm("mixed", VICTIM, {"up": HONEST, "flaky": HONEST, "shrinks": HONEST, "closes": HONEST})
    await farm.register(ledger)
    await farm.attest(ledger, 0)
    p = await ledger_setup.held_a_period(ledger, farm.keys, skip=frozenset({"flaky"}))
    assert (await ledger.mint_receipts(node="flaky"))[0].reason == "BelowSla"
    await ledger_setup.attest(ledger, node="shrinks", resources=SMALL, ts=p.end + 10, key=farm.keys["shrinks"])
    await ledger.close_node(name="closes", owner=VICTIM, now=p.end + 20)
    prop = await opened(ledger, p.end + 10**6)
    vote = (await farm.vote(ledger, prop, p.end + 30)).votes[0]
    assert vote.weight == units.dao_weight(HONEST) + units.dao_weight(SMALL)  # "up" and "shrinks" as it is now
    await conserved(ledger)


async def test_no_farm_weighs_anything_before_a_period_is_minted(ledger):
    farm = Farm("early", VICTIM, {"e0": HONEST})
    await farm.register(ledger)
    await farm.attest(ledger, 0)
    prop = await opened(ledger, 10**6)
    with pytest.raises(errors.InvalidRequest, match="no minting period has been minted yet"):
        await farm.vote(ledger, prop, 60)
    assert (await ledger.observe_proposal(key="team-a/p")).votes == ()


async def test_a_node_key_is_one_nodes_and_a_second_claim_changes_nothing(ledger):
    victim = Farm("victim", VICTIM, {"v0": HONEST})
    await victim.register(ledger)
    await victim.attest(ledger, 0)
    before = await ledger.observe_node(name="v0")
    thief = Farm("thief", ATTACKER, {"t0": HONEST})
    thief.keys["t0"] = victim.keys["v0"]  # the attacker registers a node with the victim's node key
    with pytest.raises(errors.NameTaken, match="registered for another node") as err:
        await thief.register(ledger)
    assert "team-a" not in err.value.message and "v0" not in err.value.message  # nothing of the victim's leaks
    assert await ledger.observe_node(name="t0") is None
    # nor may an existing node take over a registered key later
    own = Farm("own", ATTACKER, {"o0": HONEST})
    await own.register(ledger)
    with pytest.raises(errors.NameTaken):
        await ledger.ensure_node(name="o0", owner=ATTACKER, farm="own", resources=HONEST, country="", city="",
                                 certified=False, public_key=victim.keys["v0"].public_key, now=5)
    assert (await ledger.observe_node(name="o0")).public_key == own.keys["o0"].public_key
    assert await ledger.observe_node(name="v0") == before
    again = await ledger.ensure_node(name="v0", owner=VICTIM, farm="victim", resources=HONEST, country="", city="",
                                     certified=False, public_key=victim.keys["v0"].public_key, now=6)
    assert not again.created  # the node itself keeps its key
    await conserved(ledger)
