"""Operator scale benchmark: the real operator against the local API emulator at grid size, beside kopf's own ceiling.

The emulator (the "cluster") runs in this process; the operator runs as `tfgrid-operator run` in a process of its
own, as in its pod, with its time read from a file this benchmark moves. One run, in order:
  1. the raw API rate: a client in a process of its own creates the objects and patches their status;
  2. kopf's ceiling: benchmarks/kopf_ceiling.py's do-nothing kopf operator over the same objects (its namespace,
     deleted before ours starts);
  3. ours: creates 50 farms, 1,000 nodes and 10,000 deployments (--scale 0.1: a tenth) in namespace `grid`, kind by
     kind, each Ready before the next; --pairs (1) batches of deployments while idle, one after the other; one
     billing + minting period; --pairs more periods, each with a batch of the same size created while its status
     write-back runs; a restart; the namespace deleted.
Prints one JSON object:

  objects, all_ready_s, reconciled_per_s, p50_ready_s, p99_ready_s   the burst: creation through Ready
  raw_api_per_s, ratio         the same emulator's create+status-patch rate for the same objects, driven by a client
                               in a process of its own (as the operator is), and operator / raw throughput
  kopf_ceiling_per_s, kopf_cpu_ms_per_object, ratio_to_kopf   the do-nothing kopf operator over the same objects
                               in the same run: its objects/s and CPU per object; ours / its objects per second
  cpu_ms_per_object            the operator's CPU from the burst's first create until its handlers are quiet, per
                               object (operator_cpu_ms_per_object: the same, the key of earlier runs)
  writes_per_object            the operator's API writes (POST, PUT, PATCH: kopf's and the loop's, counted at the
                               emulator) during the burst, per object; writes_by_call: by verb and resource, per
                               object; writes_by_client: the same for kopf's client and ours apart
  delete_writes_per_object     the same while the namespace is deleted (everything in it at once, as a tenant's
                               `kubectl delete namespace`), per object; delete_writes_by_call,
                               delete_writes_by_client, delete_s, delete_cpu_ms_per_object, delete_peak_rss_mb
                               (the restarted process's peak RSS once the namespace is gone)
  p99_ready_idle_s             p99 create→Ready of a batch of deployments (5 % of the burst, at least 50) created
                               with nothing else running: once the loop has no write queued (the last write-back
                               sent; idle_batch_left_queued: what was still queued before the first if that took over
                               300 s) and one of its ticks has just ended, so no tick runs beside it; the median of
                               --pairs (1) such batches, one after the other, each batch's in p99_ready_idle_by_batch
  p99_ready_during_period_s    the same batch size created as a period's status write-back starts, one batch in
                               each of --pairs periods after the first (uptime reports in each: no node is down); the
                               median, and each batch's in p99_ready_during_period_by_batch; p99_ratio_by_pair the
                               n-th busy batch's p99 over the n-th idle one's; during_period_overlap (the median) and
                               during_period_overlaps: the share of a period's write-back sent while its batch was in
                               flight; p50_ready_idle_s and p50_ready_during_period_s the medians of the batches'
                               medians (each in p50_ready_*_by_batch); per batch, in lists: idle_batch_reconcile_mean_s
                               and busy_batch_reconcile_mean_s (each controller's mean reconcile time while it ran),
                               idle_batch_cpu_s and busy_batch_cpu_s (the CPU seconds meanwhile of the operator, of
                               the benchmark's process, the emulator, and of the ledger's server, PostgreSQL),
                               idle_batch_calls and busy_batch_calls (the operator's API calls meanwhile by client,
                               verb and resource)
  period_s                     the loop's ticks that minted and billed the first period and wrote every status
  period_ledger_s              of which the ledger's mint_period + bill_period (timed in the operator's process,
                               written to its log); period_ledger_by_call
  period_api_calls, noop_patches, steady_tick_s, steady_tick_patches
  peak_rss_mb, rss_per_object_kb     of the operator's process (VmHWM; per object: RSS growth over the burst / objects)
  object_bytes                 per kind, the mean JSON size of an object as the emulator returns it once the burst is
                               Ready, and of its managedFields (a real API server's share, which the emulator keeps
                               since issue 17's target 7)
  restart_idle_s, rebilled_on_restart, restart_writes (the operator's writes from its start until idle again),
  restart_left_queued (of them, the write-back the stopped process still had queued: its successor finds the same
  changes and writes them), restart_cpu_ms_per_object, restart_peak_rss_mb (the restarted process's peak RSS
  until idle: it lists every object); kopf_restart_idle_s, kopf_restart_cpu_ms_per_object: the
                               do-nothing kopf operator restarted over its objects (it resumes each), the floor
  calls_per_object             the operator's API calls (reads too) during the burst, by verb and resource, per object
  burst_s_by_kind, kopf_burst_s_by_kind   each kind's part of the burst (first POST to last Ready), ours and kopf's
  burst_reconcile_mean_s, restart_reconcile_mean_s   each controller's mean reconcile time (how long a handler holds
                               its object's kopf worker: latency, which bounds a kind whose objects wait on the ledger)
  driver_gc_pause_max_s, driver_gc_pause_s   the longest and the total garbage-collection pause of this process (the
                               "cluster") over the run: kept short (harness.DriverHeap), printed to show it was
  per_object_cost_by_scale     scale → CPU ms, RSS KB, writes and delete writes per object (target 8's growth check:
                               `--scales 0.3,1` runs each scale in turn and prints the last one's keys with all of
                               them; per_object_growth: the last scale's per-object cost / the first's)

Not a pass/fail test: the machines are noisy (counts of writes are not: tests/e2e/test_write_budget.py holds them).
    python benchmarks/operator_scale.py [--scale 0.1 | --scales 0.3,1] [--ledger postgresql] [--profile DIR]
--profile DIR: py-spy samples the operator during the burst, the first period, the restart and the deletion
(DIR/burst.txt, period.txt, restart.txt, delete.txt as collapsed stacks; *.top.txt: the top costs).
`pip install py-spy` into the .venv first.
BENCH_STALL_LOG=FILE: each time the operator's event loop does not come back for over 50 ms, when and for how long,
with the main thread's stacks meanwhile (sampled by a thread: biased towards the points that release the GIL, so
read the durations, and the stacks as hints); BENCH_SQL_LOG=FILE: the ledger's SQLite statements every 2 s, by time
on the ledger's thread (wall time: a busy event loop's GIL is in it); BENCH_TX_LOG=FILE: each of the ledger's write
transactions, who began it, how long it waited for the write lock and held it, and each refresh of the planner's
statistics. Each gets a MARK line at the idle and busy batches and at the restart (timed_operator.py).
--scale 0.1 took about five minutes on this 2-core machine while other work loaded it (most of it waits: kopf's
ceiling, the loop's 5 s ticks around two periods, a restart, a namespace deletion).
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
from typing import Any

import aiohttp
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import harness
import kopf_ceiling
import timed_operator
from tfgrid_operator import agent, backend
from tfgrid_operator.domain import identity, names
from tfgrid_operator.handlers import tenancy
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.sandbox import local

PG = os.environ.get("TFGRID_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NS = "grid"  # our objects' namespace (deleted at the end)
START = 1_767_225_600
H = 3600
UPTIME_AT_START = 600  # the nodes booted 10 minutes before the grid's start: a report at ts says ts - START + this
# idle and busy batches, one of each by default; --pairs 3 for target 2: the p99 of one batch of 500 on 2 cores moved
# 0.30-0.73 s idle between runs. More pairs are more objects (500 each) and periods a minute of wall time apart, whose
# counters the paced write-back cannot send in between (13,400 queued at the restart after 4 periods, ~500 after 2):
# the memory and restart figures of such a run are not grid size's
PAIRS = 1
CONFIG = backend.LedgerConfig(billing_period_s=H, minting_epoch=START, minting_period_s=H, mint_settle_s=0)
TICK_S = 5.0  # the operator's default (settings.tick_s)
OWNER = identity.KeyPair.generate()
LEDGER_TIMED = timed_operator.TIMED  # the period's ledger work, timed in the operator's process


async def raw_client(scale: float) -> float:
    """In its own process: the emulator's rate for the calls the operator's work needs at least, create then
    patch status, for as many objects as the benchmark creates."""
    farms, nodes, deployments = harness.sizes(scale)
    docs = harness.bodies(farms, nodes, deployments,
                          {f"node{i}": identity.KeyPair.generate().public_key for i in range(nodes)}, OWNER.public_key)
    items = [(plural, b) for plural, group in docs.items() for b in group]
    status = {"conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    async with KubeClient(user_agent="bench-raw") as kube:
        started = time.perf_counter()

        async def create_and_patch(item):
            plural, body = item
            await kube.request("POST", harness.api("raw", plural), body)
            await kube.request("PATCH", harness.api("raw", plural, body["metadata"]["name"]) + "/status",
                               {"status": status}, "application/merge-patch+json")
        await harness.fan_out(items, create_and_patch)
        rate = len(items) / (time.perf_counter() - started)
        await harness.fan_out(items, lambda item: kube.request("DELETE", harness.api("raw", item[0],
                                                                                     item[1]["metadata"]["name"])))
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
        self.ledger_log = log.with_suffix(".ledger")
        self.env = dict(os.environ, TFGRID_LEDGER_URL=ledger_url, TFGRID_CLOCK_FILE=str(clock_file),
                        TFGRID_METRICS_PORT=str(self.port), TFGRID_TICK_S=str(TICK_S),
                        TFGRID_BILLING_PERIOD_S=str(H), TFGRID_MINTING_EPOCH=str(START),
                        TFGRID_MINTING_PERIOD_S=str(H), TFGRID_MINT_SETTLE_S="0",
                        BENCH_LEDGER_LOG=str(self.ledger_log))
        self.proc: subprocess.Popen | None = None
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OperatorProcess:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(pathlib.Path(__file__).with_name("timed_operator.py")), "run", "--standalone",
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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def scrape(self) -> dict[tuple[str, tuple], float]:
        assert self.http is not None
        async with self.http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            text = await resp.text()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def cpu_s(self) -> float:
        return harness.cpu_s(self.pid)

    def memory_mb(self, field: str) -> float:
        return harness.memory_mb(self.pid, field)

    def ledger_lines(self) -> list[tuple[str, float]]:
        """(call, seconds) of every timed ledger call so far."""
        if not self.ledger_log.exists():
            return []
        return [(line.split()[0], float(line.split()[2])) for line in self.ledger_log.read_text().splitlines() if line]

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
            await asyncio.sleep(0.25)  # a scrape costs the operator CPU (prometheus' exposition): keep it rare
            c, t = await self.ticks()
            if c >= count + 2:
                return t - total

    async def quiet_loop(self, drained_within_s: float = 300.0) -> float:
        """Until the loop has no write queued (the burst's paced write-back sent, or ``drained_within_s`` passed) and
        one of its ticks has just ended: a batch created now runs before the next tick (settings.tick_s later) with
        nothing of the loop beside it — the idle baseline. Returns the writes still queued (0 once drained)."""
        deadline = time.monotonic() + drained_within_s
        while (queued := (await self.scrape())[("tfgrid_status_writes_queued", ())]) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        count, _ = await self.ticks()
        while (await self.ticks())[0] == count:
            await asyncio.sleep(0.05)
        return queued

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


def reconcile_means(samples: dict[tuple[str, tuple], float],
                    since: dict[tuple[str, tuple], float] | None = None) -> dict[str, float]:
    """Each controller's mean reconcile time (s) so far, or between the scrape ``since`` and ``samples``, from
    controller_runtime_reconcile_time_seconds: how long a handler holds its object's kopf worker (latency, not CPU:
    what a pool of workers goes at)."""
    name = "controller_runtime_reconcile_time_seconds"

    def by_controller(suffix: str) -> dict[str, float]:
        return {dict(labels)["controller"]: v - (since or {}).get((n, labels), 0.0)
                for (n, labels), v in samples.items() if n == f"{name}_{suffix}"}

    sums, counts = by_controller("sum"), by_controller("count")
    return {c: round(sums[c] / counts[c], 4) for c in sorted(sums) if counts.get(c)}


def set_clock(path: pathlib.Path, ts: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(ts))
    tmp.replace(path)


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


def object_bytes(emu: Any) -> dict[str, dict[str, int]]:
    """Each kind's mean object size in namespace NS (JSON as served) and the part of it its managedFields take."""
    out = {}
    for plural in harness.PLURALS:
        objs = [o for (key, ns, _), o in emu.store.items() if key == f"{harness.GROUP_API}/{plural}" and ns == NS]
        if objs:
            full = sum(len(json.dumps(o)) for o in objs)
            bare = sum(len(json.dumps({**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "managedFields"}}))
                       for o in objs)
            out[plural] = {"bytes": full // len(objs), "managed_fields_bytes": (full - bare) // len(objs)}
    return out


def operator_calls(calls: list) -> list:
    return [c for c in calls if c.agent.startswith(harness.OPERATOR_AGENTS)]


def loop_status_patches(calls: list) -> int:
    return sum(1 for c in calls if c.agent.startswith("tfgrid-operator") and c.verb == "patch" and c.subresource == "status")


async def batch_ready(emu, kube, op, ledger, prefix: str, count: int, first: int) -> dict[str, Any]:
    """p99 and p50 create→Ready of ``count`` deployments named PREFIX0… (polled every 20 ms: these are small), and
    meanwhile: each controller's mean reconcile time, the CPU seconds of the operator, of this process (the
    emulator, the driver) and of the ledger's PostgreSQL backends, and the operator's API calls by client, verb and
    resource (what else it did while the batch waited)."""
    items = [harness.deployment(f"{prefix}{i}", first + i) for i in range(count)]
    created: dict = {}
    ready: dict = {}
    before, calls0, cpu0, driver0 = await op.scrape(), len(emu.calls), op.cpu_s(), time.process_time()
    server = await harness.server_cpu(ledger)
    await harness.create_until_ready(emu, kube, NS, "deployments", items, created, ready, poll_s=0.02)
    cpu, driver = op.cpu_s() - cpu0, time.process_time() - driver0
    server_cpu = await harness.server_cpu_since(ledger, server)
    calls = operator_calls(emu.calls[calls0:])
    took = [ready[k] - created[k] for k in ready]
    return {"p99": round(harness.percentile(took, 0.99), 3), "p50": round(harness.percentile(took, 0.5), 3),
            "reconcile_mean_s": reconcile_means(await op.scrape(), before),
            "cpu_s": {"operator": round(cpu, 2), "benchmark": round(driver, 2), "ledger_server": round(server_cpu, 2)},
            "calls": dict(sorted(collections.Counter(
                f"{c.agent.split('/')[0]} {harness.call_name(c)}" for c in calls).items()))}


def batch_figures(name: str, kind: str, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """The keys of one kind of batch (``name`` idle or during_period, ``kind`` idle or busy): the median of the
    batches' p99 and p50, and each batch's figures in a list."""
    return {f"p99_ready_{name}_s": round(statistics.median(b["p99"] for b in batches), 3),
            f"p50_ready_{name}_s": round(statistics.median(b["p50"] for b in batches), 3),
            f"p99_ready_{name}_by_batch": [b["p99"] for b in batches],
            f"p50_ready_{name}_by_batch": [b["p50"] for b in batches],
            f"{kind}_batch_reconcile_mean_s": [b["reconcile_mean_s"] for b in batches],
            f"{kind}_batch_cpu_s": [b["cpu_s"] for b in batches],
            f"{kind}_batch_calls": [b["calls"] for b in batches]}


def mark(phase: str) -> None:
    """A line in BENCH_STALL_LOG, BENCH_SQL_LOG and BENCH_TX_LOG (timed_operator.py's records of the operator's
    event-loop stalls, its SQL and its ledger transactions), where set."""
    for log in ("BENCH_STALL_LOG", "BENCH_SQL_LOG", "BENCH_TX_LOG"):
        if os.environ.get(log):
            with open(os.environ[log], "a") as f:
                f.write(f"{time.time():.3f} MARK {phase}\n")


async def uptime_reports(kube, keys: dict, ts: int, uptime: int) -> None:
    await harness.fan_out(list(keys), lambda n: agent.send_report(kube, keys[n], namespace=NS, node=n, ts=ts,
                                                                  uptime=uptime))


async def bench(scale: float, ledger_kind: str, profile: pathlib.Path | None = None, pairs: int = PAIRS) -> dict:
    farms, nodes, deployments = harness.sizes(scale)
    keys = {f"node{i}": identity.KeyPair.generate() for i in range(nodes)}
    docs = harness.bodies(farms, nodes, deployments, {n: k.public_key for n, k in keys.items()}, OWNER.public_key)
    objects = farms + nodes + deployments
    batch = max(50, round(deployments * 0.05))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tfgrid-bench-"))
    url, handle = await fresh_ledger(ledger_kind, tmp)
    clock_file = tmp / "now"
    set_clock(clock_file, START)
    result: dict = {"ledger": ledger_kind, "scale": scale, "objects": objects, "farms": farms, "nodes": nodes,
                    "deployments": deployments}
    log = tmp / "operator.log"
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    spy = (lambda phase: profile / f"{phase}.txt") if profile is not None else (lambda phase: None)
    try:
        async with local.local_api(record_requests=False) as emu, KubeClient(user_agent="bench") as kube, \
                harness.DriverHeap() as heap:
            result["raw_api_per_s"] = round(await raw_api(scale), 1)
            ceiling = await kopf_ceiling.run(emu, kube, docs)
            result.update(kopf_ceiling_per_s=ceiling["trivial_per_s"], kopf_cpu_ms_per_object=ceiling["cpu_ms_per_object"],
                          kopf_writes_per_object=ceiling["writes_per_object"],
                          kopf_delete_writes_per_object=ceiling["delete_writes_per_object"],
                          kopf_restart_idle_s=ceiling["restart_idle_s"],
                          kopf_restart_cpu_ms_per_object=ceiling["restart_cpu_ms_per_object"],
                          kopf_burst_s_by_kind=ceiling["burst_s_by_kind"])
            await harness.create_namespace(kube, NS)
            ledger = await backend.open_backend(url, CONFIG)
            for i in range(100):  # twins that granted the namespace their payment (tfgrid-operator grant)
                twin = identity.KeyPair.generate()
                await ledger.ensure_account(name=f"payer{i}", public_key=twin.public_key)
                await ledger.fund(name=f"payer{i}", amount=10**15, now=START)
                grant = names.Grant(f"payer{i}", NS, START + names.MAX_GRANT_S).signed(twin)
                await kube.request("POST", f"/api/v1/namespaces/{NS}/secrets", tenancy.grant_secret(grant, f"payer{i}-grant"))
            created: dict = {}
            ready: dict = {}
            async with OperatorProcess(url, clock_file, log) as op:
                base_rss = op.memory_mb("VmRSS")
                calls0, cpu0 = len(emu.calls), op.cpu_s()
                started = time.perf_counter()
                async with harness.profiled(op.pid, spy("burst")):
                    for plural in harness.PLURALS:
                        await harness.create_until_ready(emu, kube, NS, plural, docs[plural], created, ready)
                    all_ready = time.perf_counter() - started
                    await op.wait_idle(at_least=objects)
                result["burst_reconcile_mean_s"] = reconcile_means(await op.scrape())
                result["burst_s_by_kind"] = harness.seconds_by_kind(created, ready)
                latencies = sorted(ready[k] - created[k] for k in ready)
                result.update(
                    all_ready_s=round(all_ready, 2), reconciled_per_s=round(objects / all_ready, 1),
                    p50_ready_s=round(statistics.median(latencies), 3),
                    p99_ready_s=round(harness.percentile(latencies, 0.99), 3))
                result["ratio"] = round(result["reconciled_per_s"] / result["raw_api_per_s"], 3)
                result["ratio_to_kopf"] = round(result["reconciled_per_s"] / result["kopf_ceiling_per_s"], 3)
                cpu_ms = round((op.cpu_s() - cpu0) * 1000 / objects, 2)
                result.update(cpu_ms_per_object=cpu_ms, operator_cpu_ms_per_object=cpu_ms)
                result["object_bytes"] = object_bytes(emu)
                burst = emu.calls[calls0:]
                wrote = harness.writes(burst)
                result["writes_per_object"] = round(sum(wrote.values()) / objects, 3)
                result["writes_by_call"] = harness.per_object(wrote, objects)
                result["writes_by_client"] = by_client(burst, objects)
                result["calls_per_object"] = harness.per_object(
                    collections.Counter(harness.call_name(c) for c in operator_calls(burst)), objects)

                # --pairs idle batches, each created with nothing else running: once the last write-back was sent,
                # right after a tick (a period's counters take minutes to send at the paced rate: these come first)
                idles: list[dict[str, Any]] = []
                for i in range(pairs):
                    left = int(await op.quiet_loop())
                    result.setdefault("idle_batch_left_queued", left)
                    mark(f"idle batch {i}")
                    idles.append(await batch_ready(emu, kube, op, ledger, f"idle{i}-", batch, i * batch))
                    mark(f"idle batch {i} done")
                    await op.wait_idle(at_least=objects + (i + 1) * batch)

                # then --pairs periods, each with one uptime report per node inside it (none is down) and a batch
                # created as its status write-back starts; the first period before them is measured on its own
                busies: list[dict[str, Any]] = []
                overlaps: list[float] = []
                for i in range(pairs + 1):
                    reported = START + (i + 1) * H - 600
                    set_clock(clock_file, reported)
                    base = await op.reconciled()
                    await uptime_reports(kube, keys, reported, UPTIME_AT_START + reported - START)
                    await op.wait_idle(at_least=base + nodes)
                    await op.settle()  # statuses caught up before the period: what follows is the period's work only
                    calls0 = len(emu.calls)
                    if i == 0:
                        noop0, timed0 = len(emu.noop_writes), len(op.ledger_lines())
                        set_clock(clock_file, START + H)
                        async with harness.profiled(op.pid, spy("period")):
                            result["period_s"] = round(await op.settle(), 2)
                        result["period_api_calls"] = len(operator_calls(emu.calls[calls0:]))
                        result["noop_patches"] = sum(1 for w in emu.noop_writes[noop0:] if w[1] == "status")
                        timed = op.ledger_lines()[timed0:]
                        result["period_ledger_s"] = round(sum(s for _, s in timed), 3)
                        result["period_ledger_by_call"] = {n: round(sum(s for m, s in timed if m == n), 3)
                                                           for n in LEDGER_TIMED}
                        patched_before = len(emu.calls)
                        result["steady_tick_s"] = round(await op.settle() / 2, 2)  # nothing changed: writes nothing
                        result["steady_tick_patches"] = sum(1 for c in emu.calls[patched_before:] if c.verb == "patch")
                        continue
                    set_clock(clock_file, START + (i + 1) * H)
                    deadline = time.monotonic() + 300
                    while not loop_status_patches(emu.calls[calls0:]):
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"period {i + 1} wrote no status")
                        await asyncio.sleep(0.01)
                    in_flight = len(emu.calls)
                    mark(f"busy batch {i - 1}")
                    busies.append(await batch_ready(emu, kube, op, ledger, f"busy{i - 1}-", batch, (pairs + i - 1) * batch))
                    mark(f"busy batch {i - 1} done")
                    landed = len(emu.calls)
                    await op.settle()
                    overlaps.append(round(loop_status_patches(emu.calls[in_flight:landed])
                                          / max(1, loop_status_patches(emu.calls[calls0:])), 2))
                    await op.wait_idle(at_least=objects + (pairs + i) * batch)
                result.update(batch_figures("idle", "idle", idles), **batch_figures("during_period", "busy", busies))
                result["during_period_overlap"] = statistics.median(overlaps)
                result["during_period_overlaps"] = overlaps
                result["p99_ratio_by_pair"] = [round(b["p99"] / i["p99"], 2) for i, b in zip(idles, busies, strict=True)]

                billed_before = sum(c.billed_total for c in (await ledger.contract_summaries()).values())
                # the write-back still paced when the process stops: what its successor finds to write (restart_writes)
                result["restart_left_queued"] = int((await op.scrape())[("tfgrid_status_writes_queued", ())])
                result["peak_rss_mb"] = round(op.memory_mb("VmHWM"), 1)
                result["rss_per_object_kb"] = round((op.memory_mb("VmRSS") - base_rss) * 1024 / objects, 2)
            mark("restart")
            restarted, calls0 = time.perf_counter(), len(emu.calls)
            grid_objects = objects + 2 * pairs * batch
            async with OperatorProcess(url, clock_file, log) as op:
                async with harness.profiled(op.pid, spy("restart")):
                    await op.wait_idle(at_least=grid_objects)
                result["restart_idle_s"] = round(time.perf_counter() - restarted, 2)
                result["restart_reconcile_mean_s"] = reconcile_means(await op.scrape())
                mark("restart idle")
                result["restart_cpu_ms_per_object"] = round(op.cpu_s() * 1000 / grid_objects, 2)
                result["restart_peak_rss_mb"] = round(op.memory_mb("VmHWM"), 1)
                await op.settle()
                result["restart_writes"] = sum(harness.writes(emu.calls[calls0:]).values())
                billed_after = sum(c.billed_total for c in (await ledger.contract_summaries()).values())
                result["rebilled_on_restart"] = billed_after - billed_before

                # the tenant deletes the namespace: everything in it at once
                if os.environ.get("BENCH_TRACEMALLOC_AT") == "delete":
                    os.kill(op.pid, signal.SIGUSR1)  # timed_operator.py starts tracing now
                calls0, cpu0 = len(emu.calls), op.cpu_s()
                async with harness.profiled(op.pid, spy("delete")):
                    result["delete_s"] = round(await harness.delete_namespace(emu, kube, NS), 2)
                    await harness.cpu_quiet(op.pid)
                deleted = harness.writes(emu.calls[calls0:])
                result["delete_writes_per_object"] = round(sum(deleted.values()) / grid_objects, 3)
                result["delete_writes_by_call"] = harness.per_object(deleted, grid_objects)
                result["delete_writes_by_client"] = by_client(emu.calls[calls0:], grid_objects)
                result["delete_cpu_ms_per_object"] = round((op.cpu_s() - cpu0) * 1000 / grid_objects, 2)
                result["delete_peak_rss_mb"] = round(op.memory_mb("VmHWM"), 1)  # the restarted process, deleting
            await ledger.close()
            result["driver_gc_pause_max_s"], result["driver_gc_pause_s"] = round(heap.longest, 3), round(heap.total, 2)
    finally:
        await drop_ledger(handle)
    result["per_object_cost_by_scale"] = {str(scale): per_object_cost(result)}
    return result


def by_client(calls: list, objects: int) -> dict:
    """Writes per object by the operator's two clients, by verb and resource: kopf's (the handlers' reports, the
    finalizer, kopf's progress) and ours (the loop's status refreshes and requeue touches, Events we post)."""
    return {agent: harness.per_object(harness.writes(calls, (agent,)), objects) for agent in harness.OPERATOR_AGENTS}


def per_object_cost(r: dict) -> dict:
    return {"cpu_ms": r["cpu_ms_per_object"], "rss_kb": r["rss_per_object_kb"], "peak_rss_mb": r["peak_rss_mb"],
            "writes": r["writes_per_object"], "delete_writes": r["delete_writes_per_object"],
            "delete_cpu_ms": r["delete_cpu_ms_per_object"]}


async def scales(values: list[float], ledger_kind: str, profile: pathlib.Path | None, pairs: int = PAIRS) -> dict:
    """Each scale in turn (a fresh emulator, ledger and operator each); the last one's keys, with every scale's
    per-object cost and how the last one's compares with the first one's (≈ 1: linear growth), and every earlier
    scale's keys in ``by_scale``."""
    costs: dict = {}
    result: dict = {}
    earlier: dict = {}
    for scale in values:
        if result:
            earlier[str(result["scale"])] = result
        result = await bench(scale, ledger_kind, profile / f"scale-{scale}" if profile is not None else None, pairs)
        costs.update(result["per_object_cost_by_scale"])
        print(json.dumps({"scale": scale, **per_object_cost(result)}), file=sys.stderr)
    result["per_object_cost_by_scale"] = costs
    if earlier:
        result["by_scale"] = earlier
    if len(costs) > 1:
        first, last = costs[str(values[0])], costs[str(values[-1])]
        result["per_object_growth"] = {k: round(last[k] / first[k], 2) if first[k] else None for k in first}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--scales", help="comma-separated scales run in turn, e.g. 0.3,1 (overrides --scale)")
    parser.add_argument("--ledger", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--profile", type=pathlib.Path, help="a folder for py-spy profiles of the operator's phases")
    parser.add_argument("--pairs", type=int, default=PAIRS,
                        help=f"batches created idle, and as many created during a period, one per period (default {PAIRS})")
    parser.add_argument("--raw-client", action="store_true", help=argparse.SUPPRESS)  # the raw_api() child
    args = parser.parse_args()
    if args.raw_client:
        print(asyncio.run(raw_client(args.scale)))
        return
    values = [float(v) for v in args.scales.split(",")] if args.scales else [args.scale]
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    print(json.dumps(asyncio.run(scales(values, args.ledger, args.profile, args.pairs))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
