"""Who a ledger record belongs to, and what the handlers last reported (design.md "Trust model").

A record on the ledger belongs to the object that made it: its namespace and uid. A later object with the same
name has another uid and never adopts it; another namespace's object gets NameTaken.

The batched loop must know whether an object's handler is holding its status (an invalid spec, a wait on the
world, a name taken): it asks here, never the object's status, which its user can write.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import kopf

from tfgrid_operator import conditions, runtime
from tfgrid_operator.backend import errors, records
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain import names

# a farm owner's signed consent that this Node (of another namespace than the farm) joins the farm:
# `tfgrid-operator farm-consent` prints it
CONSENT_ANNOTATION = "grid.threefold.io/farm-consent"
PLURALS = {"Farm": "farms", "Node": "nodes", "Deployment": "deployments", "Proposal": "proposals"}

def owner(body: Any) -> records.Owner:
    meta = body["metadata"]
    return records.Owner(meta.get("namespace") or "", meta["uid"])


def key_of(body: Any) -> tuple[str, str, str] | None:
    plural = PLURALS.get(body.get("kind", ""))
    meta = body.get("metadata") or {}
    return None if plural is None else (plural, meta.get("namespace") or "", meta.get("name", ""))


def note(rt: runtime.Runtime, body: Any, desired: dict[str, Any]) -> None:
    """Remember the Ready reason a handler wrote (or left) for this object (``rt.reported``, which the loop reads)."""
    key = key_of(body)
    ready = conditions.get(desired.get("conditions") or [], "Ready")
    if key is not None and ready is not None:
        reason = str(ready.get("reason", ""))
        # the loop writes a held object's report back, and a Proposal's rejections (never read from status); of
        # any other report it reads only the reason: 10,000 whole statuses would be ~30 MB kept for nothing
        kept = dict(desired) if reason in conditions.HANDLER_OWNED else \
            {k: desired[k] for k in REJECTIONS if k in desired}
        rt.reported[key] = ((body.get("metadata") or {}).get("uid", ""), reason, kept)


REJECTIONS = ("rejectedVotes", "rejectedVetoes")  # a Proposal's handler's findings, which the loop writes back


def name_taken(rt: runtime.Runtime, body: Any, patch: kopf.Patch, err: errors.LedgerError) -> None:
    """Another object holds the grid-wide name: Ready=False NameTaken, one Warning; nothing on the ledger changed."""
    from tfgrid_operator.handlers import reporting

    if reporting.report(rt, body, patch, ready=False, reason=Reason.NAME_TAKEN, message=err.message, synced=False,
                        synced_message=err.message):
        kopf.warn(body, reason=str(Reason.NAME_TAKEN), message=err.message)


def grant_secret(grant: names.Grant, secret: str) -> dict[str, object]:
    """A signed payer grant as the Secret a tenant applies in the granted namespace (key ``grant``)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret, "namespace": grant.namespace},
            "data": {"grant": base64.b64encode(json.dumps({**grant.payload(), "signature": grant.signature},
                                                          sort_keys=True).encode()).decode()}}
