"""Invariant 3 of issue 13 on the ledger: capacity, certification and weight are attested, not declared;
and issue 14's mint receipts. Each adversarial case ends with the conservation check."""

from __future__ import annotations

from fractions import Fraction

import pytest

import ledger_setup
from backend.test_ledger_contract import signed_vote
from ledger_audit import conserved
from tfgrid_operator.backend import errors
from tfgrid_operator.domain import identity, minting, units
from tfgrid_operator.domain.units import Resources

OWNER, NODE_KEY, COUNCIL = identity.KeyPair.generate(), identity.KeyPair.generate(), identity.KeyPair.generate()
ALICE = identity.KeyPair.generate()  # the twin key of the account that pays
COUNCIL_KEYS = frozenset({COUNCIL.public_key})
SMALL = Resources(cru=2, mru=4, sru=100)
BIG = Resources(cru=8, mru=32, sru=1000, hru=4000)
HUGE = Resources(cru=1024, mru=1 << 20, sru=1 << 24, hru=1 << 24)


async def node(ledger, name="n0", resources=SMALL, now=0):
    return await ledger_setup.farm_and_node(ledger, owner_key=OWNER, node_key=NODE_KEY, node=name, resources=resources,
                                            certified=True, now=now)


async def attest(ledger, resources, ts, name="n0", key=NODE_KEY, now=None):
    return await ledger_setup.attest(ledger, node=name, resources=resources, ts=ts, key=key, now=now)


async def certify(ledger, certified, ts, name="n0", key=COUNCIL, now=None):
    return await ledger_setup.certify(ledger, node=name, certified=certified, ts=ts, key=key, council=COUNCIL_KEYS,
                                      now=now)


async def report_all(ledger, start, end, name="n0"):
    for ts in range(start + 2400, end + 1, 2400):
        await ledger_setup.report_uptime(ledger, node=name, ts=ts, uptime=ts - start + 100, key=NODE_KEY)


async def test_capacity_raised_just_before_the_mint_earns_only_the_seconds_it_was_held(ledger):
    p = minting.period_by_index(0, epoch=0, length=ledger.config.minting_period_s)
    await node(ledger)
    await attest(ledger, SMALL, 0)
    # the attack of issue 13: the spec (and even a signed report) raised a minute before the period ends
    await node(ledger, resources=HUGE, now=p.end - 60)
    await attest(ledger, HUGE, p.end - 60)
    await report_all(ledger, 0, p.end)
    report = await ledger.mint_period(period=0, now=p.end)
    held = minting.held_over([minting.Held(0, SMALL, False), minting.Held(p.end - 60, HUGE, False)], p)
    assert held.cu == (units.farming_cu(SMALL) * (p.seconds - 60) + units.farming_cu(HUGE) * 60) / p.seconds
    honest = minting.reward(resources=SMALL, certified=False, state=_full(p), period_seconds=p.seconds,
                            policy=minting.DIY_POLICY)
    assert 0 < report.amount < honest.tft_units * 200  # the declared spec alone would have minted ~60,000×
    receipt = (await ledger.mint_receipts(node="n0"))[0]
    assert receipt.inputs["cu"] == _text(held.cu) and receipt.amount == report.amount
    await conserved(ledger)


def _full(p):
    from tfgrid_operator.domain import uptime

    return uptime.UptimeState(period_start=p.start, total=p.seconds, reports=1)


def _text(x: Fraction) -> str:
    from tfgrid_operator.backend.sql.minting import _exact

    return _exact(x)


async def test_a_node_that_never_attested_mints_nothing_and_weighs_nothing(ledger):
    p = minting.period_by_index(0, epoch=0, length=ledger.config.minting_period_s)
    await node(ledger, resources=BIG)
    await report_all(ledger, 0, p.end)
    report = await ledger.mint_period(period=0, now=p.end)
    assert report.amount == 0
    assert (await ledger.mint_receipts(node="n0"))[0].reason == "NotAttested"
    prop = await ledger.ensure_proposal(key="ns/p", action={"type": "SetPricingPolicy", "pricing": {"cu": 1}},
                                        threshold=5, end_ts=p.end + 10**6)
    with pytest.raises(errors.InvalidRequest, match="FarmHasNoNodes"):  # minted, but nothing attested to weigh
        await ledger.cast_vote(proposal="ns/p", farm="farm1", approve=True, seq=1,
                               signature=signed_vote(prop, "farm1", True, 1, key=OWNER), now=p.end)
    await conserved(ledger)


