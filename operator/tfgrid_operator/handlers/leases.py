"""Uptime evidence: a node agent renews a Lease per node (as kubelets do) whose annotation carries
its signed uptime report. Each new report is verified against the node's key on the ledger."""

from __future__ import annotations

import json
from typing import Any

import kopf

from tfgrid_operator import runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.conditions import Reason
from tfgrid_operator.handlers import reporting

NODE_LABEL = f"{runtime.PREFIX}/node"
REPORT_ANNOTATION = f"{runtime.PREFIX}/uptime-report"


def node_ref(namespace: str, node: str) -> dict[str, Any]:
    tracked = runtime.get().objects.get(("nodes", namespace, node))
    meta = (tracked or {}).get("metadata", {"name": node, "namespace": namespace})
    return {"apiVersion": f"{runtime.GROUP}/{runtime.VERSION}", "kind": "Node", "metadata": meta}


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={NODE_LABEL: kopf.PRESENT})
@reporting.metered("lease")
async def uptime_report(body: Any, namespace: str, **_: Any) -> None:
    rt = runtime._current
    if rt is None or body.get("metadata", {}).get("deletionTimestamp"):
        return
    node = body["metadata"]["labels"][NODE_LABEL]
    raw = (body["metadata"].get("annotations") or {}).get(REPORT_ANNOTATION)
    if not raw:
        return
    try:
        report = json.loads(raw)
        ts, up, sig = int(report["ts"]), int(report["uptime"]), str(report["signature"])
        if report.get("node") != node:
            raise errors.BadSignature(f"the report names node {report.get('node')!r}, the lease is for {node!r}")
        await rt.ledger.record_uptime(node=node, ts=ts, uptime=up, signature=sig, now=rt.clock.now())
    except (ValueError, KeyError, TypeError) as exc:
        rt.metrics.uptime_rejected.labels("Malformed").inc()
        kopf.warn(node_ref(namespace, node), reason=str(Reason.UPTIME_REJECTED),
                  message=f"malformed uptime report for node {node}: {exc}")
    except (errors.BadSignature, errors.Replayed, errors.NotFound) as err:
        rt.metrics.uptime_rejected.labels(err.reason).inc()
        kopf.warn(node_ref(namespace, node), reason=str(Reason.UPTIME_REJECTED), message=err.message)
    except errors.LedgerError as err:
        raise kopf.TemporaryError(err.message, delay=rt.retry_delay_s) from err
