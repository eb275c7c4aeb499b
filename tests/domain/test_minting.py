from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from tfgrid_operator.domain import minting, uptime
from tfgrid_operator.domain.units import Resources

NODE = Resources(cru=8, mru=32, sru=1000, hru=4000)
P = minting.PERIOD_SECONDS


def _state(total, reports=1, violation=None):
    return uptime.UptimeState(period_start=0, total=total, reports=reports, violation=violation)


def test_worked_example_full_uptime_section_3_5():
    r = minting.reward(resources=NODE, certified=False, state=_state(P), period_seconds=P,
                       policy=minting.DIY_POLICY)
    assert r.full_musd == Fraction(775, 100) * 2400 + (Fraction(4000, 1200) + 4) * 1000  # $25.93
    assert r.tft_units == 3_241_666_666  # 324.17 TFT at 80 mUSD


def test_worked_example_96_and_94_percent():
    r96 = minting.reward(resources=NODE, certified=False, state=_state(-(-P * 96 // 100)), period_seconds=P,
                         policy=minting.DIY_POLICY)
    assert r96.uptime_permille == 960
    assert r96.tft_units == int(r96.full_musd * Fraction(960, 1000) * 10**7 / 80)
    r94 = minting.reward(resources=NODE, certified=False, state=_state(P * 94 // 100), period_seconds=P,
                         policy=minting.DIY_POLICY)
    assert (r94.tft_units, r94.reason) == (0, "BelowSla")


def test_certified_sla_is_98_percent():
    r = minting.reward(resources=NODE, certified=True, state=_state(P * 97 // 100), period_seconds=P,
                       policy=minting.CERTIFIED_POLICY)
    assert r.tft_units == 0


def test_certified_on_policy_1_gets_a_quarter_more():
    diy = minting.reward(resources=NODE, certified=False, state=_state(P), period_seconds=P, policy=minting.DIY_POLICY)
    cert = minting.reward(resources=NODE, certified=True, state=_state(P), period_seconds=P, policy=minting.DIY_POLICY)
    assert cert.full_musd == diy.full_musd * Fraction(5, 4)


def test_violation_zeroes_the_period():
    r = minting.reward(resources=NODE, certified=False, state=_state(P, violation=uptime.Violation.CLOCK_SKEW),
                       period_seconds=P, policy=minting.DIY_POLICY)
    assert (r.tft_units, r.reason) == (0, "ClockSkew")


def test_period_boundaries_section_3_1():
    p = minting.period_by_index(81)
    assert p.start == 1522501000 + 81 * 2630880
    assert minting.period_at(p.start) == p
    assert minting.period_at(p.end - 1) == p
    assert minting.period_at(p.end).index == 82


def test_uptime_fold_regular_reports():
    s = uptime.UptimeState(period_start=1000)
    s = uptime.credit(s, ts=1000 + 2400, uptime=50_000)  # first report: min(uptime, since start, 2460)
    assert s.total == 2400
    s = uptime.credit(s, ts=1000 + 4800, uptime=52_400)
    assert s.total == 4800 and s.violation is None


def test_uptime_gap_is_lost_and_reboot_credited():
    s = uptime.credit(uptime.UptimeState(period_start=0), ts=10_000, uptime=100_000)
    s = uptime.credit(s, ts=20_000, uptime=10_000 + 100_000)  # 10,000 s later: credit at most 2460
    assert s.total == 2460 + 2460
    s = uptime.credit(s, ts=21_000, uptime=500)  # a reboot
    assert s.total == 2460 + 2460 + 500 and s.violation is None


def test_uptime_too_high_is_a_violation():
    s = uptime.credit(uptime.UptimeState(period_start=0), ts=10_000, uptime=5000)
    s = uptime.credit(s, ts=12_400, uptime=5000 + 9999)
    assert s.violation == uptime.Violation.UPTIME_TOO_HIGH


@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 10_000)), max_size=40))
def test_credit_never_exceeds_elapsed_time(steps):
    s = uptime.UptimeState(period_start=0)
    ts = 0
    for dt, up in steps:
        ts += dt
        s = uptime.credit(s, ts=ts, uptime=up)
        assert 0 <= s.total <= ts  # wall time bounds the credit (issue 13, invariant 4)
        assert s.total <= s.reports * uptime.MAX_CREDIT_S


@given(st.integers(0, 2 * P))
def test_reward_monotonic_in_uptime(total):
    a = minting.reward(resources=NODE, certified=False, state=_state(total), period_seconds=P,
                       policy=minting.DIY_POLICY)
    b = minting.reward(resources=NODE, certified=False, state=_state(total + 3600), period_seconds=P,
                       policy=minting.DIY_POLICY)
    assert 0 <= a.tft_units <= b.tft_units
