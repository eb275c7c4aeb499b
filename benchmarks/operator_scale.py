"""Operator scale benchmark: the real operator against the local API emulator at grid size.

Creates 50 farms, 1,000 nodes and 10,000 deployments through the API (--scale 0.1: a tenth), then runs one
billing and one minting period over everything, then restarts the operator. Prints one JSON object:

  objects, all_ready_s, reconciled_per_s, p50_ready_s, p99_ready_s   creation through Ready
  raw_api_per_s, ratio         the same emulator's create+status-patch rate with no operator, and
                               operator throughput / raw API throughput
  period_s, period_api_calls, noop_patches, steady_tick_patches      one billing + one minting period
  peak_rss_mb, rss_per_object_kb   of this whole process (operator + emulator + driver: an upper bound)
  restart_idle_s, rebilled_on_restart

Not a pass/fail test: the machines are noisy. python benchmarks/operator_scale.py [--scale 0.1] [--ledger postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tfgrid_operator import agent, backend, clock, local, metrics, runtime
from tfgrid_operator.domain import identity
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.settings import Settings

PG = os.environ.get("TFGRID_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
API = "/apis/grid.threefold.io/v1alpha1/namespaces"
START = 1_767_225_600
H = 3600
CONFIG = backend.LedgerConfig(billing_period_s=H, minting_epoch=START, minting_period_s=H, mint_settle_s=0)
CONCURRENCY = 16
OWNER = identity.KeyPair.generate()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bodies(farms: int, nodes: int, deployments: int, keys: dict[str, identity.KeyPair]) -> dict[str, list[dict]]:
    api = "grid.threefold.io/v1alpha1"
    return {
        "farms": [{"apiVersion": api, "kind": "Farm", "metadata": {"name": f"farm{i}"},
                   "spec": {"ownerKey": OWNER.public_key, "payoutAccount": f"farmer{i}"}} for i in range(farms)],
        "nodes": [{"apiVersion": api, "kind": "Node", "metadata": {"name": f"node{i}"},
                   "spec": {"farm": f"farm{i % farms}", "publicKey": keys[f"node{i}"].public_key,
                            "resources": {"cru": 64, "mru": 256, "sru": 4000}, "location": {"country": "BE"}}}
                  for i in range(nodes)],
        "deployments": [{"apiVersion": api, "kind": "Deployment", "metadata": {"name": f"d{i}"},
                         "spec": {"resources": {"cru": 1, "mru": 2, "sru": 20}, "payer": {"account": f"payer{i % 100}"}}}
                        for i in range(deployments)],
    }


async def fan_out(items: list, fn) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(x):
        async with sem:
            await fn(x)
    await asyncio.gather(*(one(x) for x in items))


def is_ready(obj: dict | None) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in ((obj or {}).get("status") or {}).get("conditions") or [])


async def raw_api(kube: KubeClient, sample: dict[str, list[dict]]) -> float:
    """The emulator's rate for the same calls the operator's work needs at least: create, then patch status."""
    docs = [(plural, b) for plural, items in sample.items() for b in items]
    status = {"conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    started = time.perf_counter()

    async def create_and_patch(item):
        plural, body = item
        await kube.request("POST", f"{API}/raw/{plural}", body)
        await kube.request("PATCH", f"{API}/raw/{plural}/{body['metadata']['name']}/status", {"status": status},
                           "application/merge-patch+json")
    await fan_out(docs, create_and_patch)
    rate = len(docs) / (time.perf_counter() - started)
    await fan_out(docs, lambda item: kube.request("DELETE", f"{API}/raw/{item[0]}/{item[1]['metadata']['name']}"))
    return rate


async def create_until_ready(emu, kube: KubeClient, plural: str, items: list[dict], created: dict, ready: dict) -> None:
    async def create(body):
        await kube.request("POST", f"{API}/default/{plural}", body)
        created[(plural, body["metadata"]["name"])] = time.perf_counter()
    pending = {b["metadata"]["name"] for b in items}

    async def watch() -> None:
        while pending:
            now = time.perf_counter()
            for name in list(pending):
                if is_ready(emu.store.get((f"grid.threefold.io/v1alpha1/{plural}", "default", name))):
                    ready[(plural, name)] = now
                    pending.discard(name)
            await asyncio.sleep(0.25)  # the scan is the driver's cost, not the operator's: keep it rare
    watcher = asyncio.create_task(watch())
    await fan_out(items, create)
    await asyncio.wait_for(watcher, 3600)


async def fresh_ledger(kind: str) -> tuple[str, object]:
    if kind == "sqlite":
        tmp = tempfile.mkdtemp(prefix="tfgrid-bench-")
        return f"sqlite:///{tmp}/ledger.db", None
    name = f"tfgrid_bench_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(PG.replace("postgresql://", "postgresql+asyncpg://", 1), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text(f"CREATE DATABASE {name}"))
    return PG.rsplit("/", 1)[0] + "/" + name, (admin, name)


async def drop_ledger(handle) -> None:
    if handle is None:
        return
    admin, name = handle
    async with admin.connect() as conn:
        await conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    await admin.dispose()


async def wait_idle(rt: runtime.Runtime, at_least: float, quiet_s: float = 1.0) -> None:
    """Until the handlers ran ``at_least`` times in total and then nothing ran for ``quiet_s``."""
    def total() -> float:
        return sum(rt.metrics.reconciled(c, r) for c in ("farm", "node", "deployment") for r in ("success", "requeue"))
    last, since = total(), time.perf_counter()
    while True:
        await asyncio.sleep(0.1)
        now = total()
        if now != last:
            last, since = now, time.perf_counter()
        elif now >= at_least and time.perf_counter() - since >= quiet_s:
            return


async def ticked(rt: runtime.Runtime) -> float:
    return rt.metrics.registry.get_sample_value("controller_runtime_reconcile_time_seconds_count",
                                                {"controller": "periodic"}) or 0


async def bench(scale: float, ledger_kind: str) -> dict:
    farms, nodes, deployments = max(1, round(50 * scale)), max(1, round(1000 * scale)), round(10_000 * scale)
    keys = {f"node{i}": identity.KeyPair.generate() for i in range(nodes)}
    docs = bodies(farms, nodes, deployments, keys)
    objects = farms + nodes + deployments
    url, handle = await fresh_ledger(ledger_kind)
    clk = clock.ManualClock(START)
    result: dict = {"ledger": ledger_kind, "scale": scale, "objects": objects, "farms": farms, "nodes": nodes,
                    "deployments": deployments}

    async def make_runtime() -> runtime.Runtime:
        settings = Settings(tick_s=3600, metrics_port=0)  # the loop ticks when the benchmark wakes it
        return runtime.Runtime(settings=settings, clock=clk, ledger=await backend.open_backend(url, CONFIG),
                               kube=KubeClient(), metrics=metrics.Metrics())

    try:
        async with local.local_api(record_requests=False) as emu, KubeClient(user_agent="bench") as kube:
            result["raw_api_per_s"] = round(await raw_api(kube, docs), 1)
            ledger = await backend.open_backend(url, CONFIG)
            for i in range(100):
                await ledger.ensure_account(name=f"payer{i}")
                await ledger.fund(name=f"payer{i}", amount=10**15)
            base_rss = rss_mb()
            created: dict = {}
            ready: dict = {}
            async with local.operator(make_runtime) as rt:
                started = time.perf_counter()
                for plural in ("farms", "nodes", "deployments"):
                    await create_until_ready(emu, kube, plural, docs[plural], created, ready)
                all_ready = time.perf_counter() - started
                latencies = sorted(ready[k] - created[k] for k in ready)
                result.update(
                    all_ready_s=round(all_ready, 2), reconciled_per_s=round(objects / all_ready, 1),
                    p50_ready_s=round(statistics.median(latencies), 3),
                    p99_ready_s=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3))
                result["ratio"] = round(result["reconciled_per_s"] / result["raw_api_per_s"], 3)
                # one uptime report per node inside the period, then the period ends
                clk.set(START + 3000)
                await fan_out(list(keys), lambda n: agent.send_report(kube, keys[n], namespace="default", node=n,
                                                                      ts=START + 3000, uptime=3600))
                await asyncio.sleep(1)
                await settle(rt)  # statuses caught up before the period: what follows is the period's work only
                calls0, noop0 = len(emu.calls), len(emu.noop_writes)
                clk.set(START + H)
                t0 = time.perf_counter()
                await settle(rt)
                result["period_s"] = round(time.perf_counter() - t0, 2)
                result["period_api_calls"] = sum(1 for c in emu.calls[calls0:] if c.agent.startswith(("kopf", "tfgrid-operator")))
                result["noop_patches"] = sum(1 for w in emu.noop_writes[noop0:] if w[1] == "status")
                patched_before = len(emu.calls)
                await settle(rt)  # nothing changed: a steady tick writes nothing
                result["steady_tick_patches"] = sum(1 for c in emu.calls[patched_before:] if c.verb == "patch")
                billed_before = sum(c.billed_total for c in (await ledger.contract_summaries()).values())
            peak = rss_mb()
            result["peak_rss_mb"] = round(peak, 1)
            result["rss_per_object_kb"] = round((peak - base_rss) * 1024 / objects, 2)
            restarted = time.perf_counter()
            async with local.operator(make_runtime) as rt:
                await wait_idle(rt, at_least=objects)
                result["restart_idle_s"] = round(time.perf_counter() - restarted, 2)
                await settle(rt)
            billed_after = sum(c.billed_total for c in (await ledger.contract_summaries()).values())
            result["rebilled_on_restart"] = billed_after - billed_before
            await ledger.close()
    finally:
        await drop_ledger(handle)
    return result


async def settle(rt: runtime.Runtime) -> None:
    """Wake the batched loop and wait for that tick to finish."""
    before = await ticked(rt)
    rt.wake.set()
    while await ticked(rt) <= before:
        await asyncio.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--ledger", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.scale, args.ledger))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
