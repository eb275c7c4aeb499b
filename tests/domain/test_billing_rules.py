"""The billing rules (domain/billing.py) as properties: settlement conserves money to the unit and never goes
negative, the grace window expires exactly at now − grace_start ≥ grace, the payout split adds up, a funding
pays its payer's debts oldest first, and the batch core bills a period exactly as a plain contract-by-contract
reading of the rules does (the discount of each bill read from the payer's balance after the bill before it)."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tfgrid_operator.domain import billing, money, pricing
from tfgrid_operator.domain.units import Resources

MAX = money.MAX_UNITS
amounts = st.integers(0, MAX)


@given(amounts, amounts, amounts)
def test_settlement_conserves_to_the_unit_and_never_goes_negative(amount, overdraft, balance):
    paid, left = billing.settle(amount, overdraft, balance)
    assert paid + left == amount + overdraft  # every unit owed is paid or still owed, once
    assert 0 <= paid <= balance and left >= 0  # the balance never goes below zero
    assert left == 0 or paid == balance  # what is not paid is only what the balance could not cover


@given(st.integers(0, 10**9), st.integers(1, 10**7), st.integers(0, 10**9), st.integers(0, 10**7))
def test_grace_expires_exactly_when_now_minus_start_reaches_the_grace(since, grace, window_start, length):
    window_end = window_start + length
    at = billing.deletion_at(billing.GRACE_PERIOD, since, True, window_start, window_end, grace)
    if since + grace <= window_end:  # §2.4: now − grace_start ≥ grace at the window's end
        assert at == max(window_start, since + grace)  # billed up to the expiry, never before the window
    else:
        assert at is None
    # paid in full, or not in grace: never deleted
    assert billing.deletion_at(billing.GRACE_PERIOD, since, False, window_start, window_end, grace) is None
    assert billing.deletion_at(billing.CREATED, since, True, window_start, window_end, grace) is None


def test_grace_boundary_to_the_second():
    grace = 14 * 24 * 3600
    assert billing.deletion_at(billing.GRACE_PERIOD, 100, True, 0, 100 + grace, grace) == 100 + grace
    assert billing.deletion_at(billing.GRACE_PERIOD, 100, True, 0, 99 + grace, grace) is None


@given(st.sampled_from(billing.LIVE), st.one_of(st.none(), st.integers(0, 10**6)), st.integers(0, 10**6),
       st.integers(0, 10**6), st.booleans())
def test_the_state_machine(state, since, overdraft, at, deleted):
    since = None if state == billing.CREATED else since
    new, grace = billing.after_bill(state, since, overdraft, at, deleted)
    if deleted:
        assert new == billing.DELETED
    elif overdraft > 0:
        assert new == billing.GRACE_PERIOD
        assert grace == (at if state == billing.CREATED else since)  # the grace starts once, at the first short bill
    else:
        assert (new, grace) == (billing.CREATED, None)  # recovered on a bill paid in full


@given(amounts)
def test_split_adds_up_to_the_reserve(amount):
    shares, gains = billing.payout_gains(amount, farmer=1, foundation=2, staking=3)
    assert shares.farmer + shares.foundation + shares.staking_pool == amount == sum(gains.values())
    assert (shares.farmer, shares.staking_pool) == (amount // 2, amount // 10)
    _, same = billing.payout_gains(amount, farmer=2, foundation=2, staking=3)  # one account, two shares
    assert same == {2: shares.farmer + shares.foundation, 3: shares.staking_pool}


@given(st.lists(st.integers(1, MAX), max_size=6), st.integers(1, MAX))
def test_a_funding_pays_its_payers_debts_oldest_first_and_no_unit_twice(overdrafts, amount):
    taken = billing.debt_taken(overdrafts, amount)
    assert len(taken) == len(overdrafts) and sum(taken) == min(amount, sum(overdrafts))
    assert all(0 <= t <= owed for t, owed in zip(taken, overdrafts, strict=True))
    for i, t in enumerate(taken):  # a debt is paid in part only when nothing is left for the later ones
        assert t == overdrafts[i] or all(later == 0 for later in taken[i + 1:])


@given(st.integers(0, 10**12), st.integers(1, 10**6), st.integers(0, 10**20))
def test_discount_floors_are_discount_level_solved_for_the_balance(due, seconds, balance):
    floors = pricing.discount_floors(amount_due=due, seconds=seconds)
    expected = pricing.discount_level(balance=balance, amount_due=due, seconds=seconds)
    assert next(((level, factor) for floor, level, factor in floors if balance >= floor),
                (pricing.DiscountLevel.NONE, 1)) == expected
    for floor, level, _factor in floors:  # and each floor is the least such balance
        assert pricing.discount_level(balance=floor, amount_due=due, seconds=seconds)[0] == level
        assert pricing.discount_level(balance=floor - 1, amount_due=due, seconds=seconds)[0] != level


# ---------------------------------------------------------------- the batch against the rules read plainly
H = 3600
POLICY, PRICE = pricing.PricingPolicy(), pricing.TftPrice()
FOUNDATION, STAKING, FARMERS, PAYERS = 90, 91, (80, 81), (1, 2, 3)
SHAPES = ((1, 2, 25, 0), (2, 4, 50, 0), (4, 8, 100, 100), (1, 1, 0, 1200))


@st.composite
def contracts(draw):
    rows = []
    for cid in draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=12, unique=True)):
        state = draw(st.sampled_from(billing.LIVE))
        rows.append(billing.ContractRow(
            cid, draw(st.sampled_from(PAYERS)), draw(st.sampled_from(FARMERS)), *draw(st.sampled_from(SHAPES)),
            draw(st.integers(0, 2)), draw(st.booleans()), draw(st.booleans()), state,
            draw(st.integers(0, 2 * H)), draw(st.integers(0, 2 * H)) if state == billing.GRACE_PERIOD else None,
            draw(st.sampled_from((0, 0, 0, 1, 5_000_000, 5_000_000, MAX - 10))),  # overdraft (near the bound: refused)
            draw(st.sampled_from((0, 0, 7, 3_000_000, MAX))),  # reserve
            draw(st.integers(0, 3)), draw(st.sampled_from((0, 0, 10**9, MAX - 1))),  # cycles, billed total
            draw(st.sampled_from((None, "billing period 1: an old reason"))),
            draw(st.sampled_from((None, H, H + 1200, 2 * H))),
            draw(st.sampled_from((None, None, H + 600, H + 1200, 2 * H, 3 * H)))))  # a grant's end, or a key
    return rows


balances_st = st.fixed_dictionaries({
    # from nothing through each discount level (a small contract costs ~5·10^9 units a month) to the bound
    **{p: st.sampled_from((0, 1, 3_000_000, 10**9, 8 * 10**9, 2 * 10**10, 4 * 10**10, 10**11, 10**15, MAX))
       for p in PAYERS},
    **{a: st.sampled_from((0, 0, 10**9, MAX - 1)) for a in (*FARMERS, FOUNDATION, STAKING)}})


def _reference(rows, balances, run):
    """Each contract on its own, in id order, straight from the rules and pricing.bill (no shared quotes)."""
    bal, out = dict(balances), {}
    for r in sorted(rows, key=lambda r: r.id):
        start = max(run.start, r.created_at, run.start if r.billed_until is None else r.billed_until)
        end = run.until if r.proof_until is None else min(run.until, r.proof_until)  # no bill past a grant's end
        if start >= end and (r.billed_until is not None or end < run.until):
            continue
        res = Resources(r.cru, r.mru, r.sru, r.hru)

        def price(seconds, r=r, res=res):
            return pricing.bill(resources=res, public_ips=r.public_ips, seconds=seconds, certified=r.certified,
                                dedicated_node=res if r.dedicated else None, balance=bal[r.payer], policy=POLICY,
                                price=PRICE)
        deleted, reason = None, None
        b = price(max(0, end - start))
        if r.state == billing.GRACE_PERIOD and b.amount + r.overdraft > bal[r.payer] and r.grace_since + run.grace_s <= end:
            end = deleted = max(start, r.grace_since + run.grace_s)
            reason = billing.OUT_OF_FUNDS
            b = price(end - start)
        elif r.proof_until is not None and r.proof_until <= run.until:  # its grant ends here: so does the contract
            deleted, reason = end, billing.GRANT_EXPIRED
        owed = b.amount + r.overdraft
        paid = min(owed, bal[r.payer])
        reserve = r.reserve + paid
        cycles = r.cycles + (run.until == run.end)
        if owed > MAX or r.billed_total + b.amount > MAX or reserve > MAX:
            out[r.id] = "refused"
            continue
        moves = {r.payer: -paid}
        if deleted is not None or cycles >= run.frequency:
            farmer, foundation = reserve // 2, reserve - reserve // 2 - reserve // 10
            for aid, share in ((r.farmer, farmer), (FOUNDATION, foundation), (STAKING, reserve // 10)):
                moves[aid] = moves.get(aid, 0) + share
            if any(bal[aid] + m > MAX for aid, m in moves.items()):
                out[r.id] = "refused"
                continue
            reserve, cycles = 0, 0
        for aid, m in moves.items():
            bal[aid] += m
        state = billing.DELETED if deleted is not None else (
            billing.GRACE_PERIOD if owed > paid else billing.CREATED)
        grace = None if owed == paid else (end if r.state == billing.CREATED else r.grace_since)
        out[r.id] = (end, max(0, end - start), b.amount, str(b.discount), paid, owed - paid, reserve, cycles, state, grace,
                     deleted, reason)
    return out, bal


@settings(max_examples=300, deadline=None)
@given(contracts(), balances_st, st.sampled_from((H, H + 600, 2 * H)), st.integers(1, 3), st.sampled_from((H, 3 * H)))
@example([billing.ContractRow(1, 1, 80, 1, 2, 25, 0, 0, False, True, billing.CREATED, 0, None, 0, 0, 0, 0, None, None),
          billing.ContractRow(2, 1, 80, 1, 2, 25, 0, 0, False, True, billing.CREATED, 0, None, 0, 0, 0, 0, None, None)],
         {1: 10**13, 2: 0, 3: 0, 80: 0, 81: 0, 90: 0, 91: 0}, 2 * H, 24, H)
def test_the_batch_bills_as_the_rules_read_plainly(rows, balances, until, frequency, grace):
    run = billing.Run(period=1, start=H, end=2 * H, until=until, now=2 * H, grace_s=grace, frequency=frequency,
                      foundation=FOUNDATION, staking=STAKING, policy=POLICY, price=PRICE)
    batch = billing.bill_batch(rows, balances, run, first_quote_id=7)
    expected, expected_balances = _reference(rows, balances, run)
    quotes = {q.id: q for q in batch.quotes}
    got = {}
    for bill, update in zip(batch.bills, batch.updates, strict=True):
        cid, period, until_, seconds, amount, paid, discount, _now, quote, balance, overdraft, _cycle = bill
        assert update[-1] == cid and (period, quotes[quote].amount, quotes[quote].discount) == (1, amount, discount)
        _amount, _discount, left, reserve, cycles, _at, _cid = update
        row = next(r for r in rows if r.id == cid)
        state, grace, deleted, reason = next((t[:4] for t in batch.transitions if t[-1] == cid),
                                             (row.state, row.grace_since, None, None))
        got[cid] = (until_, seconds, amount, discount, paid, left, reserve, cycles, state, grace, deleted, reason)
        assert paid + left == amount + overdraft and balance >= paid >= 0 and left >= 0
    got.update({cid: "refused" for cid, _message in batch.refused})
    for r in rows:  # a refusal whose reason is already on the contract is not repeated
        if expected.get(r.id) == "refused" and r.id not in got and r.billing_error is not None:
            got[r.id] = "refused"
    assert got == expected
    assert batch.balances == expected_balances
    # money is conserved to the unit: what left the balances sits in the reserves
    before = sum(balances.values()) + sum(r.reserve for r in rows if got.get(r.id) not in (None, "refused"))
    after = sum(batch.balances.values()) + sum(u[3] for u in batch.updates)
    assert before == after and min(batch.balances.values()) >= 0
    assert sum(p[3] for p in batch.payouts) == sum(p[5] + p[6] + p[7] for p in batch.payouts)


def test_a_rerun_bills_nothing():
    row = billing.ContractRow(1, 1, 80, 1, 2, 25, 0, 0, False, False, billing.CREATED, 0, None, 0, 0, 0, 0, None, 2 * H)
    run = billing.Run(period=1, start=H, end=2 * H, until=2 * H, now=2 * H, grace_s=H, frequency=24,
                      foundation=FOUNDATION, staking=STAKING, policy=POLICY, price=PRICE)
    batch = billing.bill_batch([row], {1: 10**9, 80: 0, 90: 0, 91: 0}, run)
    assert (batch.bills, batch.skipped, batch.balances[1]) == ([], 1, 10**9)
