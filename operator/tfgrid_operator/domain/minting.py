"""Proof-of-Capacity minting v3: a node's reward for one period (§3)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from fractions import Fraction

from tfgrid_operator.domain import money, units, uptime

EPOCH = 1_522_501_000  # §3.1: the first period started at unix time 1522501000
PERIOD_SECONDS = 2_630_880  # §3.1: 5 × 365.25 days / 60
CONNECTION_PRICE_MUSD = 80  # §1.6: genesis ConnectionPrice, $0.08/TFT


@dataclasses.dataclass(frozen=True, slots=True)
class FarmingPolicy:
    """A farming policy (§1.5), values in mUSD; defaults are policy 1, DIY (§4.2)."""

    id: int = 1
    cu: int = 2400  # per CU per period
    su: int = 1000  # per SU per period
    nu: int = 30  # per GB of public traffic
    ipv4: int = 5  # per IP-hour
    minimal_uptime: int = 95  # percent; only used for non-default policies (§3.4)
    default: bool = True


DIY_POLICY = FarmingPolicy()
CERTIFIED_POLICY = FarmingPolicy(id=2, cu=3000, su=1250, nu=38, ipv4=6)  # §4.2 policy 2

# §3.4: SLA of the default policies, in permille: DIY 95 %, certified 98 %.
SLA_DIY_PERMILLE = 950
SLA_CERTIFIED_PERMILLE = 980


@dataclasses.dataclass(frozen=True, slots=True)
class Period:
    index: int
    start: int
    end: int  # exclusive

    @property
    def seconds(self) -> int:
        return self.end - self.start


def period_at(ts: int, *, epoch: int = EPOCH, length: int = PERIOD_SECONDS) -> Period:
    """§3.1: period k covers [epoch + k·L, epoch + (k+1)·L)."""
    k = (ts - epoch) // length
    return Period(index=k, start=epoch + k * length, end=epoch + (k + 1) * length)


def period_by_index(k: int, *, epoch: int = EPOCH, length: int = PERIOD_SECONDS) -> Period:
    return Period(index=k, start=epoch + k * length, end=epoch + (k + 1) * length)


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """Capacity a node's key attested, held from ``since`` until the next entry of its history."""

    since: int
    resources: units.Resources
    certified: bool


@dataclasses.dataclass(frozen=True, slots=True)
class FarmingUnits:
    """Farming CU and SU (§3.2) a node held over a period, and whether it was certified all of it."""

    cu: Fraction
    su: Fraction
    certified: bool

    @classmethod
    def of(cls, resources: units.Resources, certified: bool = False) -> FarmingUnits:
        return cls(units.farming_cu(resources), units.farming_su(resources), certified)


def held_seconds(history: Sequence[Held], period: Period) -> list[tuple[Held, int]]:
    """Each attested capacity of a node's history with the seconds of ``period`` it was held (from its ``since``
    to the next entry's, none before the first attestation); entries held for no second of it are left out."""
    ordered = sorted(history, key=lambda h: h.since)
    out = []
    for i, h in enumerate(ordered):
        until = ordered[i + 1].since if i + 1 < len(ordered) else period.end
        seconds = max(0, min(until, period.end) - max(h.since, period.start))
        if seconds:
            out.append((h, seconds))
    return out


def held_over(history: Sequence[Held], period: Period) -> FarmingUnits:
    """Time-weighted farming units over the period: each attested capacity counts for the seconds it was held
    (none before the first attestation), so a capacity raised just before the mint earns only those seconds.
    CU and SU are averaged per segment (the average of min() never exceeds min() of the averages). The node
    counts as certified only when it was certified for the whole period."""
    return _held_over(_within(history, period), period)


def _within(history: Sequence[Held], period: Period) -> tuple[Held, ...]:
    """The entries that hold some of the period, the first clipped to its start: what ``_held_over`` weighs, the
    same for every node that held the same capacity over the period (so minting 10,000 nodes computes a few)."""
    ordered = sorted(history, key=lambda h: h.since)
    first = 0
    for i, h in enumerate(ordered):  # the last entry at or before the start is the first one held in it
        if h.since <= period.start:
            first = i
    kept = [h for h in ordered[first:] if h.since < period.end]
    if kept and kept[0].since < period.start:
        kept[0] = dataclasses.replace(kept[0], since=period.start)
    return tuple(kept)


