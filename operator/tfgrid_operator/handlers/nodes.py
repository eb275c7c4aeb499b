"""Node: register under its farm (waiting for the farm), report, close on delete unless it carries deployments."""

from __future__ import annotations

from typing import Any

import kopf

from tfgrid_operator import crd_models, runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.conditions import Reason
from tfgrid_operator.handlers import reporting, tenancy, tracking

G, V = runtime.GROUP, runtime.VERSION


@reporting.reconciler("nodes", "node")
async def reconcile_node(body: Any, spec: Any, name: str, patch: kopf.Patch, **_: Any) -> None:
    rt = runtime.get()
    s = reporting.parse_spec(crd_models.NodeSpec, body, spec, patch)
    if s is None:
        return
    farm = await rt.ledger.observe_farm(name=s.farm)
    if farm is None or farm.state != "Active":
        return reporting.waiting(body, patch, reason=Reason.FARM_NOT_READY,
                                 message=f"farm {s.farm!r} is not registered yet; retrying")
    try:
        node = await rt.ledger.ensure_node(
            name=name, owner=tenancy.owner(body),
            farm_consent=(body["metadata"].get("annotations") or {}).get(tenancy.CONSENT_ANNOTATION, ""),
            farm=s.farm, resources=s.capacity, country=s.location.country, city=s.location.city,
            certified=s.certified, public_key=s.public_key, now=rt.clock.now())
    except errors.NameTaken as err:
        return tenancy.name_taken(body, patch, err)
    except errors.NotAuthorized as err:  # retried: the farm owner may sign consent later
        return reporting.waiting(body, patch, reason=Reason.FARM_CONSENT_MISSING, message=err.message, synced=False)
    except errors.InvalidRequest as err:
        return reporting.invalid_spec(body, patch, err.message)
    except errors.LedgerError as err:
        return reporting.ledger_failure(body, patch, err, ready_reason=Reason.CREATING)
    if "nodeId" not in (body.get("status") or {}):
        reason = Reason.REGISTERED if node.created else Reason.ADOPTED
        kopf.info(body, reason=str(reason), message=f"Node {name} is node {node.id} of farm {s.farm}")
    reporting.report(body, patch, ready=True, reason=Reason.AVAILABLE, message=f"registered as node {node.id}",
                     fields={"nodeId": node.id, "farm": s.farm})


@kopf.on.delete(G, V, "nodes")
@reporting.metered("node")
async def delete_node(body: Any, name: str, patch: kopf.Patch, **_: Any) -> None:
    rt = runtime.get()
    await reporting.close_on_ledger(body, patch, rt.ledger.close_node(name=name, owner=tenancy.owner(body), now=rt.clock.now()),
                                    message=lambda _: f"Node {name} closed on the ledger")


tracking.track("nodes")
