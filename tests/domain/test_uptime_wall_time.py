"""Invariant 4 of issue 13: uptime credit never exceeds wall time, whatever the reports claim (§3.3)."""

from hypothesis import given
from hypothesis import strategies as st

from tfgrid_operator.domain import uptime

START = 1_000


def fold(reports, start=START):
    s = uptime.UptimeState(period_start=start)
    for ts, up in reports:
        s = uptime.credit(s, ts=ts, uptime=up)
    return s


# a step: seconds since the last report, and either a continued uptime (Δu = Δt + jitter) or a reboot
STEP = st.tuples(st.integers(0, 5000), st.one_of(
    st.tuples(st.just("up"), st.integers(-120, 120)), st.tuples(st.just("reboot"), st.integers(0, 5000)),
    st.tuples(st.just("any"), st.integers(0, 1_000_000))))


@given(st.lists(STEP, max_size=80), st.integers(0, 5000), st.integers(0, 100_000))
def test_credit_never_exceeds_elapsed_time_for_any_reports(steps, first, first_uptime):
    s = uptime.UptimeState(period_start=START)
    ts, up, first_ts = START + first, first_uptime, START + first
    s = uptime.credit(s, ts=ts, uptime=up)
    for dt, (mode, x) in steps:
        ts += dt
        up = max(0, up + dt + x) if mode == "up" else min(x, dt) if mode == "reboot" else x
        s = uptime.credit(s, ts=ts, uptime=up)
        assert 0 <= s.total <= ts - START  # never more than the wall time since the period began
        # ... nor more than the time between the first and last accepted reports plus one report's credit
        assert s.total <= s.last_ts - first_ts + uptime.MAX_CREDIT_S


def test_fast_reports_alternating_with_reboots_earn_at_most_the_elapsed_time():
    """The attack of issue 13: Δu = Δt + 60 ("within grace"), then a "reboot" resetting the boot time."""
    ts, up = START + 2400, 2400
    reports = [(ts, up)]
    for i in range(270):  # 540 s of wall time, one report every 2 s
        ts += 2
        up = 1 if i % 2 else up + 2 + 60
        reports.append((ts, up))
    s = fold(reports)
    assert s.violation is None
    assert s.total <= 2400 + 540  # chain rules alone credited about 16 times the elapsed time here


def test_reports_sooner_than_the_minimum_interval_add_nothing():
    s = fold([(START + 2400, 5000)])
    same = uptime.credit(s, ts=START + 2400 + uptime.MIN_INTERVAL_S - 1, uptime=5000 + 59)
    assert same == s
    later = uptime.credit(s, ts=START + 4800, uptime=7400)
    assert later.total == s.total + 2400 and later.reports == 2


def test_a_node_whose_clock_runs_fast_is_credited_the_wall_time_not_its_claim():
    s = fold([(START + 2400, 5000), (START + 4800, 5000 + 2460)])  # Δu = Δt + 60: within §3.3's grace
    assert s.violation is None and s.total == 2400 + 2400


def test_a_reboot_claiming_more_than_the_gap_is_a_violation():
    s = fold([(START + 2400, 5000), (START + 4800, 3000)])  # "rebooted" 3000 s ago, but reported 2400 s ago
    assert s.violation == uptime.Violation.INVALID_REBOOT
    s = fold([(START + 2400, 5000), (START + 4800, 2000)])  # a real reboot 2000 s ago: credited 2000
    assert (s.violation, s.total) == (None, 2400 + 2000)
