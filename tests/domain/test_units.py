import dataclasses
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from tfgrid_operator.domain import units
from tfgrid_operator.domain.units import Resources

res = st.builds(Resources, st.integers(0, 512), st.integers(0, 4096), st.integers(0, 100_000), st.integers(0, 100_000))


def test_billing_worked_example_section_2_6():
    r = Resources(cru=2, mru=4, sru=50)
    assert units.billing_cu(r) == 1
    assert units.billing_su(r) == Fraction(1, 4)


def test_farming_worked_example_section_3_5():
    r = Resources(cru=8, mru=32, sru=1000, hru=4000)
    assert units.farming_cu(r) == Fraction(775, 100)
    assert units.farming_su(r) == Fraction(4000, 1200) + 4


def test_dao_weight_worked_example_section_5():
    # cru 24, mru ≈ 189 GiB, sru ≈ 477 GiB, hru ≈ 8.2 TiB → CU_w 18, SU_w 8, weight 44
    assert units.dao_weight(Resources(cru=24, mru=189, sru=477, hru=8397)) == 44


def test_dao_weight_tie_quirk_returns_zero_cu():
    # 2·cru == sru/50: the chain's get_cu returns 0 on a tie
    assert units.dao_weight(Resources(cru=5, mru=16, sru=500)) == int(Fraction(500, 250))


@given(res)
def test_units_never_negative(r):
    assert units.billing_cu(r) >= 0 and units.billing_su(r) >= 0
    assert units.farming_cu(r) >= 0 and units.farming_su(r) >= 0
    assert units.dao_weight(r) >= 0


@given(res, res)
def test_billing_units_are_monotonic(a, b):
    bigger = a + b
    assert units.billing_su(bigger) >= units.billing_su(a)
    assert units.billing_cu(bigger) >= units.billing_cu(a)


@given(res, res)
def test_fits_in_matches_shortfall(a, b):
    assert a.fits_in(b) == (a.shortfall(b) == [])


def test_node_minimums_section_1_3():
    assert units.node_minimum_violations(Resources(1, 2, 100, 0)) == []
    assert units.node_minimum_violations(Resources(1, 2, 0, 100)) == []  # HDD-only, ADR 0022
    assert len(units.node_minimum_violations(Resources(0, 1, 10, 10))) == 3


def test_resources_reject_non_integers():
    import pytest

    with pytest.raises(TypeError):
        Resources(cru=1.5)  # type: ignore[arg-type]


@given(res)
def test_as_dict_is_the_fields_by_name(r):
    assert r.as_dict() == dataclasses.asdict(r) and Resources(**r.as_dict()) == r
