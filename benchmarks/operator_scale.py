"""Operator scale benchmark: the real operator against the local API emulator at grid size.

The emulator (the "cluster") runs in this process; the operator runs as `tfgrid-operator run` in a process of its
own, as in its pod, with its time read from a file this benchmark moves. Creates 50 farms, 1,000 nodes and 10,000
deployments through the API (--scale 0.1: a tenth), runs one billing and one minting period over everything, then
restarts the operator. Prints one JSON object:

  objects, all_ready_s, reconciled_per_s, p50_ready_s, p99_ready_s   creation through Ready
  raw_api_per_s, ratio         the same emulator's create+status-patch rate for the same objects, driven by a client
                               in a process of its own (as the operator is), and operator / raw throughput
  period_s                     the loop's ticks that minted and billed the period and wrote every status
  period_api_calls, noop_patches, steady_tick_s, steady_tick_patches
  peak_rss_mb, rss_per_object_kb     of the operator's process (VmHWM; per object: RSS growth / objects)
  restart_idle_s, rebilled_on_restart
  calls_per_object             the operator's API calls during creation, by verb and resource, per object

Not a pass/fail test: the machines are noisy.
    python benchmarks/operator_scale.py [--scale 0.1] [--ledger postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import aiohttp
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

from tfgrid_operator import agent, backend
from tfgrid_operator.domain import identity, names
from tfgrid_operator.handlers import tenancy
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.sandbox import local

PG = os.environ.get("TFGRID_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
API = "/apis/grid.threefold.io/v1alpha1/namespaces"
START = 1_767_225_600
H = 3600
CONFIG = backend.LedgerConfig(billing_period_s=H, minting_epoch=START, minting_period_s=H, mint_settle_s=0)
TICK_S = 5.0  # the operator's default (settings.tick_s)
CONCURRENCY = 16
OWNER = identity.KeyPair.generate()


def sizes(scale: float) -> tuple[int, int, int]:
    return max(1, round(50 * scale)), max(1, round(1000 * scale)), round(10_000 * scale)


def bodies(farms: int, nodes: int, deployments: int, keys: dict[str, str]) -> dict[str, list[dict]]:
    api = "grid.threefold.io/v1alpha1"
    return {
        "farms": [{"apiVersion": api, "kind": "Farm", "metadata": {"name": f"farm{i}"},
                   "spec": {"ownerKey": OWNER.public_key, "payoutAccount": f"farmer{i}"}} for i in range(farms)],
        "nodes": [{"apiVersion": api, "kind": "Node", "metadata": {"name": f"node{i}"},
                   "spec": {"farm": f"farm{i % farms}", "publicKey": keys[f"node{i}"],
                            "resources": {"cru": 64, "mru": 256, "sru": 4000}, "location": {"country": "BE"}}}
                  for i in range(nodes)],
        "deployments": [{"apiVersion": api, "kind": "Deployment", "metadata": {"name": f"d{i}"},
                         "spec": {"resources": {"cru": 1, "mru": 2, "sru": 20}, "payer": {
                             "account": f"payer{i % 100}", "grantRef": {"name": f"payer{i % 100}-grant"}}}}
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


async def raw_client(scale: float) -> float:
    """In its own process: the emulator's rate for the calls the operator's work needs at least, create then
    patch status, for as many objects as the benchmark creates."""
    farms, nodes, deployments = sizes(scale)
    docs = bodies(farms, nodes, deployments, {f"node{i}": identity.KeyPair.generate().public_key for i in range(nodes)})
    items = [(plural, b) for plural, group in docs.items() for b in group]
    status = {"conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    async with KubeClient(user_agent="bench-raw") as kube:
        started = time.perf_counter()

        async def create_and_patch(item):
            plural, body = item
            await kube.request("POST", f"{API}/raw/{plural}", body)
            await kube.request("PATCH", f"{API}/raw/{plural}/{body['metadata']['name']}/status", {"status": status},
                               "application/merge-patch+json")
        await fan_out(items, create_and_patch)
        rate = len(items) / (time.perf_counter() - started)
        await fan_out(items, lambda item: kube.request("DELETE", f"{API}/raw/{item[0]}/{item[1]['metadata']['name']}"))
    return rate


async def raw_api(scale: float) -> float:
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--raw-client", "--scale", str(scale),
                                                stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError("the raw API client failed")
    return float(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """`tfgrid-operator run` in a process of its own; its metrics scraped over HTTP, its memory read from /proc."""

    def __init__(self, ledger_url: str, clock_file: pathlib.Path, log: pathlib.Path) -> None:
        self.port, self.log = free_port(), log
        self.env = dict(os.environ, TFGRID_LEDGER_URL=ledger_url, TFGRID_CLOCK_FILE=str(clock_file),
                        TFGRID_METRICS_PORT=str(self.port), TFGRID_TICK_S=str(TICK_S),
                        TFGRID_BILLING_PERIOD_S=str(H), TFGRID_MINTING_EPOCH=str(START),
                        TFGRID_MINTING_PERIOD_S=str(H), TFGRID_MINT_SETTLE_S="0")
        self.proc: subprocess.Popen | None = None
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OperatorProcess:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tfgrid_operator", "run", "--standalone",
                 "--liveness", f"http://127.0.0.1:{free_port()}/healthz"], env=self.env, stdout=log, stderr=log)
        self.http = aiohttp.ClientSession()
        deadline = time.monotonic() + 60
        while True:
            try:
                await self.scrape()
                return self
            except aiohttp.ClientError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the operator did not start; see {self.log}") from None
                await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None and self.http is not None
        await self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.proc.wait, 60)

    async def scrape(self) -> dict[tuple[str, tuple], float]:
        assert self.http is not None
        async with self.http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            text = await resp.text()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def cpu_s(self) -> float:
        """User + system CPU seconds the operator's process used so far."""
        assert self.proc is not None
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self, field: str) -> float:
        """VmRSS (now) or VmHWM (peak) of the operator's process."""
        assert self.proc is not None
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc")

    async def reconciled(self) -> float:
        m = await self.scrape()
        return sum(v for (name, labels), v in m.items() if name == "controller_runtime_reconcile_total"
                   and dict(labels)["result"] in ("success", "requeue"))

    async def ticks(self) -> tuple[float, float]:
        m = await self.scrape()
        return m[("tfgrid_loop_tick_seconds_count", ())], m[("tfgrid_loop_tick_seconds_sum", ())]

    async def settle(self) -> float:
        """Until a tick started after now has finished; returns those ticks' total duration (an upper bound of
        the work that the state as of now needed)."""
        count, total = await self.ticks()
        while True:
            await asyncio.sleep(0.05)
            c, t = await self.ticks()
            if c >= count + 2:
                return t - total

    async def wait_idle(self, at_least: float, quiet_s: float = 1.0) -> None:
        """Until the handlers ran ``at_least`` times in total and then nothing ran for ``quiet_s``."""
        last, since = await self.reconciled(), time.perf_counter()
        while True:
            await asyncio.sleep(0.25)
            now = await self.reconciled()
            if now != last:
                last, since = now, time.perf_counter()
            elif now >= at_least and time.perf_counter() - since >= quiet_s:
                return


