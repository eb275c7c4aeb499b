"""Time-weighted attested capacity (issue 13, invariant 3): a capacity counts for the seconds it was held."""

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from tfgrid_operator.domain import minting, units
from tfgrid_operator.domain.units import Resources

P = minting.Period(index=0, start=1000, end=1000 + 21_600)
RES = st.builds(Resources, st.integers(1, 1024), st.integers(2, 1 << 20), st.integers(0, 1 << 24),
                st.integers(0, 1 << 24))
HELD = st.lists(st.builds(minting.Held, st.integers(0, 30_000), RES, st.booleans()), max_size=8)


@given(HELD)
def test_held_units_are_bounded_by_the_largest_capacity_held(history):
    held = minting.held_over(history, P)
    assert 0 <= held.cu <= max((units.farming_cu(h.resources) for h in history), default=Fraction(0))
    assert 0 <= held.su <= max((units.farming_su(h.resources) for h in history), default=Fraction(0))


@given(RES, RES, st.integers(1, P.seconds - 1))
def test_a_raise_counts_only_for_the_seconds_after_it(before, after, at):
    held = minting.held_over([minting.Held(0, before, False), minting.Held(P.start + at, after, False)], P)
    share = Fraction(P.seconds - at, P.seconds)
    assert held.cu == units.farming_cu(before) * (1 - share) + units.farming_cu(after) * share
    assert not held.certified


def test_certified_only_for_a_whole_period_and_nothing_before_the_first_attestation():
    r = Resources(8, 32, 1000, 4000)
    assert minting.held_over([minting.Held(P.start, r, True)], P) == minting.FarmingUnits.of(r, True)
    late = minting.held_over([minting.Held(P.start + P.seconds // 2, r, True)], P)
    assert (late.cu, late.certified) == (units.farming_cu(r) / 2, False)
    assert minting.held_over([], P) == minting.FarmingUnits(Fraction(0), Fraction(0), False)
    assert minting.held_over([minting.Held(P.end, r, True)], P).cu == 0  # from the next period on


def _every_entry(history, period):
    """held_over as first written: every entry weighed, none dropped or clipped (minting keeps a shorter form)."""
    cu, su, certified_s = Fraction(0), Fraction(0), 0
    ordered = sorted(history, key=lambda h: h.since)
    for i, h in enumerate(ordered):
        until = ordered[i + 1].since if i + 1 < len(ordered) else period.end
        seconds = max(0, min(until, period.end) - max(h.since, period.start))
        cu += units.farming_cu(h.resources) * seconds
        su += units.farming_su(h.resources) * seconds
        certified_s += seconds if h.certified else 0
    return minting.FarmingUnits(cu / period.seconds, su / period.seconds, certified_s == period.seconds)


@given(st.lists(st.builds(minting.Held, st.sampled_from((0, 500, 1000, 1001, 11_000, 22_600, 30_000)), RES,
                          st.booleans()), max_size=6))
def test_held_over_weighs_only_what_was_held_in_the_period(history):
    assert minting.held_over(history, P) == _every_entry(history, P)


# §5 vote weight held over the last minted period (issue 13): bought a second before a vote, it weighs nothing


@given(HELD)
def test_held_vote_weight_never_exceeds_the_largest_weight_held(history):
    from tfgrid_operator.domain import voting

    weight = voting.held_weight(history, P)
    assert 0 <= weight <= max((units.dao_weight(h.resources) for h in history), default=0)


@given(RES, RES, st.integers(0, P.seconds))
def test_a_capacity_attested_late_weighs_only_its_seconds(before, after, at):
    from tfgrid_operator.domain import voting

    history = [minting.Held(P.start, before, False), minting.Held(P.start + at, after, False)]
    exact = Fraction(units.dao_weight(before) * at + units.dao_weight(after) * (P.seconds - at), P.seconds)
    assert voting.held_weight(history, P) == int(exact)
    assert voting.held_weight([minting.Held(P.end, after, False)], P) == 0  # after the period: nothing
    assert voting.held_weight([minting.Held(P.start, before, False)], P) == units.dao_weight(before)


@given(RES, RES, st.booleans())
def test_a_node_weighs_only_when_it_met_the_sla_and_never_more_than_it_attests_now(held, now, met):
    from tfgrid_operator.domain import voting

    w = voting.node_vote_weight([minting.Held(P.start, held, False)], P, met_sla=met, now=now)
    assert w == (min(units.dao_weight(held), units.dao_weight(now)) if met else 0)
    assert voting.node_vote_weight([minting.Held(P.start, held, False)], P, met_sla=True, now=None) == 0