@functools.lru_cache(maxsize=4096)
def _held_over(ordered: tuple[Held, ...], period: Period) -> FarmingUnits:
    cu, su, certified_s = Fraction(0), Fraction(0), 0
    for h, seconds in held_seconds(ordered, period):
        cu += units.farming_cu(h.resources) * seconds
        su += units.farming_su(h.resources) * seconds
        certified_s += seconds if h.certified else 0
    return FarmingUnits(cu / period.seconds, su / period.seconds, certified_s == period.seconds)


@dataclasses.dataclass(frozen=True, slots=True)
class Reward:
    uptime_permille: int
    full_musd: Fraction  # before the SLA and uptime scaling
    musd: Fraction
    tft_units: int
    reason: str  # "Rewarded", "BelowSla", a violation name, or "NoUptime"


def reward(
    *,
    resources: units.Resources | FarmingUnits,
    certified: bool,
    state: uptime.UptimeState,
    period_seconds: int,
    policy: FarmingPolicy,
    connection_price_musd: int = CONNECTION_PRICE_MUSD,
    nu_gb: int = 0,
    ip_seconds: int = 0,
) -> Reward:
    """§3.5 reward; §3.4 SLA scaling; any violation zeroes the period (§3.3). ``resources`` is a node's
    capacity, or the farming units it held over the period (``held_over``)."""
    held = resources if isinstance(resources, FarmingUnits) else FarmingUnits.of(resources)
    # keyed by integers: a Fraction's hash costs a modular inverse, and 10,000 nodes share a few of these
    full = _full_musd(held.cu.numerator, held.cu.denominator, held.su.numerator, held.su.denominator, certified,
                      policy, nu_gb, ip_seconds)
    permille = uptime.uptime_permille(state.total, period_seconds)
    if state.violation is not None:
        return Reward(permille, full, Fraction(0), 0, str(state.violation))
    if state.reports == 0:
        return Reward(permille, full, Fraction(0), 0, "NoUptime")
    if policy.default:
        sla = SLA_CERTIFIED_PERMILLE if certified else SLA_DIY_PERMILLE
        if permille < sla:
            return Reward(permille, full, Fraction(0), 0, "BelowSla")
        scaled = Fraction(full.numerator * permille, full.denominator * 1000)
    else:
        # §3.4: other policies compare permille against a percent value ("looks like a bug, but it is
        # how the code works") and pay the unscaled reward.
        if permille < policy.minimal_uptime:
            return Reward(permille, full, Fraction(0), 0, "BelowSla")
        scaled = full
    # §3.5, floored as permill maths (integers: the floor of a non-negative fraction)
    tft_units = scaled.numerator * money.UNITS_PER_TFT // (scaled.denominator * connection_price_musd)
    return Reward(permille, full, scaled, tft_units, "Rewarded")


@functools.lru_cache(maxsize=4096)
def _full_musd(cu_n: int, cu_d: int, su_n: int, su_d: int, certified: bool, policy: FarmingPolicy, nu_gb: int,
               ip_seconds: int) -> Fraction:
    """§3.5 the reward before the SLA and uptime scaling: the same for every node of one capacity and policy."""
    full = (Fraction(cu_n, cu_d) * policy.cu + Fraction(su_n, su_d) * policy.su + nu_gb * policy.nu
            + Fraction(ip_seconds * policy.ipv4, 3600))
    if certified and policy.id == 1:
        full = full * Fraction(5, 4)  # §3.5: certified node still on policy 1 gets +25 %
    return full


def policy_for(certified: bool) -> FarmingPolicy:
    """§1.5 step 2: the most-certified default policy the node qualifies for."""
    return CERTIFIED_POLICY if certified else DIY_POLICY
