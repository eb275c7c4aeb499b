"""Typed ledger errors. Every one leaves the ledger unchanged (each call is one transaction).

    LedgerError
    ├── NotFound            an unknown account, farm, node, contract or proposal
    ├── Conflict            a duplicate name, or an object still in use (a node with deployments)
    │   └── NameTaken       a grid-wide name (farm, node) another object claimed first
    ├── NoCapacity          no node fits a deployment; carries the constraint that failed
    ├── InvalidRequest      the request itself is wrong (negative amount, below node minimums)
    ├── BadSignature        a signature that does not verify against the registered key
    ├── NotAuthorized       no proof that the owner of the money (or the farm) agreed
    ├── PayerInDebt         the payer owes on a contract (in grace, or closed unpaid): it opens and grows nothing
    ├── Replayed            a signed report or vote that was already counted, or is out of time
    └── Unavailable         the database cannot be reached or is locked; retry later
"""

from __future__ import annotations


class LedgerError(Exception):
    reason = "LedgerError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(LedgerError):
    reason = "NotFound"


class Conflict(LedgerError):
    """``blockers``: what stands in the way, when the conflict is an object still in use (the live contracts' keys
    on a node, a farm's active nodes): a delete that waits for them is woken when the last one goes."""

    reason = "Conflict"

    def __init__(self, message: str, blockers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.blockers = blockers


class NameTaken(Conflict):
    reason = "NameTaken"


class NoCapacity(LedgerError):
    reason = "Unschedulable"

    def __init__(self, constraint: str, message: str) -> None:
        super().__init__(message)
        self.constraint = constraint


class InvalidRequest(LedgerError):
    reason = "InvalidRequest"


class BadSignature(LedgerError):
    reason = "BadSignature"


class NotAuthorized(LedgerError):
    reason = "NotAuthorized"


class PayerInDebt(LedgerError):
    """The payer owes ``owed`` units (invariant 7): until a funding pays it, it opens and grows no contract."""

    reason = "PayerInDebt"

    def __init__(self, message: str, owed: int) -> None:
        super().__init__(message)
        self.owed = owed


class Replayed(LedgerError):
    reason = "Replayed"


class Superseded(Replayed):
    """A vote older than the farm's counted vote: only the newest counts (a superseded vote replayed)."""

    reason = "Superseded"


class Unavailable(LedgerError):
    reason = "LedgerUnavailable"
