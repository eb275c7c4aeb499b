"""Proof-of-Utilization pricing: a contract's cost for a billing window (billing version B).

Version B is the current mainnet rule set (docs/grid-rules.md §2.6, §2.7): certified
capacity ×1.25, discount thresholds 1.5/3/6/18 months. What happens with a bill — settlement, grace,
the reserve and its 50/40/10 payout — is domain/billing.py.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from fractions import Fraction

from tfgrid_operator.domain import money, units

SECONDS_PER_HOUR = 3600  # §2.5 BillingReferencePeriod
SECONDS_PER_MONTH = 3600 * 24 * 30  # §0 SECS_PER_MONTH, and §2.6 monthly_due


@dataclasses.dataclass(frozen=True, slots=True)
class PricingPolicy:
    """Pricing policy 1 (§1.4). Values are units USD per hour (10^7 units = $1), defaults from §4.1."""

    cu: int = 100_000
    su: int = 50_000
    nu: int = 15_000
    ipu: int = 40_000
    unique_name: int = 2_500
    discount_for_dedication_nodes: int = 50  # percent the renter pays (§2.6 "really percent paid")
    certified_factor_percent: int = 125  # §2.6: certified capacity ×1.25 under version B


@dataclasses.dataclass(frozen=True, slots=True)
class TftPrice:
    """The TFT price in mUSD, clamped into [min, max] as billing does (§2.6, §4.3 defaults 20/2000)."""

    average_musd: int = 20
    min_musd: int = 20
    max_musd: int = 2000

    def effective(self) -> int:
        return max(self.min_musd, min(self.max_musd, self.average_musd))


class DiscountLevel(enum.StrEnum):
    NONE = "None"
    DEFAULT = "Default"
    BRONZE = "Bronze"
    SILVER = "Silver"
    GOLD = "Gold"


# §2.6: (months of balance at least, level, factor) from the highest down; thresholds since 2023-03.
DISCOUNT_LEVELS: tuple[tuple[Fraction, DiscountLevel, Fraction], ...] = (
    (Fraction(18), DiscountLevel.GOLD, Fraction(4, 10)),
    (Fraction(6), DiscountLevel.SILVER, Fraction(6, 10)),
    (Fraction(3), DiscountLevel.BRONZE, Fraction(7, 10)),
    (Fraction(3, 2), DiscountLevel.DEFAULT, Fraction(8, 10)),
)


_LEVELS_AS_INTS = tuple((t.numerator, t.denominator, level, factor) for t, level, factor in DISCOUNT_LEVELS)


def discount_level(*, balance: int, amount_due: Fraction | int, seconds: int) -> tuple[DiscountLevel, Fraction]:
    """§2.6 calculate_discount_tft: months = balance / monthly_due, with monthly_due = due/t × 30 days;
    levels at 1.5/3/6/18 months. Compared in integers (months ≥ n/d ⇔ balance·t·d·q ≥ p·month·n for
    due = p/q), so billing 100,000 contracts stays cheap."""
    if seconds <= 0 or amount_due <= 0:
        return DiscountLevel.NONE, Fraction(1)
    p, q = (amount_due, 1) if isinstance(amount_due, int) else (amount_due.numerator, amount_due.denominator)
    left = balance * seconds * q
    right = p * SECONDS_PER_MONTH
    for n, d, level, factor in _LEVELS_AS_INTS:
        if left * d >= right * n:
            return level, factor
    return DiscountLevel.NONE, Fraction(1)


def discount_floors(*, amount_due: int, seconds: int) -> tuple[tuple[int, DiscountLevel, Fraction], ...]:
    """The least balance at which each level of ``discount_level`` applies, highest level first: the same
    integer comparison solved for the balance (balance·t·d ≥ due·month·n ⇔ balance ≥ ⌈due·month·n / (t·d)⌉),
    so a bill's level is the first whose floor the balance reaches, and none below the last. Billing prices a
    contract shape once and then compares each payer's balance with these."""
    if seconds <= 0 or amount_due <= 0:
        return ()
    return tuple((-(-amount_due * SECONDS_PER_MONTH * n // (seconds * d)), level, factor)
                 for n, d, level, factor in _LEVELS_AS_INTS)


def contract_cost_units_usd(
    *, resources: units.Resources, public_ips: int, seconds: int, policy: PricingPolicy
) -> Fraction:
    """§2.6 node contract: (su·SU + cu·CU)·t/3600 + ips·ipu·t/3600, in units USD (exact)."""
    hours = Fraction(seconds, SECONDS_PER_HOUR)
    capacity = policy.su * units.billing_su(resources) + policy.cu * units.billing_cu(resources)
    return capacity * hours + public_ips * policy.ipu * hours


def rent_cost_units_usd(*, node_resources: units.Resources, seconds: int, policy: PricingPolicy) -> Fraction:
    """§2.6 rent contract (dedicated node): the node's full capacity × discount_for_dedication_nodes/100."""
    full = contract_cost_units_usd(resources=node_resources, public_ips=0, seconds=seconds, policy=policy)
    return full * Fraction(policy.discount_for_dedication_nodes, 100)


def usd_to_tft_units(units_usd: Fraction, price: TftPrice) -> Fraction:
    """§2.6: tft_units = cost_units_usd / (price_mUSD × 10,000) × 10^7."""
    return units_usd / (price.effective() * money.UNITS_USD_PER_MUSD) * money.UNITS_PER_TFT


@dataclasses.dataclass(frozen=True, slots=True)
class Bill:
    """One contract's charge for one window, with every step that made it (the bill's receipt).

    ``gross`` is the TFT conversion rounded to the unit (§2.6, rounded first); ``discounted`` is
    ``gross`` × the discount factor, rounded; ``amount`` is ``discounted`` × the certified factor,
    rounded. Each rounding is to the nearest unit, ties away from zero (money.round_half_up).
    """

    seconds: int
    cost_units_usd: int  # the window's cost in units USD, rounded (for reading; the TFT step uses it exact)
    gross: int  # TFT units before discount, rounded to the unit
    discount: DiscountLevel
    amount: int  # due for the window
    discount_percent: int = 100  # percent of ``gross`` paid at this level (80 = −20 %)
    discounted: int = 0  # gross × discount, rounded
    certified_percent: int = 100  # 125 on a certified node (version B), else 100


def bill(
    *,
    resources: units.Resources,
    public_ips: int,
    seconds: int,
    certified: bool,
    dedicated_node: units.Resources | None,
    balance: int,
    policy: PricingPolicy,
    price: TftPrice,
) -> Bill:
    """Price one billing window for one contract.

    Order as on chain (§2.6): cost in units USD → TFT at the clamped price, rounded to the unit →
    discount level from the payer's balance against that rounded amount → × the level's factor,
    rounded → ×1.25 when the node is certified (version B), rounded. A dedicated (rented) node is
    priced as a rent contract over the node's full resources.
    """
    if seconds < 0 or public_ips < 0 or resources.is_negative():
        raise ValueError("seconds, public IPs and resources must not be negative")
    quote = Quote.of(resources=resources, public_ips=public_ips, seconds=seconds, certified=certified,
                     dedicated_node=dedicated_node, policy=policy, price=price)
    return quote.bill(balance=balance)


@dataclasses.dataclass(frozen=True, slots=True)
class Quote:
    """A contract shape priced once; ``bill(balance)`` only picks the discount. Billing 100,000 contracts
    of a few shapes then costs a dictionary lookup and a few integer comparisons per contract."""

    seconds: int
    cost_units_usd: int
    gross: int
    certified: bool
    certified_percent: int
    _by_level: dict[DiscountLevel, Bill] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls, *, resources: units.Resources, public_ips: int, seconds: int, certified: bool,
        dedicated_node: units.Resources | None, policy: PricingPolicy, price: TftPrice,
    ) -> Quote:
        usd, gross = _gross(resources, public_ips, seconds, dedicated_node, policy, price)
        return cls(seconds, money.round_half_up(usd), money.round_half_up(gross), certified,
                   policy.certified_factor_percent if certified else 100)

    def bill(self, *, balance: int) -> Bill:
        level, factor = discount_level(balance=balance, amount_due=self.gross, seconds=self.seconds)
        made = self._by_level.get(level)  # a shape's bill depends on the balance only through its level
        if made is None:
            discounted, amount = _final(self.gross, factor, self.certified_percent)
            made = self._by_level[level] = Bill(
                seconds=self.seconds, cost_units_usd=self.cost_units_usd, gross=self.gross, discount=level,
                amount=amount, discount_percent=int(factor * 100), discounted=discounted,
                certified_percent=self.certified_percent)
        return made


@functools.lru_cache(maxsize=4096)
def _gross(
    resources: units.Resources, public_ips: int, seconds: int, dedicated_node: units.Resources | None,
    policy: PricingPolicy, price: TftPrice,
) -> tuple[Fraction, Fraction]:
    """Cost in units USD and in TFT units, before discount, exact. Pure, so it is cached: a grid has few shapes."""
    if dedicated_node is not None:
        usd = rent_cost_units_usd(node_resources=dedicated_node, seconds=seconds, policy=policy)
        usd += public_ips * policy.ipu * Fraction(seconds, SECONDS_PER_HOUR)
    else:
        usd = contract_cost_units_usd(resources=resources, public_ips=public_ips, seconds=seconds, policy=policy)
    return usd, usd_to_tft_units(usd, price)


@functools.lru_cache(maxsize=4096)
def _final(gross: int, factor: Fraction, certified_percent: int) -> tuple[int, int]:
    """§2.6 after the conversion: the discount on the rounded gross, rounded; then the certified factor on
    that, rounded. Choice (the chain's code leaves it implicit): each step rounds on its own, as the chain's
    discount function returns a whole amount before the certified step multiplies it."""
    discounted = money.round_half_up(gross * factor)
    return discounted, money.round_half_up(Fraction(discounted * certified_percent, 100))


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One resource's share of a window's gross cost (a quote's breakdown)."""

    name: str  # CU | SU | IPv4 | Rent (a dedicated node: its full CU and SU at the rent percent)
    units: Fraction  # how many CU, SU or IPs
    price: int  # units USD per unit and hour (§1.4)
    units_usd: Fraction  # for the window, exact
    tft: int  # for the window in TFT units, rounded: for reading (the bill converts the sum, then rounds)


def breakdown(
    *, resources: units.Resources, public_ips: int, seconds: int, dedicated_node: units.Resources | None,
    policy: PricingPolicy, price: TftPrice,
) -> tuple[Line, ...]:
    """§2.6 per resource: CU and SU (or the rent of a dedicated node) and IPv4, in units USD and TFT."""
    hours = Fraction(seconds, SECONDS_PER_HOUR)
    lines: list[tuple[str, Fraction, int, Fraction]] = []
    if dedicated_node is not None:
        rent = rent_cost_units_usd(node_resources=dedicated_node, seconds=seconds, policy=policy)
        lines.append(("Rent", Fraction(1), money.round_half_up(rent / hours) if hours else 0, rent))
    else:
        cu, su = units.billing_cu(resources), units.billing_su(resources)
        lines += [("CU", cu, policy.cu, cu * policy.cu * hours), ("SU", su, policy.su, su * policy.su * hours)]
    if public_ips:
        lines.append(("IPv4", Fraction(public_ips), policy.ipu, public_ips * policy.ipu * hours))
    return tuple(Line(name, n, p, usd, money.round_half_up(usd_to_tft_units(usd, price))) for name, n, p, usd in lines)
