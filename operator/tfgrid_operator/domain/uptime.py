"""Uptime accounting per node, replayed report by report as minting v3 does (§3.3).

A report says "at time ``ts`` this node had been up ``uptime`` seconds". The fold below credits at
most 2460 s per report, so a node that misses reports loses the gap, and flags the violations that
zero a period's reward (§3.3, §3.4).

Wall time bounds the credit, whatever the reports claim (issue 13, invariant 4). Minting v3 credits
min(Δu, 2460) when Δu is within 60 s of Δt, and a reboot's whole uptime: alternating "fast" reports
(Δu = Δt + 60) with "reboots" that reset the boot time credits many times the elapsed time. Here a
later report credits at most the seconds since the previous accepted report (Δt), the first report
at most the seconds since the period (or the node's registration) began, so a period's credit never
exceeds the wall time it covers; a report less than ``MIN_INTERVAL_S`` after the last accepted one
is not folded at all (no credit, no state change). For an honest node (Δu = Δt) this is the chain's
rule exactly.
"""

from __future__ import annotations

import dataclasses
import enum

REPORT_INTERVAL_S = 2400  # §1.3: Zero-OS reports every 40 minutes (MV3 NODE_UPTIME_REPORT_INTERVAL_SECONDS)
GRACE_S = 60  # §3.3
MAX_CREDIT_S = REPORT_INTERVAL_S + GRACE_S  # §3.3: 2460 s per report at most
CLOCK_SKEW_S = 120  # §3.3
TIMESTAMP_DRIFT_S = 60  # §1.3 TimestampHintDrift: a report's time must be within ±60 s of now
MIN_INTERVAL_S = GRACE_S  # a report sooner than this after the last accepted one adds nothing (not folded)
MAX_UPTIME_S = 1 << 40  # a claimed uptime past this (34,000 years) is no report: refused, so int64 never overflows


class Violation(enum.StrEnum):
    UPTIME_TOO_HIGH = "UptimeTooHigh"
    UPTIME_TOO_LOW = "UptimeTooLow"
    CLOCK_SKEW = "ClockSkew"
    INVALID_REBOOT = "InvalidReboot"


@dataclasses.dataclass(frozen=True, slots=True)
class UptimeState:
    """What minting keeps per node and period (§3.3)."""

    period_start: int
    total: int = 0
    last_ts: int | None = None
    last_uptime: int = 0
    boot_ts: int | None = None
    violation: Violation | None = None
    reports: int = 0


def credit(state: UptimeState, *, ts: int, uptime: int) -> UptimeState:
    """Fold one report into the state. Pure; a violation is sticky (only the first is kept, §3.3).

    Never credits more wall time than passed: the first report at most ``ts − period_start``, a later
    one at most ``ts − last_ts``; a report within ``MIN_INTERVAL_S`` of the last accepted one (or
    older) returns the state unchanged."""
    if uptime < 0:
        raise ValueError("uptime is never negative")
    if state.last_ts is None:
        gained = min(uptime, max(0, ts - state.period_start), MAX_CREDIT_S)
        return dataclasses.replace(
            state, total=state.total + gained, last_ts=ts, last_uptime=uptime, boot_ts=ts - uptime, reports=1
        )
    dt = ts - state.last_ts
    if dt < MIN_INTERVAL_S:
        return state  # too soon (or not newer): no credit, and nothing it claims is taken into account
    du = uptime - state.last_uptime
    violation = state.violation
    boot_ts = state.boot_ts
    gained = 0
    if du > dt + GRACE_S:
        violation = violation or Violation.UPTIME_TOO_HIGH
    elif abs(du - dt) <= GRACE_S and du > 0:
        gained = min(du, MAX_CREDIT_S)
        if boot_ts is not None and abs((ts - uptime) - boot_ts) >= CLOCK_SKEW_S:
            violation = violation or Violation.CLOCK_SKEW
    elif uptime <= dt:
        gained = min(uptime, MAX_CREDIT_S)
        boot_ts = ts - uptime
    elif uptime > state.last_uptime:
        violation = violation or Violation.UPTIME_TOO_LOW
    else:
        violation = violation or Violation.INVALID_REBOOT
    return dataclasses.replace(
        state,
        total=state.total + min(gained, dt),  # wall time since the last accepted report bounds the credit
        last_ts=ts,
        last_uptime=uptime,
        boot_ts=boot_ts,
        violation=violation,
        reports=state.reports + 1,
    )


def uptime_permille(total: int, period_seconds: int) -> int:
    """§3.4: min(1000, total × 1000 / period)."""
    return min(1000, total * 1000 // period_seconds)
