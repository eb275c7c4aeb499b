"""What the operator benchmarks share: the grid's objects, driving them against the local API emulator, reading a
process's CPU and memory from /proc, counting the API writes the emulator served, and reading py-spy profiles.

Imported by operator_scale.py and kopf_ceiling.py (both put this folder on sys.path, as running them does)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

GROUP_API = "grid.threefold.io/v1alpha1"
PLURALS = ("farms", "nodes", "deployments")  # created in this order, each kind Ready before the next
CONCURRENCY = 16  # requests the driver keeps in flight
WRITE_VERBS = frozenset({"create", "update", "patch"})  # POST, PUT, PATCH (a DELETE is the user's, not the operator's)
OPERATOR_AGENTS = ("kopf", "tfgrid-operator")  # the User-Agents of the operator's two clients (kopf's, the loop's)


class DriverHeap:
    """This process stands for the API server (the emulator runs in it) while it measures a client: its garbage
    collector must not stop it mid-measurement. A full collection here traverses every object the emulator stores and
    every call it logged — 0.5–1.7 s at grid size, every ~10 s of a burst: a busy batch's p99 create→Ready was that
    pause (no API call was served in it, not even the driver's own POSTs), and a burst's and a restart's waits had
    it in them, ours more than kopf's ceiling's (which runs first, on a smaller heap). kube-apiserver's collector
    (Go's, concurrent) never stops it for that long. So what survived is frozen (``gc.freeze``: kept out of every
    later collection) every FREEZE_EVERY_S; collections then see only what the last second made. ``longest`` and
    ``total``: the pauses it still had, every generation's and these collections' own (the benchmark prints them:
    driver_gc_pause_max_s, driver_gc_pause_s)."""

    FREEZE_EVERY_S = 1.0

    def __init__(self) -> None:
        self.longest = self.total = 0.0
        self._started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _timed(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            took = time.perf_counter() - self._started
            self.longest, self.total = max(self.longest, took), self.total + took

    async def _freeze(self) -> None:
        while True:
            gc.collect()  # what the last second made and left as garbage (cycles) first: nothing dead is frozen
            gc.freeze()
            await asyncio.sleep(self.FREEZE_EVERY_S)

    async def __aenter__(self) -> DriverHeap:
        gc.collect()
        gc.callbacks.append(self._timed)
        self._task = asyncio.create_task(self._freeze())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        gc.callbacks.remove(self._timed)
        gc.unfreeze()  # what was frozen is collected again (the next scale's run starts clean)


def api(namespace: str, plural: str, name: str = "") -> str:
    return f"/apis/{GROUP_API}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def sizes(scale: float) -> tuple[int, int, int]:
    """Farms, nodes and deployments at ``scale`` of the grid size (50, 1,000, 10,000)."""
    return max(1, round(50 * scale)), max(1, round(1000 * scale)), round(10_000 * scale)


def bodies(farms: int, nodes: int, deployments: int, keys: dict[str, str], owner_key: str) -> dict[str, list[dict]]:
    """The objects, by plural; ``keys``: each node's public key. Deployments are paid by payer0..payer99 through the
    grants payerN-grant (which operator_scale makes; the kopf ceiling never reads them)."""
    return {
        "farms": [{"apiVersion": GROUP_API, "kind": "Farm", "metadata": {"name": f"farm{i}"},
                   "spec": {"ownerKey": owner_key, "payoutAccount": f"farmer{i}"}} for i in range(farms)],
        "nodes": [{"apiVersion": GROUP_API, "kind": "Node", "metadata": {"name": f"node{i}"},
                   "spec": {"farm": f"farm{i % farms}", "publicKey": keys[f"node{i}"],
                            "resources": {"cru": 64, "mru": 256, "sru": 4000}, "location": {"country": "BE"}}}
                  for i in range(nodes)],
        "deployments": [deployment(f"d{i}", i) for i in range(deployments)],
    }


def deployment(name: str, i: int) -> dict:
    return {"apiVersion": GROUP_API, "kind": "Deployment", "metadata": {"name": name},
            "spec": {"resources": {"cru": 1, "mru": 2, "sru": 20}, "payer": {
                "account": f"payer{i % 100}", "grantRef": {"name": f"payer{i % 100}-grant"}}}}


async def fan_out(items: Iterable, fn: Callable) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(x: Any) -> None:
        async with sem:
            await fn(x)
    await asyncio.gather(*(one(x) for x in items))


def is_ready(obj: dict | None) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in ((obj or {}).get("status") or {}).get("conditions") or [])


async def create_until_ready(emu: Any, kube: Any, namespace: str, plural: str, items: list[dict], created: dict,
                             ready: dict, poll_s: float = 0.25, timeout_s: float = 3600) -> None:
    """POST every item (CONCURRENCY in flight) and wait until each is Ready; ``created`` and ``ready`` get
    (plural, name) → perf_counter() of each. Readiness is read from the emulator's store every ``poll_s`` (the
    scan is the driver's cost, not the operator's: keep it rare for big bursts)."""
    async def create(body: dict) -> None:
        await kube.request("POST", api(namespace, plural), body)
        created[(plural, body["metadata"]["name"])] = time.perf_counter()
    pending = {b["metadata"]["name"] for b in items}

    async def watch() -> None:
        while pending:
            now = time.perf_counter()
            for name in list(pending):
                if is_ready(emu.store.get((f"{GROUP_API}/{plural}", namespace, name))):
                    ready[(plural, name)] = now
                    pending.discard(name)
            await asyncio.sleep(poll_s)
    watcher = asyncio.create_task(watch())
    await fan_out(items, create)
    await asyncio.wait_for(watcher, timeout_s)


def seconds_by_kind(created: dict, ready: dict) -> dict[str, float]:
    """Each kind's part of a burst (kinds are created one after the other): from its first POST until its last
    object was Ready."""
    out: dict[str, float] = {}
    for plural in PLURALS:
        starts = [t for (p, _), t in created.items() if p == plural]
        ends = [t for (p, _), t in ready.items() if p == plural]
        if starts and ends:
            out[plural] = round(max(ends) - min(starts), 2)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def create_namespace(kube: Any, name: str) -> None:
    await kube.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def delete_namespace(emu: Any, kube: Any, name: str, timeout_s: float = 3600) -> float:
    """DELETE the namespace, as a tenant does; the emulator deletes everything in it, as the namespace controller
    does, and the namespace goes when the last finalizer is removed. Returns the seconds until it is gone."""
    started = time.perf_counter()
    await kube.request("DELETE", f"/api/v1/namespaces/{name}")
    deadline, said = started + timeout_s, started
    while ("/v1/namespaces", None, name) in emu.store:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"namespace {name} was not gone within {timeout_s} s")
        if time.perf_counter() - said >= 10:  # what is left, by kind: where a deletion waits
            said = time.perf_counter()
            left = collections.Counter(k[0].rsplit("/", 1)[-1] for k in emu.store if k[1] == name)
            print(f"deleting {name}: {said - started:.0f} s, left {dict(left)}", file=sys.stderr, flush=True)
        await asyncio.sleep(0.25)
    return time.perf_counter() - started


def writes(calls: Iterable[Any], agents: tuple[str, ...] = OPERATOR_AGENTS) -> collections.Counter[str]:
    """The API writes (POST, PUT, PATCH) the emulator served to ``agents``, by verb and resource[/subresource]."""
    return collections.Counter(call_name(c)
                               for c in calls if c.verb in WRITE_VERBS and c.agent.startswith(agents))


def per_object(counts: collections.Counter[str], objects: int) -> dict[str, float]:
    return {k: round(v / objects, 3) for k, v in sorted(counts.items())}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def server_cpu(ledger: Any) -> dict[int, float]:
    """The CPU seconds so far of each PostgreSQL backend serving ``ledger``'s database (none for SQLite, which runs
    in its process); ``server_cpu_since`` reads them again."""
    if ledger.is_sqlite:
        return {}
    import sqlalchemy as sa

    async with ledger.engine.connect() as conn:
        pids = (await conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))).scalars().all()
    readings = {}
    for pid in pids:
        try:
            readings[pid] = cpu_s(pid)
        except OSError:  # gone since, or not on this machine
            continue
    return readings


async def server_cpu_since(ledger: Any, before: dict[int, float]) -> float:
    """The CPU seconds ``ledger``'s backends used since ``server_cpu`` read ``before`` (backends started since count
    from 0; those gone since are not counted)."""
    return sum(now - before.get(pid, 0.0) for pid, now in (await server_cpu(ledger)).items())


def call_name(call: Any) -> str:
    """An API call the emulator served, as 'VERB RESOURCE[/SUBRESOURCE]'."""
    return f"{call.verb} {call.resource}{'/' + call.subresource if call.subresource else ''}"


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of the process."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


async def cpu_quiet(pid: int, window_s: float = 0.5, below_s: float = 0.02, timeout_s: float = 60) -> None:
    """Until the process used less than ``below_s`` of CPU in a ``window_s`` (its backlog is done)."""
    deadline = time.perf_counter() + timeout_s
    last = cpu_s(pid)
    while time.perf_counter() < deadline:
        await asyncio.sleep(window_s)
        now = cpu_s(pid)
        if now - last < below_s:
            return
        last = now


# ---------------------------------------------------------------- profiles (py-spy)

@contextlib.asynccontextmanager
async def profiled(pid: int, out: pathlib.Path | None, rate: int = 50) -> AsyncIterator[None]:
    """py-spy samples the process while the block runs (``out`` None: no profile); the collapsed stacks go to
    ``out`` and its top costs to ``out`` with .top.txt. py-spy is `pip install py-spy` (not a dependency)."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate), "--nonblocking",
               "--output", str(out)]
    for _ in range(20):  # a process that has just started has no interpreter py-spy can find yet: it exits at once
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1.0)
        if proc.poll() is None:
            break  # attached
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 60)
        if out.exists():
            out.with_suffix(".top.txt").write_text(top_costs(out))