def set_clock(path: pathlib.Path, ts: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(ts))
    tmp.replace(path)


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


async def fresh_ledger(kind: str, tmp: pathlib.Path) -> tuple[str, object]:
    if kind == "sqlite":
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


def operator_calls(calls: list) -> list:
    return [c for c in calls if c.agent.startswith(("kopf", "tfgrid-operator"))]


async def bench(scale: float, ledger_kind: str) -> dict:
    farms, nodes, deployments = sizes(scale)
    keys = {f"node{i}": identity.KeyPair.generate() for i in range(nodes)}
    docs = bodies(farms, nodes, deployments, {n: k.public_key for n, k in keys.items()})
    objects = farms + nodes + deployments
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tfgrid-bench-"))
    url, handle = await fresh_ledger(ledger_kind, tmp)
    clock_file = tmp / "now"
    set_clock(clock_file, START)
    result: dict = {"ledger": ledger_kind, "scale": scale, "objects": objects, "farms": farms, "nodes": nodes,
                    "deployments": deployments}
    log = tmp / "operator.log"
    try:
        async with local.local_api(record_requests=False) as emu, KubeClient(user_agent="bench") as kube:
            result["raw_api_per_s"] = round(await raw_api(scale), 1)
            ledger = await backend.open_backend(url, CONFIG)
            for i in range(100):  # twins that granted the namespace their payment (tfgrid-operator grant)
                twin = identity.KeyPair.generate()
                await ledger.ensure_account(name=f"payer{i}", public_key=twin.public_key)
                await ledger.fund(name=f"payer{i}", amount=10**15)
                grant = names.Grant(f"payer{i}", "default", START + names.MAX_GRANT_S).signed(twin)
                await kube.request("POST", "/api/v1/namespaces/default/secrets",
                                   tenancy.grant_secret(grant, f"payer{i}-grant"))
            created: dict = {}
            ready: dict = {}
            async with OperatorProcess(url, clock_file, log) as op:
                base_rss = op.memory_mb("VmRSS")
                calls0, cpu0 = len(emu.calls), op.cpu_s()
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
                await op.wait_idle(at_least=objects)
                result["operator_cpu_ms_per_object"] = round((op.cpu_s() - cpu0) * 1000 / objects, 2)
                by_call = collections.Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}"
                                              for c in operator_calls(emu.calls[calls0:]))
                result["calls_per_object"] = {k: round(v / objects, 2) for k, v in sorted(by_call.items())}
                # one uptime report per node inside the period, then the period ends
                set_clock(clock_file, START + 3000)
                await fan_out(list(keys), lambda n: agent.send_report(kube, keys[n], namespace="default", node=n,
                                                                      ts=START + 3000, uptime=3600))
                await op.wait_idle(at_least=objects + nodes)
                await op.settle()  # statuses caught up before the period: what follows is the period's work only
                calls0, noop0 = len(emu.calls), len(emu.noop_writes)
                set_clock(clock_file, START + H)
                result["period_s"] = round(await op.settle(), 2)
                result["period_api_calls"] = len(operator_calls(emu.calls[calls0:]))
                result["noop_patches"] = sum(1 for w in emu.noop_writes[noop0:] if w[1] == "status")
                patched_before = len(emu.calls)
                result["steady_tick_s"] = round(await op.settle() / 2, 2)  # nothing changed: a steady tick writes nothing
                result["steady_tick_patches"] = sum(1 for c in emu.calls[patched_before:] if c.verb == "patch")
                billed_before = sum(c.billed_total for c in (await ledger.contract_summaries()).values())
                peak = op.memory_mb("VmHWM")
                result["peak_rss_mb"] = round(peak, 1)
                result["rss_per_object_kb"] = round((op.memory_mb("VmRSS") - base_rss) * 1024 / objects, 2)
            restarted = time.perf_counter()
            async with OperatorProcess(url, clock_file, log) as op:
                await op.wait_idle(at_least=objects)
                result["restart_idle_s"] = round(time.perf_counter() - restarted, 2)
                await op.settle()
            billed_after = sum(c.billed_total for c in (await ledger.contract_summaries()).values())
            result["rebilled_on_restart"] = billed_after - billed_before
            await ledger.close()
    finally:
        await drop_ledger(handle)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--ledger", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--raw-client", action="store_true", help=argparse.SUPPRESS)  # the raw_api() child
    args = parser.parse_args()
    if args.raw_client:
        print(asyncio.run(raw_client(args.scale)))
        return
    print(json.dumps(asyncio.run(bench(args.scale, args.ledger))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
