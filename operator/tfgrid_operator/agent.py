"""The node agent: holds a node's ed25519 key and renews the node's Lease with a signed uptime report.

    tfgrid-operator node-agent --node NAME --namespace NS --key-file F [--interval 2400]
"""

from __future__ import annotations

import asyncio
import json
import time

from tfgrid_operator import conditions
from tfgrid_operator.clock import Clock
from tfgrid_operator.domain import identity
from tfgrid_operator.kube.client import KubeClient

NODE_LABEL = "grid.threefold.io/node"
REPORT_ANNOTATION = "grid.threefold.io/uptime-report"


def lease_name(node: str) -> str:
    return f"tfgrid-node-{node}"


def signed_report(key: identity.KeyPair, *, node: str, ts: int, uptime: int) -> dict[str, object]:
    payload = {"node": node, "ts": ts, "uptime": uptime}
    return {**payload, "signature": key.sign(identity.UPTIME, payload)}


async def send_report(kube: KubeClient, key: identity.KeyPair, *, namespace: str, node: str, ts: int, uptime: int) -> None:
    report = signed_report(key, node=node, ts=ts, uptime=uptime)
    await kube.apply_lease(namespace, lease_name(node), {NODE_LABEL: node}, {REPORT_ANNOTATION: json.dumps(report)},
                           holder=f"node-agent/{node}", renew_time=conditions.timestamp(ts).replace("Z", ".000000Z"))


async def run(kube: KubeClient, key: identity.KeyPair, *, namespace: str, node: str, clock: Clock,
              interval_s: float, boot_ts: int | None = None, count: int | None = None) -> None:
    """Report every ``interval_s`` wall seconds (Zero-OS reports every 40 minutes, §1.3)."""
    boot = boot_ts if boot_ts is not None else clock.now() - int(time.monotonic())
    sent = 0
    while count is None or sent < count:
        now = clock.now()
        await send_report(kube, key, namespace=namespace, node=node, ts=now, uptime=now - boot)
        sent += 1
        await asyncio.sleep(interval_s)
