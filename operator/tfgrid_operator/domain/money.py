"""Money: integer smallest units and one rounding rule.

§0: TFT has 7 decimals (1 TFT = 10^7 units); "units USD" are 1/10^7 USD; mUSD × 10,000 = units USD.
"""

from __future__ import annotations

from fractions import Fraction

UNITS_PER_TFT = 10**7  # §0
UNITS_USD_PER_MUSD = 10_000  # §0

# The one bound every amount derives from: no balance, bill, mint, overdraft, funding or total of them may
# exceed MAX_UNITS. 10^18 units (§0: 7 decimals) = 10^11 TFT, a total-supply scale far above any real supply,
# and < (2^63 - 1) / 9 (int64, a BigInteger column): a sum of up to nine bounded amounts (a balance plus a bill,
# an overdraft and a payout share) never overflows on SQLite or PostgreSQL.
MAX_UNITS = 10**18
MAX_TFT = MAX_UNITS // UNITS_PER_TFT
# Derived: the most a pricing policy field (§1.4, units USD per hour) may be set to, by a DAO proposal or otherwise.
# At it, the largest contract the CRDs allow (a whole 1024-core node, 64 IPs, certified at the 1000 % factor, no
# discount) billed for a 30-day month (SECS_PER_MONTH, §0: longer than any grace period) at the §4.3 TFT price floor
# (20 mUSD) costs less than MAX_UNITS: no bill, overdraft or balance can pass the bound. 10^7 = $1 per unit-hour,
# 100x today's CU price (§4.1). tests/domain/test_bounds.py checks the derivation.
MAX_POLICY_PRICE = 10**7


def round_half_up(value: Fraction) -> int:
    """Round a non-negative exact amount to the nearest unit (the 2024-03 billing rounds to nearest, §2.6)."""
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


def tft(units: int) -> str:
    """Human form of an amount of TFT units: 12200000 -> '1.22'."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS_PER_TFT)
    text = f"{whole}.{frac:07d}".rstrip("0").rstrip(".")
    return sign + text


def parse_tft(text: str) -> int:
    """'1.5' -> 15000000 units; exact, no floats. Raises ValueError on anything else."""
    text = text.strip()
    if not text or text.count(".") > 1 or not text.replace(".", "", 1).isdigit():
        raise ValueError(f"not a non-negative TFT amount: {text!r}")
    whole, _, frac = text.partition(".")
    if len(frac) > 7:
        raise ValueError(f"TFT has 7 decimals at most: {text!r}")
    return int(whole or "0") * UNITS_PER_TFT + int((frac + "0000000")[:7])
