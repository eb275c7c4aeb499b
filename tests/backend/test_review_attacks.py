"""Attacks an independent review found with only namespace rights, each now refused (issue 13): a capacity past
the Node bounds, a mint past the ledger's bound halting every node, a farmer raising a rented node's spec to raise
the rent, a payer change handing the old payer's debt to the new one, a node moving to a second farm."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import ledger_setup
from ledger_audit import conserved
from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.domain import identity, minting, money, scheduling, units
from tfgrid_operator.domain.units import Resources

FARMER, NODE_KEY, OTHER_KEY = (identity.KeyPair.generate() for _ in range(3))
ALICE, BOB = identity.KeyPair.generate(), identity.KeyPair.generate()
NODE = Resources(cru=2, mru=8, sru=200)
H = 3600


async def twins(ledger, funding: dict[str, int]) -> int:
    for (name, key), amount in zip(((n, k) for n, k in (("alice", ALICE), ("bob", BOB))), funding.values(), strict=False):
        await ledger.ensure_account(name=name, public_key=key.public_key)
        if amount:
            await ledger.fund(name=name, amount=amount, now=0)
    return sum(funding.values())


async def test_a_capacity_past_the_node_bounds_is_refused_and_changes_nothing(ledger):
    await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=NODE_KEY, resources=NODE)
    await ledger_setup.attest(ledger, node="n0", resources=NODE, ts=10, key=NODE_KEY)
    before = await ledger.attestations()
    huge = Resources(cru=1 << 40, mru=1 << 40, sru=1 << 40, hru=1 << 40)
    with pytest.raises(errors.InvalidRequest, match="at most"):
        await ledger_setup.attest(ledger, node="n0", resources=huge, ts=20, key=NODE_KEY)
    assert await ledger.attestations() == before
    assert units.node_maximum_violations(units.NODE_MAXIMUM) == []


async def test_a_mint_past_the_ledgers_bound_is_that_nodes_alone(ledger):
    """Invariant 6: one payout account at the bound zeroes its node's mint (reason Bounded); the other farm's node
    is minted, and the period is done."""
    cfg = ledger.config
    for farm, node, key in (("farm1", "n0", NODE_KEY), ("farm2", "n1", OTHER_KEY)):
        await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=key, resources=NODE, farm=farm, node=node,
                                         payout_account=f"{farm}-payout")
        await ledger_setup.attest(ledger, node=node, resources=NODE, ts=cfg.minting_epoch + 1, key=key)
    p = minting.period_by_index(minting.period_at(cfg.minting_epoch + 1, epoch=cfg.minting_epoch,
                                                  length=cfg.minting_period_s).index,
                                epoch=cfg.minting_epoch, length=cfg.minting_period_s)
    ts = p.start + 60
    while ts < p.end:  # both nodes up the whole (6 h test) period, above the 95 % SLA
        for node, key in (("n0", NODE_KEY), ("n1", OTHER_KEY)):
            await ledger_setup.report_uptime(ledger, node=node, ts=ts, uptime=ts - p.start + 60, key=key)
        ts += 600
    async with ledger.engine.begin() as conn:  # farm1's payout account holds the most the ledger allows
        await conn.execute(schema.accounts.update().where(schema.accounts.c.name == "ns/farm1-payout")
                           .values(balance=money.MAX_UNITS - 10))
    report = await ledger.mint_period(period=p.index, now=p.end)
    assert report.rows_written == 2
    by_node = {r.node: r for node in ("n0", "n1") for r in await ledger.mint_receipts(node=node)}
    assert (by_node["n0"].amount, by_node["n0"].reason) == (0, "Bounded")
    assert by_node["n1"].amount > 0
    assert (await ledger.get_account(name="ns/farm2-payout")).balance == by_node["n1"].amount


async def test_raising_a_rented_nodes_spec_never_raises_the_rent(ledger):
    await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=NODE_KEY, resources=NODE)
    await ledger_setup.attest(ledger, node="n0", resources=NODE, ts=0, key=NODE_KEY)
    funded = await twins(ledger, {"alice": 1000 * money.UNITS_PER_TFT})
    await ledger.open_contract(key="ns/rent", **ledger_setup.paid_by(ALICE), now=0,
                               request=scheduling.Request(resources=Resources(cru=1, mru=1), dedicated=True))
    await ledger.bill_period(period=0, now=H)
    first = (await ledger.observe_contract(key="ns/rent")).billed_total
    await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=NODE_KEY, now=H,
                                     resources=Resources(cru=1024, mru=1 << 20, sru=1 << 24, hru=1 << 24))
    await ledger.bill_period(period=1, now=2 * H)
    assert (await ledger.observe_contract(key="ns/rent")).billed_total == 2 * first
    await conserved(ledger, funded)


async def test_a_payer_change_never_hands_the_old_payers_debt_to_the_new_one(ledger):
    await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=NODE_KEY, resources=NODE)
    await ledger_setup.attest(ledger, node="n0", resources=NODE, ts=0, key=NODE_KEY)
    funded = await twins(ledger, {"alice": 1, "bob": 1000 * money.UNITS_PER_TFT})
    await ledger.open_contract(key="ns/d", **ledger_setup.paid_by(ALICE), now=0,
                               request=scheduling.Request(resources=Resources(cru=1, mru=2, sru=10)))
    with pytest.raises(errors.Conflict, match="cannot pay its bill up to now"):
        await ledger.authorize_contract(key="ns/d", owner_uid=ledger_setup.OWN.uid, now=H // 2,
                                        proof=records.PayerProof(kind="key", namespace="ns", public_key=BOB.public_key))
    c = await ledger.observe_contract(key="ns/d")
    assert c.payer == "alice" and (await ledger.get_account(name="bob")).balance == 1000 * money.UNITS_PER_TFT
    await conserved(ledger, funded)


async def test_a_registered_node_never_moves_to_a_second_farm(ledger):
    await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=NODE_KEY, resources=NODE)
    await ledger.ensure_farm(owner=ledger_setup.OWN, name="farm2", owner_key=FARMER.public_key, payout_account="f2",
                             certified=False, dedicated=False, public_ips=0)
    with pytest.raises(errors.Conflict, match="farm cannot change"):
        await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=NODE_KEY, resources=NODE, farm="farm2")
    assert (await ledger.observe_node(name="n0")).farm == "farm1"
    async with ledger.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(schema.nodes))).scalar_one() == 1


async def test_a_certified_node_growing_one_percent_at_a_time_drops_to_diy(ledger):
    """§1.3: a change is measured against the capacity the council certified, not the previous report."""
    council = identity.KeyPair.generate()
    base = Resources(cru=8, mru=32, sru=1000, hru=4000)
    await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=NODE_KEY, resources=Resources(
        cru=8, mru=64, sru=2000, hru=8000), certified=True)
    await ledger_setup.attest(ledger, node="n0", resources=base, ts=10, key=NODE_KEY)
    await ledger_setup.certify(ledger, node="n0", certified=True, ts=20, key=council)
    held, ts = base, 30
    for _ in range(5):  # each step +0.8 %: never more than 1 % over the report before it
        held = Resources(cru=8, mru=32, sru=held.sru * 1008 // 1000, hru=held.hru * 1008 // 1000)
        last = await ledger_setup.attest(ledger, node="n0", resources=held, ts=ts, key=NODE_KEY)
        ts += 10
    assert last.certified is False  # 4 % over what was certified: DIY again
