"""The node agent: holds a node's ed25519 key and renews the node's Lease with a signed uptime report and a
signed capacity report (what it measured, as Zero-OS reports a node's resources on TFChain, §1.3).

    tfgrid-operator node-agent --node NAME --namespace NS --key-file F [--interval 2400]
        [--ssd PATH ...] [--hdd PATH ...] [--capacity cru=8,mru=32,sru=1000,hru=0 | --capacity-file F]

By default it measures the machine it runs on: cores from the CPUs this process may run on, memory from
/proc/meminfo, SSD and HDD from the total size of the given paths' filesystems (GiB, base 1024, §0). An
explicit ``--capacity`` (a simulation: the sandbox, tests) overrides the measurement.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import time
from collections.abc import Iterable

from tfgrid_operator import conditions
from tfgrid_operator.clock import Clock
from tfgrid_operator.domain import attestation, identity
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient

NODE_LABEL = "grid.threefold.io/node"
REPORT_ANNOTATION = "grid.threefold.io/uptime-report"
CAPACITY_ANNOTATION = "grid.threefold.io/capacity-report"
GIB = 1024**3
FIELDS = ("cru", "mru", "sru", "hru")


def lease_name(node: str) -> str:
    return f"tfgrid-node-{node}"


def measure(*, ssd: Iterable[str] = ("/",), hdd: Iterable[str] = (), meminfo: str = "/proc/meminfo") -> Resources:
    """The machine's capacity: usable cores, memory and the filesystems of the given paths, in whole GiB."""
    cru = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    mem_kib = 0
    for line in pathlib.Path(meminfo).read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    # a filesystem counts once, however many of its paths are given
    disks = [{os.stat(p).st_dev: shutil.disk_usage(p).total for p in paths} for paths in (ssd, hdd)]
    return Resources(cru=cru, mru=mem_kib * 1024 // GIB, sru=sum(disks[0].values()) // GIB,
                     hru=sum(disks[1].values()) // GIB)


def parse_capacity(text: str) -> Resources:
    """``cru=8,mru=32,sru=1000,hru=0`` (omitted fields are 0); a clear ValueError otherwise."""
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in FIELDS or not value.strip().isdigit():
            raise ValueError(f"capacity {text!r}: expected cru=N,mru=N,sru=N,hru=N (whole cores and GiB)")
        values[key.strip()] = int(value)
    if "cru" not in values or "mru" not in values:
        raise ValueError(f"capacity {text!r}: cru and mru are required")
    return Resources(**values)


def load_capacity(path: pathlib.Path) -> Resources:
    """A capacity file: a JSON or YAML mapping of cru, mru, sru, hru."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or set(doc) - set(FIELDS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in doc.values()):
        raise ValueError(f"{path}: expected a mapping of cru, mru, sru, hru to whole numbers")
    return parse_capacity(",".join(f"{k}={v}" for k, v in doc.items()))


def signed_report(key: identity.KeyPair, *, node: str, ts: int, uptime: int) -> dict[str, object]:
    payload = {"node": node, "ts": ts, "uptime": uptime}
    return {**payload, "signature": key.sign(identity.UPTIME, payload)}


def signed_capacity(key: identity.KeyPair, *, node: str, ts: int, capacity: Resources) -> dict[str, object]:
    payload = attestation.capacity_payload(node=node, ts=ts, resources=capacity)
    return {**payload, "signature": key.sign(identity.CAPACITY, payload)}


async def send_report(kube: KubeClient, key: identity.KeyPair, *, namespace: str, node: str, ts: int, uptime: int,
                      capacity: Resources | None = None) -> None:
    """Renew the Lease with the signed uptime report and, when given, the signed capacity report."""
    annotations = {REPORT_ANNOTATION: json.dumps(signed_report(key, node=node, ts=ts, uptime=uptime))}
    if capacity is not None:
        annotations[CAPACITY_ANNOTATION] = json.dumps(signed_capacity(key, node=node, ts=ts, capacity=capacity))
    await kube.apply_lease(namespace, lease_name(node), {NODE_LABEL: node}, annotations,
                           holder=f"node-agent/{node}", renew_time=conditions.timestamp(ts).replace("Z", ".000000Z"))


async def run(kube: KubeClient, key: identity.KeyPair, *, namespace: str, node: str, clock: Clock,
              interval_s: float, capacity: Resources, boot_ts: int | None = None, count: int | None = None) -> None:
    """Report every ``interval_s`` wall seconds (Zero-OS reports every 40 minutes, §1.3)."""
    boot = boot_ts if boot_ts is not None else clock.now() - int(time.monotonic())
    sent = 0
    while count is None or sent < count:
        now = clock.now()
        await send_report(kube, key, namespace=namespace, node=node, ts=now, uptime=now - boot, capacity=capacity)
        sent += 1
        await asyncio.sleep(interval_s)
