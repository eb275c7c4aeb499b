"""Billing version B on both engines: grace expiry at exactly 14 days (§2.4), reserves paid out every 24
cycles and on deletion (§2.7), receipts, settlement of moves and closes (invariant 7), isolation (invariant 6).

Hand-computed amounts: the contract SMALL (2 cores, 4 GiB, 50 GiB SSD, no IP) is CU 1, SU 0.25 →
100,000 + 12,500 = 112,500 units USD an hour → at 20 mUSD (§4.3) 112,500 × 50 = 5,625,000 TFT units.
A payer with 100 TFT has 100 / (0.5625 × 720) = 0.25 months: no discount.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import ledger_setup
from tfgrid_operator import backend
from tfgrid_operator.backend import schema
from tfgrid_operator.domain import identity, money, scheduling
from tfgrid_operator.domain.units import Resources

OWNER = identity.KeyPair.generate()
ALICE = identity.KeyPair.generate()  # the twin key of the account that pays
OWN = ledger_setup.OWN  # the objects these tests act as
NODE = Resources(cru=8, mru=32, sru=1000, hru=4000)
SMALL = Resources(cru=2, mru=4, sru=50)
HOURLY = 5_625_000
H = 3600
TFT = money.UNITS_PER_TFT


async def grid(ledger, farms=("farm1",), now=0):
    """Farms with one node each (n0, n1, …); a node counts as up for 80 min after ``now`` (§1.3)."""
    for i, farm in enumerate(farms):
        await ledger.ensure_farm(owner=OWN, name=farm, owner_key=OWNER.public_key, payout_account=f"{farm}-payout",
                                 certified=False, dedicated=False, public_ips=2)
        await ledger.ensure_node(owner=OWN, name=f"n{i}", farm=farm, resources=NODE, country="BE", city="Ghent", certified=False,
                                 public_key=identity.KeyPair.generate().public_key, now=now)
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)


async def balance(ledger, name):
    return (await ledger.get_account(name=name)).balance


async def open_small(ledger, key="ns/d", now=0, **request):
    return await ledger.open_contract(key=key, **ledger_setup.paid_by(ALICE),
                                      request=scheduling.Request(resources=SMALL, **request), now=now)


async def test_grace_expires_at_the_bill_exactly_14_days_after_it_began(ledger_url):
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig(minting_epoch=0))
    try:
        await grid(lg)
        await open_small(lg)
        await lg.bill_period(period=0, now=H)  # alice has nothing: GracePeriod from H
        assert (await lg.observe_contract(key="ns/d")).grace_since == H
        last = 14 * 24  # the period [14 d, 14 d + 1 h) ends at H + 14 days: now − grace_start = 14 days exactly
        for k in range(1, last):
            await lg.bill_period(period=k, now=(k + 1) * H)
        c = await lg.observe_contract(key="ns/d")
        assert (c.state, c.overdraft) == ("GracePeriod", last * HOURLY)  # 13 days 23 h: still in grace
        await lg.bill_period(period=last, now=(last + 1) * H)
        c = await lg.observe_contract(key="ns/d")
        assert (c.state, c.deleted_reason, c.deleted_at) == ("Deleted", "OutOfFunds", H + 14 * 24 * H)
        assert c.overdraft == (last + 1) * HOURLY  # every hour up to the expiry is billed, none past it
    finally:
        await lg.close()


async def test_reserve_is_paid_out_after_24_cycles_50_40_10(ledger):
    await grid(ledger)
    await ledger.fund(name="alice", amount=100 * TFT, now=0)
    await open_small(ledger)
    for k in range(23):
        await ledger.bill_period(period=k, now=(k + 1) * H)
    c = await ledger.observe_contract(key="ns/d")
    assert (c.reserve, c.cycles) == (23 * HOURLY, 23)
    assert [await balance(ledger, n) for n in ("ns/farm1-payout", "foundation", "staking-pool")] == [0, 0, 0]
    await ledger.bill_period(period=23, now=24 * H)
    # 24 × 5,625,000 = 135,000,000: farmer 50 % = 67,500,000, foundation 40 % = 54,000,000, staking 10 % = 13,500,000
    assert [await balance(ledger, n) for n in ("ns/farm1-payout", "foundation", "staking-pool")] == [
        67_500_000, 54_000_000, 13_500_000]
    c = await ledger.observe_contract(key="ns/d")
    assert (c.reserve, c.cycles) == (0, 0)
    assert await balance(ledger, "alice") == 100 * TFT - 135_000_000
    [payout] = await ledger.payouts(key="ns/d")
    assert (payout.reason, payout.amount, payout.at, payout.farmer_account) == ("Cycles", 135_000_000, 24 * H,
                                                                                "ns/farm1-payout")


async def test_reserve_is_paid_out_on_deletion(ledger):
    await grid(ledger)
    await ledger.fund(name="alice", amount=100 * TFT, now=0)
    await open_small(ledger)
    for k in range(3):
        await ledger.bill_period(period=k, now=(k + 1) * H)
    closed = await ledger.close_contract(key="ns/d", owner_uid=OWN.uid, now=3 * H + H // 2, reason="CanceledByUser")
    # 3 h + 30 min: 3 × 5,625,000 + 2,812,500 = 19,687,500 → farmer floor 50 % = 9,843,750,
    # staking floor 10 % = 1,968,750, foundation the rest = 7,875,000
    assert [await balance(ledger, n) for n in ("ns/farm1-payout", "foundation", "staking-pool")] == [
        9_843_750, 7_875_000, 1_968_750]
    assert (closed.state, closed.reserve, closed.billed_total) == ("Deleted", 0, 19_687_500)
    [payout] = await ledger.payouts(key="ns/d")
    assert (payout.reason, payout.amount, payout.at) == ("Deleted", 19_687_500, 3 * H + H // 2)


async def test_every_bill_keeps_its_receipt(ledger):
    await grid(ledger)
    await ledger.fund(name="alice", amount=2000 * TFT, now=0)
    await open_small(ledger, public_ips=1)
    await ledger.bill_period(period=0, now=H)
    [bill] = await ledger.bills(key="ns/d")
    # §2.6 worked example at 20 mUSD: 152,500 units USD → 7,625,000 gross; 2000 TFT = 3.64 months → Bronze ×0.7
    assert (bill.start, bill.until, bill.seconds, bill.amount, bill.paid) == (0, H, H, 5_337_500, 5_337_500)
    r = bill.receipt
    assert (r["cu"], r["su"], r["publicIPs"], r["costUnitsUsd"], r["gross"], r["balance"]) == (
        "1", "0.25", 1, 152_500, 7_625_000, 2000 * TFT)
    assert (r["discount"], r["discountPercent"], r["discounted"], r["certifiedPercent"], r["amount"]) == (
        "Bronze", 70, 5_337_500, 100, 5_337_500)
    assert r["tftPrice"] == {"averageMusd": 20, "minMusd": 20, "maxMusd": 2000, "usedMusd": 20, "clamped": False}
    assert (r["prices"]["cu"], r["prices"]["su"], r["prices"]["ipu"]) == (100_000, 50_000, 40_000)
    assert (r["overdraftBefore"], r["owed"], r["overdraftAfter"], r["cycle"]) == (0, 5_337_500, 0, 1)
    assert await ledger.bills(key="ns/d", period=1) == [] and await ledger.bills(key="ns/other") == []


async def test_a_move_in_grace_charges_the_overdraft_once(ledger):
    await grid(ledger, farms=("farm1", "farm2"), now=H)
    await ledger.fund(name="alice", amount=HOURLY // 2, now=0)  # half an hour's worth
    await open_small(ledger, node="n0")
    await ledger.bill_period(period=0, now=H)  # pays 2,812,500, owes 2,812,500: GracePeriod
    await ledger.fund(name="alice", amount=4 * HOURLY, now=0)
    moved = await ledger.move_contract(key="ns/d", request=scheduling.Request(resources=SMALL, node="n1"),
                                       now=H + H // 2)
    # the final bill [H, 1.5 H) = 2,812,500 plus the debt 2,812,500 is paid from 22,500,000: nothing is carried
    assert (moved.state, moved.overdraft, moved.node) == ("Created", 0, "n1")
    assert await balance(ledger, "alice") == 4 * HOURLY - HOURLY // 2 - HOURLY // 2
    # the old contract's reserve (everything it took) went to farm1's farmer at the move
    assert await balance(ledger, "ns/farm1-payout") == (HOURLY // 2 + HOURLY) // 2
    await ledger.bill_period(period=1, now=2 * H)  # the new contract: [1.5 H, 2 H) only
    assert await balance(ledger, "alice") == 4 * HOURLY - HOURLY // 2 - HOURLY // 2 - HOURLY // 2


async def test_a_move_whose_final_bill_is_unpaid_carries_the_debt(ledger):
    await grid(ledger, farms=("farm1", "farm2"), now=H)
    await ledger.fund(name="alice", amount=HOURLY, now=0)
    await open_small(ledger, node="n0")
    await ledger.bill_period(period=0, now=H)  # paid in full, alice is at 0
    moved = await ledger.move_contract(key="ns/d", request=scheduling.Request(resources=SMALL, node="n1"),
                                       now=H + H // 2)
    assert (moved.state, moved.overdraft, moved.grace_since) == ("GracePeriod", HOURLY // 2, H + H // 2)
    await ledger.fund(name="alice", amount=10 * HOURLY, now=0)
    await ledger.bill_period(period=1, now=2 * H)  # the new half hour plus the carried debt
    assert (await ledger.observe_contract(key="ns/d")).overdraft == 0
    assert await balance(ledger, "alice") == 10 * HOURLY - HOURLY
    bills = await ledger.bills(key="ns/d")
    assert sum(b.amount for b in bills) == sum(b.paid for b in bills) == 2 * HOURLY  # every unit charged once


async def test_a_move_after_the_grace_ran_out_deletes_instead(ledger):
    await grid(ledger, farms=("farm1", "farm2"), now=4 * H)
    await open_small(ledger, node="n0")
    await ledger.bill_period(period=0, now=H)  # GracePeriod from H; the fixture's grace is 3 h
    gone = await ledger.move_contract(key="ns/d", request=scheduling.Request(resources=SMALL, node="n1"),
                                      now=4 * H + 10)
    assert (gone.state, gone.deleted_reason, gone.created, gone.node) == ("Deleted", "OutOfFunds", False, "n0")
    assert gone.overdraft == 4 * HOURLY  # billed up to the expiry at 4 H, not the 10 s past it


async def test_a_contract_whose_payout_would_overflow_is_isolated(ledger_url):
    """Invariant 6: a contract whose amounts would leave int64 is not billed and says why; the others are."""
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig(minting_epoch=0, distribution_frequency=1))
    try:
        await grid(lg, farms=("farm1", "farm2"))
        await lg.fund(name="alice", amount=100 * TFT, now=0)
        await open_small(lg, key="ns/a", node="n0")
        await open_small(lg, key="ns/b", node="n1")
        async with lg.engine.begin() as conn:  # farm1's payout account holds nearly the most int64 can
            await conn.execute(schema.accounts.update().where(schema.accounts.c.name == "ns/farm1-payout")
                               .values(balance=schema.MONEY_MAX - 10))
        report = await lg.bill_period(period=0, now=H)
        assert report.rows_written == 1 and "ns/a" in report.changed
        a, b = await lg.observe_contract(key="ns/a"), await lg.observe_contract(key="ns/b")
        assert "bound" in a.billing_error and (a.billed_total, a.reserve) == (0, 0)
        assert (b.billing_error, b.billed_total) == (None, HOURLY)
        assert await balance(lg, "alice") == 100 * TFT - HOURLY  # only b was charged
        assert await balance(lg, "ns/farm2-payout") == HOURLY // 2
        assert await balance(lg, "ns/farm1-payout") == schema.MONEY_MAX - 10
    finally:
        await lg.close()


async def test_a_version_2_ledger_is_migrated_to_reserves_and_receipts(ledger_url):
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig(minting_epoch=0))
    await grid(lg)
    await lg.fund(name="alice", amount=100 * TFT, now=0)
    await open_small(lg)
    await lg.bill_period(period=0, now=H)
    async with lg.engine.begin() as conn:  # back to version 2: no reserve, cycles, receipts
        for column in ("reserve", "cycles", "billing_error", "last_bill_amount"):
            await conn.execute(sa.text(f"ALTER TABLE contracts DROP COLUMN {column}"))
        await conn.execute(sa.text("CREATE TABLE bills_v2 AS SELECT contract_id, period, until, seconds, amount, paid, "
                                   "discount, billed_at FROM bills"))
        await conn.execute(sa.text("DROP TABLE bills"))
        await conn.execute(sa.text("ALTER TABLE bills_v2 RENAME TO bills"))
        await conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="2"))
    await lg.close()
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig(minting_epoch=0))
    try:
        c = await lg.observe_contract(key="ns/d")
        assert (c.reserve, c.cycles, c.last_bill_amount, c.billed_total) == (0, 0, HOURLY, HOURLY)
        [old] = await lg.bills(key="ns/d")
        assert (old.amount, old.receipt) == (HOURLY, {})
        await lg.bill_period(period=1, now=2 * H)
        assert (await lg.bills(key="ns/d", period=1))[0].receipt["gross"] == HOURLY
    finally:
        await lg.close()


@pytest.mark.parametrize("reason", ["CanceledByUser"])
async def test_a_close_with_an_unpaid_final_bill_keeps_the_debt_on_record(ledger, reason):
    await grid(ledger)
    await ledger.fund(name="alice", amount=HOURLY // 4, now=0)
    await open_small(ledger)
    closed = await ledger.close_contract(key="ns/d", owner_uid=OWN.uid, now=H // 2, reason=reason)
    assert (closed.state, closed.billed_total, closed.overdraft) == ("Deleted", HOURLY // 2, HOURLY // 4)
    assert await balance(ledger, "alice") == 0
    assert await balance(ledger, "ns/farm1-payout") == HOURLY // 8  # 1,406,250 reserve → 703,125 to the farmer


@pytest.mark.parametrize("version", ["5", "6"])
async def test_bills_written_out_before_schema_7_keep_their_receipts(ledger_url, version):
    """Schema 7 keeps a receipt's shared steps once (bill_quotes); a bill made before (schema 4 to 6) wrote them on
    its own row, and reads back the same after the upgrade (from 5 through 6 to 7, or from 6)."""
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig(minting_epoch=0))
    await grid(lg)
    await lg.fund(name="alice", amount=2000 * TFT, now=0)
    await open_small(lg, public_ips=1)
    await lg.bill_period(period=0, now=H)
    [made] = await lg.bills(key="ns/d")
    shared = ("cru", "mru", "sru", "hru", "public_ips", "rented", "cu_milli", "su_milli", "cost_usd", "gross",
              "discount_percent", "discounted", "certified_percent")
    async with lg.engine.begin() as conn:  # the bill as schema 5 or 6 wrote it: the steps on its row, no quote
        b, q = schema.bills, schema.bill_quotes
        quote = (await conn.execute(sa.select(q))).one()
        await conn.execute(b.update().values(quote_id=None, rates_id=quote.rates_id,
                                             **{name: getattr(quote, name) for name in shared}))
        await conn.execute(q.delete())
        await conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version").values(value=version))
    await lg.close()
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig(minting_epoch=0))
    try:
        assert await lg.bills(key="ns/d") == [made]
        await lg.bill_period(period=1, now=2 * H)
        old, new = await lg.bills(key="ns/d")
        assert old == made and new.receipt["gross"] == made.receipt["gross"] and new.receipt["cycle"] == 2
    finally:
        await lg.close()