async def test_dao_weight_is_the_attested_capacity_not_the_spec(ledger):
    await node(ledger, resources=HUGE)
    await attest(ledger, BIG, 0)
    p = await ledger_setup.held_a_period(ledger, {"n0": NODE_KEY})
    opened = await ledger.ensure_proposal(key="ns/p", action={"type": "SetPricingPolicy", "pricing": {"cu": 1}},
                                          threshold=5, end_ts=p.end + 10**6)
    prop = await ledger.cast_vote(proposal="ns/p", farm="farm1", approve=True, seq=1,
                                  signature=signed_vote(opened, "farm1", True, 1, key=OWNER), now=p.end + 5)
    assert prop.votes[0].weight == units.dao_weight(BIG) < units.dao_weight(HUGE)


@pytest.mark.parametrize(("case", "error"), [
    ("forged", errors.BadSignature), ("stale", errors.Replayed), ("future", errors.Replayed),
    ("older", errors.Replayed), ("tiny", errors.InvalidRequest), ("unknown", errors.NotFound),
])
async def test_bad_capacity_reports_are_refused_and_change_nothing(ledger, case, error):
    await node(ledger)
    await attest(ledger, SMALL, 1000)
    before = await ledger.attestations()
    with pytest.raises(error):
        if case == "forged":
            await attest(ledger, BIG, 1100, key=OWNER)
        elif case == "stale":
            await attest(ledger, BIG, 1100, now=1100 + 61)
        elif case == "future":
            await attest(ledger, BIG, 1100 + 61, now=1100)
        elif case == "older":
            await attest(ledger, BIG, 900, now=940)
        elif case == "tiny":
            await attest(ledger, Resources(cru=1, mru=1, sru=10), 1100)
        else:
            await attest(ledger, BIG, 1100, name="ghost")
    assert await ledger.attestations() == before
    await conserved(ledger)


async def test_the_same_capacity_again_is_one_history_entry(ledger):
    await node(ledger)
    first = await attest(ledger, SMALL, 100)
    again = await attest(ledger, SMALL, 2500)
    assert first == again and again.since == 100


async def test_certification_comes_from_the_council_and_drops_on_a_change_over_one_percent(ledger):
    await node(ledger, resources=BIG)  # spec.certified=True: only what the farmer expects
    assert (await ledger.observe_node(name="n0")).certified is False
    with pytest.raises(errors.NotFound):  # nothing attested yet: nothing to certify
        await certify(ledger, True, 50)
    await attest(ledger, BIG, 100)
    with pytest.raises(errors.BadSignature):  # a key that is not the council's
        await certify(ledger, True, 150, key=OWNER)
    cert = await certify(ledger, True, 200)
    assert cert.certified and (await ledger.observe_node(name="n0")).certified is True
    with pytest.raises(errors.Replayed):  # an older certification replayed
        await certify(ledger, False, 199, now=300)
    assert (await ledger.attestations())["n0"].certified
    within = Resources(cru=8, mru=32, sru=1005, hru=4000)  # +0.5 %: still certified
    assert (await attest(ledger, within, 400)).certified
    dropped = await attest(ledger, Resources(cru=8, mru=32, sru=1100, hru=4000), 500)  # +10 %: DIY again (§1.3)
    assert (dropped.certified, dropped.source) == (False, "decertified")
    assert (await ledger.observe_node(name="n0")).certified is False


async def test_certified_only_when_certified_the_whole_period(ledger):
    p = minting.period_by_index(0, epoch=0, length=ledger.config.minting_period_s)
    await node(ledger, resources=BIG)
    await attest(ledger, BIG, 0)
    await certify(ledger, True, 1)
    await report_all(ledger, 0, p.end)
    await ledger.mint_period(period=0, now=p.end)
    r0 = (await ledger.mint_receipts(node="n0"))[0]
    assert r0.inputs["certified"] is False  # uncertified for its first second
    q = minting.period_by_index(1, epoch=0, length=ledger.config.minting_period_s)
    await report_all(ledger, p.end, q.end)
    await ledger.mint_period(period=1, now=q.end)
    r1 = (await ledger.mint_receipts(node="n0"))[0]
    assert (r1.period, r1.inputs["certified"], r1.inputs["policy"]["id"]) == (1, True, 2)
    assert r1.inputs["sla"]["permille"] == minting.SLA_CERTIFIED_PERMILLE
    await conserved(ledger)


