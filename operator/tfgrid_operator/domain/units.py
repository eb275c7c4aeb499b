"""Resource units: CU, SU, NU and IPv4 from cru/mru/sru/hru.

Capacity is given in whole cores (cru) and whole GiB (mru, sru, hru): the chain counts bytes
and converts with base 1024 (docs/grid-rules.md §0), so GiB is exact for our inputs.

There are three CU formulas on the grid, on purpose (§7):
- billing (§2.6), used to price contracts;
- farming (§3.2), used to mint rewards;
- DAO weight (§5), a quirky integer variant used only for vote weights.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction


@dataclasses.dataclass(frozen=True, slots=True)
class Resources:
    """Capacity: cores and GiB. Adding and subtracting is per field."""

    cru: int = 0
    mru: int = 0
    sru: int = 0
    hru: int = 0

    def __post_init__(self) -> None:
        for field in ("cru", "mru", "sru", "hru"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{field} must be an int, got {value!r}")

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cru + other.cru, self.mru + other.mru, self.sru + other.sru, self.hru + other.hru)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cru - other.cru, self.mru - other.mru, self.sru - other.sru, self.hru - other.hru)

    def fits_in(self, other: Resources) -> bool:
        """True when every field is at most the other's field."""
        return (
            self.cru <= other.cru and self.mru <= other.mru and self.sru <= other.sru and self.hru <= other.hru
        )

    def shortfall(self, free: Resources) -> list[str]:
        """Names of the fields that do not fit into ``free``, in a stable order."""
        return [f for f in ("cru", "mru", "sru", "hru") if getattr(self, f) > getattr(free, f)]

    def is_negative(self) -> bool:
        return min(self.cru, self.mru, self.sru, self.hru) < 0

    def as_dict(self) -> dict[str, int]:
        """The four fields by name (``dataclasses.asdict`` deep-copies: ~2 % of a burst's CPU, issue 17)."""
        return {"cru": self.cru, "mru": self.mru, "sru": self.sru, "hru": self.hru}


ZERO = Resources()

# §1.3: node minimums: cru >= 1, mru >= 2 GiB, sru >= 100 GiB; since ADR 0022 an HDD-only node may
# register with hru >= 100 GB instead of the sru minimum.
NODE_MIN_CRU = 1
NODE_MIN_MRU_GIB = 2
NODE_MIN_STORAGE_GIB = 100


# the most one node may have (the Node CRD's bounds): an attested capacity past them is refused, so no node's reward
# or vote weight is unbounded (issue 13, invariant 6)
NODE_MAXIMUM = Resources(cru=1024, mru=1 << 20, sru=1 << 24, hru=1 << 24)


def node_maximum_violations(r: Resources) -> list[str]:
    """The fields of ``r`` past NODE_MAXIMUM, as human-readable phrases; empty when fine."""
    return [f"{k} must be at most {getattr(NODE_MAXIMUM, k)}" for k in ("cru", "mru", "sru", "hru")
            if getattr(r, k) > getattr(NODE_MAXIMUM, k)]


def node_minimum_violations(r: Resources) -> list[str]:
    """What keeps a node from registering (§1.3), as human-readable phrases; empty when fine."""
    problems = []
    if r.cru < NODE_MIN_CRU:
        problems.append(f"cru must be at least {NODE_MIN_CRU}")
    if r.mru < NODE_MIN_MRU_GIB:
        problems.append(f"mru must be at least {NODE_MIN_MRU_GIB} GiB")
    if r.sru < NODE_MIN_STORAGE_GIB and r.hru < NODE_MIN_STORAGE_GIB:
        problems.append(f"sru or hru must be at least {NODE_MIN_STORAGE_GIB} GiB")
    return problems


def billing_cu(r: Resources) -> Fraction:
    """§2.6: CU = min(max(mru/4, cru/2), max(mru/8, cru), max(mru/2, cru/4))."""
    mru, cru = Fraction(r.mru), Fraction(r.cru)
    return min(max(mru / 4, cru / 2), max(mru / 8, cru), max(mru / 2, cru / 4))


def billing_su(r: Resources) -> Fraction:
    """§2.6: SU = hru/1200 + sru/200."""
    return Fraction(r.hru, 1200) + Fraction(r.sru, 200)


def farming_cu(r: Resources) -> Fraction:
    """§3.2: CU_farm = min(2·cru, (mru − 1)/4, sru/50); the 1 GiB is kept for the OS."""
    return max(Fraction(0), min(Fraction(2 * r.cru), Fraction(r.mru - 1, 4), Fraction(r.sru, 50)))


def farming_su(r: Resources) -> Fraction:
    """§3.2: SU_farm = hru/1200 + sru/250."""
    return Fraction(r.hru, 1200) + Fraction(r.sru, 250)


def dao_weight(r: Resources) -> int:
    """§5: a node's DAO weight = 2·CU_w + SU_w.

    SU_w = floor(hru/1200 + sru/250). CU_w = 2·floor(min(2·cru, (mru_bytes − 1)/4, sru/50)); the chain
    subtracts 1 from mru in bytes and then scales by GiB, so the memory term never binds, and when
    the smallest term ties another the chain's function returns 0. Both quirks are reproduced.
    """
    su_w = int(Fraction(r.hru, 1200) + Fraction(r.sru, 250))
    memory_term = max(Fraction(0), Fraction(r.mru * 1024**3 - 1, 4) * 1024**3)  # never binds, as on chain
    terms = sorted([Fraction(2 * r.cru), memory_term, Fraction(r.sru, 50)])
    cu_w = 0 if terms[0] == terms[1] else 2 * int(terms[0])
    return 2 * cu_w + su_w
