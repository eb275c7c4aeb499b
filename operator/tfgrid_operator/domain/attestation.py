"""What a node agent and a council member sign about a node's capacity (§1.3): the payloads, one home for the
signer (agent.py, ballot.py) and the verifier (backend/sql/capacity.py). Pure."""

from __future__ import annotations

from typing import Any

from tfgrid_operator.domain.units import Resources


def capacity_payload(*, node: str, ts: int, resources: Resources) -> dict[str, Any]:
    """What a node agent signs (identity.CAPACITY): the node's name, the time, the measured resources."""
    return {"node": node, "ts": ts, **resources.as_dict()}


def certification_payload(*, node: str, node_id: int, certified: bool, ts: int,
                          resources: Resources | None = None) -> dict[str, Any]:
    """What a council member signs (identity.CERTIFICATION): bound to the ledger's node id, so it never
    applies to another node that later takes the same name; a certification also names the capacity the council
    certifies (what the node attested when the member looked), so, held back, it never certifies a bigger machine
    attested since. A decertification names none: it holds whatever the node attests."""
    payload: dict[str, Any] = {"node": node, "nodeId": node_id, "certified": certified, "ts": ts}
    if resources is not None:
        payload.update(resources.as_dict())
    return payload
