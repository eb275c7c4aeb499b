from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfgrid_operator.domain import billing, money, pricing
from tfgrid_operator.domain.units import Resources

POLICY = pricing.PricingPolicy()
PRICE_10 = pricing.TftPrice(average_musd=10, min_musd=10, max_musd=1000)  # the example's price (dev bounds)


def _bill(balance, certified=False, seconds=3600):
    return pricing.bill(resources=Resources(cru=2, mru=4, sru=50), public_ips=1, seconds=seconds,
                        certified=certified, dedicated_node=None, balance=balance, policy=POLICY, price=PRICE_10)


def test_worked_example_section_2_6():
    b = _bill(balance=2000 * money.UNITS_PER_TFT)
    assert b.cost_units_usd == 152_500
    assert b.gross == 15_250_000  # 1.525 TFT
    assert b.discount == pricing.DiscountLevel.DEFAULT
    assert b.amount == 12_200_000  # 1.22 TFT


def test_worked_example_certified_version_b():
    assert _bill(balance=2000 * money.UNITS_PER_TFT, certified=True).amount == 15_250_000


@pytest.mark.parametrize(("months", "level", "amount"), [
    (Fraction(1), pricing.DiscountLevel.NONE, 15_250_000),
    (Fraction(3, 2), pricing.DiscountLevel.DEFAULT, 12_200_000),
    (Fraction(3), pricing.DiscountLevel.BRONZE, 10_675_000),
    (Fraction(6), pricing.DiscountLevel.SILVER, 9_150_000),
    (Fraction(18), pricing.DiscountLevel.GOLD, 6_100_000),
])
def test_each_discount_level(months, level, amount):
    monthly = Fraction(15_250_000) * 720  # 1.525 TFT per hour × 720 h
    b = _bill(balance=int(monthly * months))
    assert (b.discount, b.amount) == (level, amount)


def test_price_is_clamped_section_4_3():
    assert pricing.TftPrice(average_musd=1, min_musd=20, max_musd=2000).effective() == 20
    assert pricing.TftPrice(average_musd=9000).effective() == 2000


def test_rent_contract_pays_half_the_node():
    node = Resources(cru=8, mru=32, sru=1000)
    full = pricing.contract_cost_units_usd(resources=node, public_ips=0, seconds=3600, policy=POLICY)
    assert pricing.rent_cost_units_usd(node_resources=node, seconds=3600, policy=POLICY) == full / 2


@given(st.integers(0, 10**15))
def test_split_adds_up_and_follows_50_40_10(amount):
    s = billing.split(amount)
    assert s.farmer + s.foundation + s.staking_pool == amount
    assert s.farmer == amount // 2 and s.staking_pool == amount // 10


@given(st.integers(1, 64), st.integers(1, 256), st.integers(0, 4000), st.integers(0, 3), st.integers(1, 7200),
       st.integers(0, 10**13))
def test_bill_never_exceeds_gross_without_certification(cru, mru, sru, ips, seconds, balance):
    b = pricing.bill(resources=Resources(cru, mru, sru), public_ips=ips, seconds=seconds, certified=False,
                     dedicated_node=None, balance=balance, policy=POLICY, price=pricing.TftPrice())
    assert 0 <= b.amount <= b.gross


@given(st.integers(0, 10**12), st.integers(0, 10**12))
def test_more_balance_never_costs_more(low, extra):
    a = _bill(balance=low)
    b = _bill(balance=low + extra)
    assert b.amount <= a.amount


def test_negative_input_is_refused():
    with pytest.raises(ValueError):
        _bill(balance=0, seconds=-1)
    with pytest.raises(ValueError):
        billing.split(-1)


def test_money_parse_and_format_roundtrip():
    assert money.parse_tft("1.22") == 12_200_000
    assert money.tft(12_200_000) == "1.22"
    for bad in ["", "-1", "1.2.3", "1.12345678", "abc"]:
        with pytest.raises(ValueError):
            money.parse_tft(bad)


@given(st.integers(0, 10**15))
def test_money_roundtrip_property(units_):
    assert money.parse_tft(money.tft(units_)) == units_


def test_the_conversion_is_rounded_before_the_discount_section_2_6():
    """4 s of the worked example's contract at 20 mUSD: 152,500 × 4/3600 = 169.44 units USD → ×50 =
    8,472.22 TFT units, rounded first to 8,472. Bronze (2000 TFT is 3.6 months) ×0.7 = 5,930.4 → 5,930.
    Rounding once at the end would give 8,472.22 × 0.7 = 5,930.56 → 5,931: the two orders differ."""
    b = pricing.bill(resources=Resources(cru=2, mru=4, sru=50), public_ips=1, seconds=4, certified=False,
                     dedicated_node=None, balance=2000 * money.UNITS_PER_TFT, policy=POLICY, price=pricing.TftPrice())
    assert (b.gross, b.discount, b.discount_percent, b.discounted, b.amount) == (
        8_472, pricing.DiscountLevel.BRONZE, 70, 5_930, 5_930)
    certified = pricing.bill(resources=Resources(cru=2, mru=4, sru=50), public_ips=1, seconds=4, certified=True,
                             dedicated_node=None, balance=2000 * money.UNITS_PER_TFT, policy=POLICY,
                             price=pricing.TftPrice())
    assert (certified.discounted, certified.certified_percent, certified.amount) == (5_930, 125, 7_413)  # 7,412.5 ↑


@given(st.integers(1, 64), st.integers(1, 256), st.integers(0, 4000), st.integers(0, 3), st.integers(1, 7200),
       st.integers(0, 10**13), st.booleans())
def test_each_step_rounds_the_one_before(cru, mru, sru, ips, seconds, balance, certified):
    b = pricing.bill(resources=Resources(cru, mru, sru), public_ips=ips, seconds=seconds, certified=certified,
                     dedicated_node=None, balance=balance, policy=POLICY, price=pricing.TftPrice())
    usd = pricing.contract_cost_units_usd(resources=Resources(cru, mru, sru), public_ips=ips, seconds=seconds,
                                          policy=POLICY)
    assert b.gross == money.round_half_up(pricing.usd_to_tft_units(usd, pricing.TftPrice()))
    assert b.discounted == money.round_half_up(Fraction(b.gross * b.discount_percent, 100))
    assert b.amount == money.round_half_up(Fraction(b.discounted * b.certified_percent, 100))


def test_prices_at_the_schema_maximum_are_exact_integers():
    top = pricing.PricingPolicy(cu=2**32, su=2**32, ipu=2**32)
    b = pricing.bill(resources=Resources(cru=1024, mru=4096, sru=10**6, hru=10**7), public_ips=64, seconds=3600,
                     certified=True, dedicated_node=None, balance=0, policy=top,
                     price=pricing.TftPrice(average_musd=1, min_musd=1, max_musd=1))
    # exact, and a month of one such contract passes int64: the ledger bounds every sum per contract (invariant 6)
    assert isinstance(b.amount, int) and b.amount * 720 > 2**63
