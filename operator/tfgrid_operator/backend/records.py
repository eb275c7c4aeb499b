"""Frozen value objects the backend returns. No behaviour, no I/O."""

from __future__ import annotations

import dataclasses

from tfgrid_operator.domain import voting
from tfgrid_operator.domain.units import Resources


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    balance: int


@dataclasses.dataclass(frozen=True, slots=True)
class Farm:
    id: int
    name: str
    owner_key: str
    payout_account: str
    certified: bool
    dedicated: bool
    public_ips: int
    state: str  # Active | Closed
    created: bool = False  # True when this call created the row (not adopted)


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    id: int
    name: str
    farm: str
    resources: Resources
    country: str
    city: str
    certified: bool
    public_key: str
    state: str  # Active | Closed
    created: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class NodeSummary:
    name: str
    farm: str
    resources: Resources
    used: Resources
    contracts: int
    uptime_s: int  # credited this minting period
    uptime_permille: int
    last_report_ts: int | None
    violation: str | None
    minted_total: int
    last_mint: int | None  # amount of the latest minted period
    last_mint_period: int | None
    last_mint_reason: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Contract:
    id: int
    key: str
    payer: str
    node: str
    farm: str
    resources: Resources
    public_ips: int
    dedicated: bool
    state: str  # Created | GracePeriod | Deleted
    created_at: int
    grace_since: int | None
    deleted_at: int | None
    deleted_reason: str | None
    overdraft: int
    billed_total: int
    last_billed_at: int | None
    last_discount: str | None
    certified: bool = False  # the node's certification: version B bills its capacity ×1.25 (§2.6)
    created: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class PeriodReport:
    """What one bill or mint run over a period did. ``rows_written`` is 0 on a re-run."""

    period: int
    rows_written: int
    amount: int
    skipped_existing: int
    changed: tuple[str, ...] = ()  # keys (contract keys or node names) whose state changed


Vote = voting.Vote  # a counted vote is the domain's: farm, approve, weight captured at vote time (§5)


@dataclasses.dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    key: str
    action: dict[str, object]
    threshold: int
    end_ts: int
    state: str  # Open | Approved | Rejected | Executed | Vetoed | Withdrawn
    votes: tuple[Vote, ...]
    vetoes: int
    executed_at: int | None
    created: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Attestation:
    """A node's latest attested capacity (signed by its key) and certification (signed by the council)."""

    node: str
    resources: Resources
    certified: bool
    since: int  # when this capacity/certification began to hold
    source: str  # agent | council | decertified (a certified node whose capacity changed > 1 %, §1.3)
    changed: bool = False  # certify_node: this call applied a new certification (not one seen before)


@dataclasses.dataclass(frozen=True, slots=True)
class MintReceipt:
    """One mint of one node and period, with what it was computed from (issue 14)."""

    node: str
    period: int
    amount: int
    reason: str
    uptime_permille: int
    inputs: dict[str, object]  # period, uptime, CU/SU held, policy, SLA, connection price, certified factor
