"""The one money bound and what derives from it (domain/money.py): no input the CRDs allow can make a bill of a
month, and so no overdraft or balance, pass money.MAX_UNITS, which stays far inside int64."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tfgrid_operator import api
from tfgrid_operator.domain import money, pricing
from tfgrid_operator.domain.units import Resources

MONTH = 30 * 86400  # SECS_PER_MONTH (§0): longer than any grace period
FLOOR = pricing.TftPrice(average_musd=pricing.TftPrice().min_musd)  # the §4.3 price floor: the most TFT per USD
NODE_MAX = Resources(1024, 1 << 20, 1 << 24, 1 << 24)  # the Node CRD's maxima


def test_the_bound_leaves_room_in_int64_for_a_sum_of_bounded_amounts():
    assert 9 * money.MAX_UNITS < 2**63 - 1
    assert money.MAX_TFT * money.UNITS_PER_TFT == money.MAX_UNITS


def test_the_schema_bounds_prices_at_the_derived_maximum():
    fields = api.PricingChange.model_fields
    for name in ("cu", "su", "nu", "ipu", "unique_name"):
        assert any(getattr(m, "le", None) == money.MAX_POLICY_PRICE for m in fields[name].metadata), name
    assert api.PricingChange.model_fields["certified_factor_percent"].metadata


prices = st.integers(0, money.MAX_POLICY_PRICE)


@settings(max_examples=300, deadline=None)
@given(cu=prices, su=prices, nu=prices, ipu=prices, factor=st.integers(100, 1000), dedication=st.integers(0, 100),
       cru=st.integers(0, 1024), mru=st.integers(0, 1 << 20), sru=st.integers(0, 1 << 24), hru=st.integers(0, 1 << 24),
       ips=st.integers(0, 64), dedicated=st.booleans(), certified=st.booleans(), musd=st.integers(1, 10**6))
def test_a_months_bill_at_any_allowed_input_stays_within_the_bound(cu, su, nu, ipu, factor, dedication, cru, mru, sru,
                                                                   hru, ips, dedicated, certified, musd):
    policy = pricing.PricingPolicy(cu=cu, su=su, nu=nu, ipu=ipu, unique_name=0,
                                   discount_for_dedication_nodes=dedication, certified_factor_percent=factor)
    bill = pricing.bill(resources=Resources(cru, mru, sru, hru), public_ips=ips, seconds=MONTH, certified=certified,
                        dedicated_node=NODE_MAX if dedicated else None, balance=0, policy=policy,
                        price=pricing.TftPrice(average_musd=musd))  # clamped into [floor, max] as billing does
    assert 0 <= bill.amount <= money.MAX_UNITS


def test_the_worst_case_is_inside_the_bound_and_the_old_schema_maximum_was_not():
    worst = dict(resources=NODE_MAX, public_ips=64, seconds=MONTH, certified=True, dedicated_node=None, balance=0,
                 price=FLOOR)
    at_max = pricing.PricingPolicy(*(money.MAX_POLICY_PRICE,) * 5, discount_for_dedication_nodes=0,
                                   certified_factor_percent=1000)
    assert pricing.bill(policy=at_max, **worst).amount <= money.MAX_UNITS
    at_u32 = pricing.PricingPolicy(*(1 << 32,) * 5, discount_for_dedication_nodes=0, certified_factor_percent=1000)
    assert pricing.bill(policy=at_u32, **worst).amount > 2**63  # what the schema allowed before: int64 overflowed