async def test_mint_receipt_explains_the_amount(ledger):
    p = minting.period_by_index(0, epoch=0, length=ledger.config.minting_period_s)
    await node(ledger, resources=BIG)
    await attest(ledger, BIG, 0)
    await report_all(ledger, 0, p.end)
    await ledger.mint_period(period=0, now=p.end)
    (r,) = await ledger.mint_receipts(node="n0")
    i = r.inputs
    assert (i["period"], i["start"], i["end"], i["uptimeSeconds"]) == (0, 0, p.end, p.seconds)
    assert (i["cu"], i["su"], i["certifiedFactor"], i["tftConnectionPriceMusd"]) == ("7.75", "22/3", "1", 80)
    assert i["sla"] == {"outcome": "Paid", "reason": "Rewarded", "permille": 950}
    assert i["policy"]["cu"] == 2400 and i["amount"] == r.amount
    full = Fraction(i["cu"]) * 2400 + Fraction(i["su"]) * 1000
    assert r.amount == int(full * i["uptimePermille"] / 1000 * 10**7 / 80)  # §3.5 recomputed from the receipt
    # the stored text is one JSON object: the part nodes of one capacity share and the node's own, every field once
    assert set(i) == {"period", "start", "end", "periodSeconds", "uptimeSeconds", "uptimePermille", "reports",
                      "violation", "cu", "su", "certified", "certifiedFactor", "policy", "sla", "fullMusd",
                      "rewardMusd", "tftConnectionPriceMusd", "amount"}
    assert (i["periodSeconds"], i["violation"], i["certified"]) == (p.seconds, None, False) and i["reports"] > 0
    assert Fraction(i["fullMusd"]) == full and Fraction(i["rewardMusd"]) == full * i["uptimePermille"] / 1000
    assert i["policy"] == {"id": 1, "cu": 2400, "su": 1000, "nu": 30, "ipv4": 5, "minimalUptime": 95, "default": True}
    with pytest.raises(errors.NotFound):
        await ledger.mint_receipts(node="ghost")


async def test_a_version_2_ledger_migrates_to_the_current_version_and_keeps_its_mints(ledger_url):
    import sqlalchemy as sa

    from tfgrid_operator import backend
    from tfgrid_operator.backend import config, schema

    cfg = config.LedgerConfig(minting_epoch=0, minting_period_s=6 * 3600)
    lg = await backend.open_backend(ledger_url, cfg)
    await node(lg)
    await lg.mint_period(period=0, now=6 * 3600)
    async with lg.engine.begin() as conn:  # what a version-2 ledger looked like
        await conn.execute(sa.text("ALTER TABLE mints DROP COLUMN receipt"))
        await conn.execute(sa.text("ALTER TABLE votes DROP COLUMN seq"))
        await conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="2"))
    await lg.close()
    lg = await backend.open_backend(ledger_url, cfg)
    try:
        (old,) = await lg.mint_receipts(node="n0")
        assert (old.period, old.inputs) == (0, {})  # minted before receipts: kept, with no inputs
        await attest(lg, SMALL, 6 * 3600 + 5)
        assert (await lg.attestations())["n0"].resources == SMALL
        async with lg.engine.connect() as conn:
            version = (await conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version"))).scalar()
        assert version == str(schema.SCHEMA_VERSION)
    finally:
        await lg.close()


async def test_placement_never_promises_more_than_the_node_attested(ledger):
    from tfgrid_operator.domain import scheduling

    await node(ledger, resources=BIG)  # the spec says 8 cores, 32 GiB
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)
    await attest(ledger, Resources(cru=2, mru=8, sru=1000, hru=4000), 0)  # the machine has 2 cores, 8 GiB
    with pytest.raises(errors.NoCapacity):
        await ledger.open_contract(key="ns/big", **ledger_setup.paid_by(ALICE),
                                   request=scheduling.Request(resources=Resources(cru=3, mru=4)), now=10)
    c = await ledger.open_contract(key="ns/fits", **ledger_setup.paid_by(ALICE),
                                   request=scheduling.Request(resources=Resources(cru=2, mru=4)), now=10)
    assert c.node == "n0"
    with pytest.raises(errors.NoCapacity):  # nor does a resize
        await ledger.resize_contract(key="ns/fits", owner_uid=ledger_setup.OWN.uid, resources=Resources(cru=2, mru=9),
                                     public_ips=0, now=20)
    await conserved(ledger)
