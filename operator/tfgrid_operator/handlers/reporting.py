"""The report step every handler shares: conditions + status fields → the smallest status patch.

A reconcile that changes nothing adds nothing to kopf's patch, so kopf sends no PATCH at all.
"""

from __future__ import annotations

from typing import Any

import kopf

from tfgrid_operator import conditions, runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.conditions import Reason


def desired_status(body: Any, **kwargs: Any) -> dict[str, Any]:
    return conditions.desired_status(
        dict(body.get("status") or {}), generation=body.get("metadata", {}).get("generation", 1),
        now=conditions.timestamp(runtime.get().clock.now()), **kwargs)


def apply(body: Any, patch: kopf.Patch, desired: dict[str, Any]) -> bool:
    changes = conditions.diff(dict(body.get("status") or {}), desired)
    for k, v in changes.items():
        patch.status[k] = v
    return bool(changes)


def report(body: Any, patch: kopf.Patch, **kwargs: Any) -> bool:
    return apply(body, patch, desired_status(body, **kwargs))


def ledger_failure(body: Any, patch: kopf.Patch, err: errors.LedgerError, *, ready_reason: Reason,
                   fields: dict[str, Any] | None = None) -> None:
    """Report a ledger error the one way: Synced=False, a Warning Event, and a retry with backoff."""
    current = dict(body.get("status") or {})
    ready = (conditions.get(current.get("conditions") or [], "Ready") or {}).get("status") == "True"
    report(body, patch, ready=ready and not isinstance(err, errors.NotFound), reason=ready_reason,
           message=err.message, synced=False, synced_message=err.message, fields=fields)
    kopf.warn(body, reason=err.reason, message=err.message)
    raise kopf.TemporaryError(err.message, delay=runtime.get().retry_delay_s)


def invalid_spec(body: Any, patch: kopf.Patch, message: str) -> None:
    if report(body, patch, ready=False, reason=Reason.INVALID_SPEC, message=message, synced=False,
              synced_message=message):
        kopf.warn(body, reason=str(Reason.INVALID_SPEC), message=message)
