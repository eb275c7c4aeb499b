"""One status vocabulary: condition types, closed reason sets, and set_condition().

Pure: no kopf. `Ready` is always present; `Synced` says whether the last reconcile with the ledger
succeeded (Crossplane's semantics). lastTransitionTime moves only when a condition's status flips.
"""

from __future__ import annotations

import datetime
import enum
import functools
from typing import Any


class Reason(enum.StrEnum):
    # Ready
    AVAILABLE = "Available"
    CREATING = "Creating"
    DELETING = "Deleting"
    FARM_NOT_READY = "FarmNotReady"
    INVALID_SPEC = "InvalidSpec"
    UNSCHEDULABLE = "Unschedulable"
    GRACE_PERIOD = "GracePeriod"
    OUT_OF_FUNDS = "OutOfFunds"
    GRANT_EXPIRED = "GrantExpired"  # its contract ended with its payer's grant (grid-rules.md "grants")
    GRANT_REVOKED = "GrantRevoked"  # its payer withdrew the grant (`ledger revoke-grant`)
    DELETE_BLOCKED = "DeleteBlocked"
    NODE_DOWN = "NodeDown"
    RESIZE_BLOCKED = "ResizeBlocked"
    PAYER_NOT_FOUND = "PayerNotFound"
    UNAUTHORIZED = "Unauthorized"
    NAME_TAKEN = "NameTaken"  # a grid-wide name another object claimed first
    PAYER_NOT_AUTHORIZED = "PayerNotAuthorized"  # no proof that the payer agreed (key Secret or signed grant)
    PAYER_IN_DEBT = "PayerInDebt"  # the payer owes on a contract (in grace, or closed unpaid): paid first (§2.7)
    FARM_CONSENT_MISSING = "FarmConsentMissing"  # a farm of another namespace whose owner did not sign consent
    VOTING = "Voting"
    REJECTED = "Rejected"
    VETOED = "Vetoed"
    # Attested (Node: what its key attested and the council certified, against what the spec expects)
    CAPACITY_ATTESTED = "CapacityAttested"
    CAPACITY_MISMATCH = "CapacityMismatch"
    NOT_ATTESTED = "NotAttested"
    NOT_CERTIFIED = "NotCertified"
    # Synced
    RECONCILE_SUCCESS = "ReconcileSuccess"
    RECONCILE_ERROR = "ReconcileError"
    SPEC_LOCKED = "SpecLocked"
    # Events only
    ADOPTED = "Adopted"
    UPDATED = "Updated"
    MINTED = "Minted"
    BILLED = "Billed"
    FUNDED = "Funded"
    MOVED = "Moved"
    CLOSED = "Closed"
    UPTIME_REJECTED = "UptimeRejected"
    VOTE_REJECTED = "VoteRejected"
    VOTE_COUNTED = "VoteCounted"
    VETO_REJECTED = "VetoRejected"
    CERTIFIED = "Certified"
    CERTIFICATION_REJECTED = "CertificationRejected"
    PROPOSED = "Proposed"
    EXECUTED = "Executed"


# conditions that wait on the world, not on the operator: retried by the loop (requeues), not by kopf
WAITING = frozenset({Reason.UNSCHEDULABLE, Reason.RESIZE_BLOCKED, Reason.PAYER_NOT_FOUND, Reason.FARM_NOT_READY,
                     Reason.PAYER_NOT_AUTHORIZED, Reason.FARM_CONSENT_MISSING, Reason.PAYER_IN_DEBT})
# conditions only a reconcile handler writes and clears: the loop leaves those objects' status alone
HANDLER_OWNED = WAITING | {Reason.INVALID_SPEC, Reason.DELETE_BLOCKED, Reason.CREATING, Reason.UNAUTHORIZED,
                           Reason.NAME_TAKEN}


@functools.lru_cache(maxsize=64)
def timestamp(ts: int) -> str:
    """``ts`` (Unix seconds) as an RFC 3339 UTC time. Remembered for the last few seconds asked: every reconcile asks
    for now's, and strftime was ~2 % of a restart's CPU (issue 17, py-spy), for a handful of distinct values."""
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]], *, type: str, status: bool, reason: Reason, message: str, generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Return a new list with the condition set; lastTransitionTime kept unless the status flips. ``generation``
    is the one whose reconcile finished (None: none has yet, and the condition carries no observedGeneration)."""
    value = "True" if status else "False"
    out = [dict(c) for c in conditions if c.get("type") != type]
    old = next((c for c in conditions if c.get("type") == type), None)
    changed = old is None or old.get("status") != value
    cond: dict[str, Any] = {
        "type": type, "status": value, "reason": str(reason), "message": message[:32768],
        "lastTransitionTime": now if changed or old is None else old.get("lastTransitionTime", now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    out.append(cond)
    order = {"Ready": 0, "Synced": 1}
    return sorted(out, key=lambda c: (order.get(c["type"], 2), c["type"]))


def get(conditions: list[dict[str, Any]], type: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type), None)


def desired_status(
    current: dict[str, Any], *, generation: int | None, now: str, ready: bool, reason: Reason, message: str,
    synced: bool = True, synced_message: str = "", fields: dict[str, Any] | None = None,
    synced_reason: Reason | None = None,
) -> dict[str, Any]:
    """The full status the object should have: fields + Ready + Synced + observedGeneration. observedGeneration
    (top-level and each condition's) is the generation whose reconcile *finished* — kubectl wait, kstatus and
    Argo CD read it so — and is left out while none has (``generation`` None)."""
    conds = list(current.get("conditions") or [])
    conds = set_condition(conds, type="Ready", status=ready, reason=reason, message=message,
                          generation=generation, now=now)
    conds = set_condition(conds, type="Synced", status=synced,
                          reason=synced_reason or (Reason.RECONCILE_SUCCESS if synced else Reason.RECONCILE_ERROR),
                          message=synced_message, generation=generation, now=now)
    out = {**(fields or {}), "conditions": conds}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def diff(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """Top-level status keys whose value changes: the merge patch of status (empty → no PATCH)."""
    return {k: v for k, v in desired.items() if current.get(k) != v}