IDLE = ("select (", "EpollSelector.select (", "_PollLikeSelector.select (", "_connection_worker_thread (", "wait (threading.py",
        "Condition.wait (", "Queue.get (")  # innermost frames that wait, not work


def _frame(frame: str) -> str:
    """'fn (pkg/module.py:12)' → 'pkg/module.py:fn' (lines dropped: a function's samples add up)."""
    name, _, where = frame.partition(" (")
    return f"{where.rsplit(':', 1)[0]}:{name}"


def _area(frame: str) -> str:
    """The package of a frame's file (its first folder), or our module, or the stdlib module."""
    where = frame.partition(" (")[2].rsplit(":", 1)[0]
    if where.startswith("tfgrid_operator/"):
        return where
    return where.split("/")[0] if "/" in where else where


def top_costs(collapsed: pathlib.Path, n: int = 30) -> str:
    """The functions with the most samples, as shares of the busy samples (those whose innermost frame is not a
    wait: select(), a worker thread's queue): inclusive (anywhere on the stack), self (innermost), and self by
    package (the innermost frame's) and by our module (the innermost frame of ours on the stack)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    by_area: collections.Counter[str] = collections.Counter()
    by_ours: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        if frames[-1].startswith(IDLE):
            idle += k
            continue
        total += k
        for f in {_frame(f) for f in frames}:
            inclusive[f] += k
        own[_frame(frames[-1])] += k
        by_area[_area(frames[-1])] += k
        ours = [f for f in frames if "tfgrid_operator/" in f and "cli/" not in f]
        by_ours[_frame(ours[-1]) if ours else "(no frame of ours: kopf, aiohttp, asyncio)"] += k
    lines = [f"{total} busy samples ({idle} waiting left out)"]
    for title, counter in (("inclusive", inclusive), ("self", own), ("self by package", by_area),
                           ("by our innermost function on the stack", by_ours)):
        lines.append(f"\n-- {title}")
        lines += [f"{100 * v / max(1, total):5.1f} %  {k}" for k, v in counter.most_common(n)]
    return "\n".join(lines) + "\n"
