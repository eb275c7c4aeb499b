"""Uptime and capacity evidence: a node agent renews a Lease per node (as kubelets do) whose annotations carry
its signed uptime report and its signed capacity report. Each is verified against the node's key on the ledger.
The Lease of a Node that is gone (deleted, closed on the ledger) is ignored quietly."""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any

import kopf

from tfgrid_operator import runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.handlers import reporting

NODE_LABEL = f"{runtime.PREFIX}/node"
REPORT_ANNOTATION = f"{runtime.PREFIX}/uptime-report"
CAPACITY_ANNOTATION = f"{runtime.PREFIX}/capacity-report"
log = logging.getLogger("tfgrid_operator.leases")


def node_ref(rt: runtime.Runtime, namespace: str, node: str) -> dict[str, Any]:
    tracked = rt.objects.get(("nodes", namespace, node))
    meta = (tracked or {}).get("metadata", {"name": node, "namespace": namespace})
    return {"apiVersion": f"{runtime.GROUP}/{runtime.VERSION}", "kind": "Node", "metadata": meta}


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={NODE_LABEL: kopf.PRESENT})
@reporting.metered("lease")
async def uptime_report(body: Any, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime.of(memo)
    if rt is None or body.get("metadata", {}).get("deletionTimestamp"):
        return
    node = body["metadata"]["labels"][NODE_LABEL]
    annotations = body["metadata"].get("annotations") or {}
    for annotation, record in ((REPORT_ANNOTATION, _uptime), (CAPACITY_ANNOTATION, _attest)):
        raw = annotations.get(annotation)
        if not raw:
            continue
        try:
            report = json.loads(raw)
            if not isinstance(report, dict):
                raise ValueError("not a JSON object")
            if report.get("node") != node:
                raise errors.BadSignature(f"the report names node {report.get('node')!r}, the lease is for {node!r}")
            await record(rt, node, report)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # OverflowError: int() of a JSON 1e400
            rt.metrics.uptime_rejected.labels("Malformed").inc()
            kopf.warn(node_ref(rt, namespace, node), reason=str(Reason.UPTIME_REJECTED),
                      message=f"malformed {annotation.rpartition('/')[2]} for node {node}: {exc}")
        except errors.NotFound as err:
            if ("nodes", namespace, node) not in rt.objects:
                log.debug("Lease %s/%s: node %s is gone; report ignored", namespace, body["metadata"]["name"], node)
                return
            rt.metrics.uptime_rejected.labels(err.reason).inc()
            kopf.warn(node_ref(rt, namespace, node), reason=str(Reason.UPTIME_REJECTED), message=err.message)
        except (errors.BadSignature, errors.Replayed, errors.InvalidRequest) as err:
            rt.metrics.uptime_rejected.labels(err.reason).inc()
            kopf.warn(node_ref(rt, namespace, node), reason=str(Reason.UPTIME_REJECTED), message=err.message)
        except errors.LedgerError as err:
            raise kopf.TemporaryError(err.message, delay=rt.retry_delay_s) from err


async def _uptime(rt: runtime.Runtime, node: str, report: dict[str, Any]) -> None:
    ts, up, sig = int(report["ts"]), int(report["uptime"]), str(report["signature"])
    await rt.ledger.record_uptime(node=node, ts=ts, uptime=up, signature=sig, now=rt.clock.now())


# per ledger (a new ledger object never sees another's entries): node → the capacity that ledger last accepted
_ATTESTED: weakref.WeakKeyDictionary[Any, dict[str, Resources]] = weakref.WeakKeyDictionary()


def forget(node: str) -> None:
    """A deleted node's cache entry goes with it (a new node of the same name must attest afresh)."""
    for held in _ATTESTED.values():
        held.pop(node, None)


async def _attest(rt: runtime.Runtime, node: str, report: dict[str, Any]) -> None:
    """Issue 13, invariant 3: the capacity the node's key attests is what mints and weighs. The same capacity
    restated (every report) is not a ledger write: it changes nothing there."""
    resources = Resources(*(int(report[f]) for f in ("cru", "mru", "sru", "hru")))
    held = _ATTESTED.setdefault(rt.ledger, {})
    if held.get(node) == resources:
        return
    att = await rt.ledger.attest_capacity(node=node, ts=int(report["ts"]), resources=resources,
                                          signature=str(report["signature"]), now=rt.clock.now())
    held[node] = att.resources
