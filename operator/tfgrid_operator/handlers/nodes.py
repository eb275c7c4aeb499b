"""Node: register under its farm (waiting for the farm), report, close on delete unless it carries deployments.

Certification is the council's, not the spec's (issue 13, invariant 3; §1.2 set_node_certification): a council
member signs it (`tfgrid-operator council certify`), and it arrives as the Node's certification annotation.
``spec.certified`` only says what the farmer expects; the status shows what holds."""

from __future__ import annotations

import json
from typing import Any

import kopf

from tfgrid_operator import api, conditions, runtime
from tfgrid_operator.backend import errors, records
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.handlers import blocked, leases, reporting, tenancy
from tfgrid_operator.loop import status as projections

G, V = runtime.GROUP, runtime.VERSION


@reporting.reconciler("nodes", "node")
async def reconcile_node(body: Any, spec: Any, name: str, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime.get(memo)
    s = reporting.parse_spec(rt, api.NodeSpec, body, spec, patch)
    if s is None:
        return
    farm = await rt.ledger.observe_farm(name=s.farm)
    if farm is None or farm.state != "Active":
        reporting.waiting(rt, body, patch, reason=Reason.FARM_NOT_READY,
                          message=f"farm {s.farm!r} is not registered yet; retrying")
    try:
        node = await rt.ledger.ensure_node(
            name=name, owner=tenancy.owner(body),
            farm_consent=(body["metadata"].get("annotations") or {}).get(tenancy.CONSENT_ANNOTATION, ""),
            farm=s.farm, resources=s.capacity, country=s.location.country, city=s.location.city,
            certified=s.certified, public_key=s.public_key, now=rt.clock.now())
    except errors.NameTaken as err:
        return tenancy.name_taken(rt, body, patch, err)
    except errors.NotAuthorized as err:  # retried: the farm owner may sign consent later
        reporting.waiting(rt, body, patch, reason=Reason.FARM_CONSENT_MISSING, message=err.message, synced=False)
    except errors.InvalidRequest as err:
        return reporting.invalid_spec(rt, body, patch, err.message)
    except errors.LedgerError as err:
        reporting.ledger_failure(rt, body, patch, err, ready_reason=Reason.CREATING)
    if node.created:  # a new record: its whole status is known now, written once (the loop's next pass finds it current)
        reporting.apply(rt, body, patch, registered_status(rt, body, node))
        return
    if "nodeId" not in (body.get("status") or {}):  # a record made before: say it is adopted
        kopf.info(body, reason=str(Reason.ADOPTED), message=f"Node {name} is node {node.id} of farm {s.farm}")
    reporting.report(rt, body, patch, ready=True, reason=Reason.AVAILABLE, message=f"registered as node {node.id}",
                     fields={"nodeId": node.id, "farm": s.farm})


def registered_status(rt: runtime.Runtime, body: Any, node: records.Node) -> dict[str, Any]:
    """The status of a node the ledger registered just now, as the batched loop would write it (nothing used, no
    uptime, nothing minted or attested yet): one status write at registration instead of the handler's and then
    the loop's (issue 17). Anything that moves later (a placement, an uptime report) is the loop's change to write."""
    now = rt.clock.now()
    stamp, generation = conditions.timestamp(now), body["metadata"].get("generation", 1)
    summary = records.NodeSummary(
        name=node.name, farm=node.farm, resources=node.resources, used=Resources(), contracts=0, uptime_s=0,
        uptime_permille=0, last_report_ts=None, violation=None, minted_total=0, last_mint=None, last_mint_period=None,
        last_mint_reason=None, owner=node.owner, node_id=node.id)
    status = dict(body.get("status") or {})
    desired = projections.node_status(summary, status, generation, stamp, now, rt.ledger.config)
    return projections.node_attestation(desired, body.get("spec") or {}, summary, None, None, generation, stamp)


@kopf.on.delete(G, V, "nodes")
@reporting.metered("node")
async def delete_node(body: Any, name: str, patch: kopf.Patch, memo: kopf.Memo, retry: int = 0, **_: Any) -> None:
    rt = runtime.get(memo)
    leases.forget(name)
    await reporting.close_on_ledger(rt, body, patch, close_node(rt, body), message=lambda _: None, retry=retry,
                                    waits=WAITS)  # routine: no Event
    blocked.gone(rt, blocked.dependent("nodes", name))  # its farm's delete may wait for nothing else


async def close_node(rt: runtime.Runtime, body: Any) -> None:
    await rt.ledger.close_node(name=body["metadata"]["name"], owner=tenancy.owner(body), now=rt.clock.now())


# a Node's delete waits for the deployments it carries (the ledger names their contracts' keys); kopf's id of it
WAITS = reporting.Waits(plural="nodes", handler="delete_node", on="deployments")
blocked.closes(WAITS.plural, WAITS.on, close_node)


CERTIFICATION_ANNOTATION = f"certification.{runtime.PREFIX}/council"  # not under kopf's own prefix, which its diffs ignore


@kopf.on.resume(G, V, "nodes", annotations={CERTIFICATION_ANNOTATION: kopf.PRESENT})
@kopf.on.update(G, V, "nodes", field=("metadata", "annotations", CERTIFICATION_ANNOTATION))
@reporting.metered("node")
async def certification(body: Any, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Apply a council-signed (de)certification once; a bad, foreign or replayed one is an Event, not a change."""
    rt = runtime.get(memo)
    raw = (body["metadata"].get("annotations") or {}).get(CERTIFICATION_ANNOTATION)
    if not raw or body["metadata"].get("deletionTimestamp"):
        return
    try:
        c = json.loads(raw)
        certified, ts, member, sig = bool(c["certified"]), int(c["ts"]), str(c["memberKey"]), str(c["signature"])
        if c.get("node") != name:
            raise ValueError(f"it names node {c.get('node')!r}")
        # a certification names the capacity the council certified: applied only while the node attests it
        resources = Resources(*(int(c[f]) for f in ("cru", "mru", "sru", "hru"))) if certified else None
        att = await rt.ledger.certify_node(node=name, certified=certified, ts=ts, member_key=member, signature=sig,
                                           council=rt.settings.council, now=rt.clock.now(), resources=resources)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        kopf.warn(body, reason=str(Reason.CERTIFICATION_REJECTED), message=f"malformed certification: {exc}")
    except errors.NotFound as err:  # not registered, or no attested capacity yet: its agent will report
        raise kopf.TemporaryError(err.message, delay=rt.retry_delay_s * 10) from err
    except (errors.BadSignature, errors.Replayed) as err:
        kopf.warn(body, reason=str(Reason.CERTIFICATION_REJECTED), message=err.message)
    except errors.Unavailable as err:
        raise kopf.TemporaryError(err.message, delay=rt.retry_delay_s) from err
    else:
        if not att.changed:
            return  # seen before (a restart re-lists the Node): said once already
        kopf.info(body, reason=str(Reason.CERTIFIED),
                  message=f"node {name} is {'certified' if att.certified else 'DIY'} by the council")


