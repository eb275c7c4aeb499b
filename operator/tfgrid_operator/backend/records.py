"""Frozen value objects the backend returns. No behaviour, no I/O."""

from __future__ import annotations

import dataclasses

from tfgrid_operator.domain import voting
from tfgrid_operator.domain.units import Resources


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """The Kubernetes object a ledger record was made for: a record is changed only by the object (uid) that made
    it, never by another object of the same name (another namespace, or a later object in the same one)."""

    namespace: str
    uid: str


@dataclasses.dataclass(frozen=True, slots=True)
class PayerProof:
    """What shows that the payer agreed to pay for a Deployment, checked by the ledger itself.

    ``key``: the twin's key was shown (a Secret of the Deployment's namespace held it); ``public_key`` finds the
    account. ``grant``: a grant the twin signed for ``namespace`` (``account``, ``expires``, ``signature``)."""

    kind: str  # key | grant
    namespace: str
    public_key: str = ""
    account: str = ""
    expires: int | None = None
    signature: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    balance: int
    role: str = "twin"  # twin | grid | payout: only a twin pays
    debt: int = 0  # what it owes (invariant 7): contracts in grace and closed ones unpaid; it opens nothing until paid
    collected: int = 0  # fund's answer only: what this funding paid of the debt on its closed contracts


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
    owner: Owner = Owner("", "")


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
    owner: Owner = Owner("", "")


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
    owner: Owner = Owner("", "")
    node_id: int = 0


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
    reserve: int = 0  # §2.7: taken from the payer, not yet paid out
    cycles: int = 0  # billing cycles since the last payout (§2.7: paid out at 24)
    last_bill_amount: int | None = None
    billing_error: str | None = None  # why its last bill or payout could not be made (invariant 6)
    owner_uid: str = ""  # the Deployment object it was opened for
    proof: str = "key"  # key | grant: how the payer's agreement was verified
    proof_until: int | None = None  # a grant's expiry: the contract is closed then unless a new grant was shown
    proof_signature: str = ""
    moved_from: str | None = None  # the node self-healing moved it off: its Deleted(Moved) predecessor's, on the ledger
    payer_key: str = ""  # the paying account's twin key, as the ledger holds it now


@dataclasses.dataclass(frozen=True, slots=True)
class Bill:
    """One bill with its receipt (§2.6): the inputs and each step of the amount. ``rates`` holds the prices
    used: the TFT price (average, bounds and the clamped value used) and the pricing policy's fields."""

    contract_id: int
    key: str
    period: int
    start: int
    until: int
    seconds: int
    amount: int
    paid: int
    discount: str
    billed_at: int
    receipt: dict[str, object]  # empty for bills made before receipts were kept (schema version 4)


@dataclasses.dataclass(frozen=True, slots=True)
class Payout:
    """A contract's reserve paid out (§2.7): every 24 billing cycles (Cycles) and on deletion (Deleted); and what
    its payer owed when it closed, collected from a later funding (Debt, invariant 7)."""

    contract_id: int
    at: int
    reason: str
    amount: int
    farmer_account: str
    farmer: int
    foundation: int
    staking_pool: int


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
    nonce: str = ""  # the council signature's nonce it opened with ('' before schema 6): votes bind it


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
