"""kopf's own ceiling on this machine: the throughput and CPU of a kopf operator that does nothing but add its
finalizer and write Ready (with our storage settings), against the same emulator and objects as operator_scale.py.
operator_scale runs it in the same run (``run()``) and divides by it: ours cannot beat what the framework costs
before any grid work.

    python benchmarks/kopf_ceiling.py [--scale 0.2]

Prints one JSON object: objects, trivial_per_s, raw_api_per_s, ratio (trivial / raw), cpu_ms_per_object (the trivial
operator's, from the first create until all are Ready and its CPU is quiet), writes_per_object and
delete_writes_per_object (its API writes per object creating them, and deleting their namespace), p99_ready_s;
restart_idle_s, restart_cpu_ms_per_object and restart_writes (a new process started over the same objects, which
lists and resumes each — a resume handler that does nothing — from its start until its CPU is quiet: the floor of
what a restart of ours costs).
The trivial operator is this file run with --operator, in a process of its own (as operator_scale runs ours).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import harness


def trivial_operator() -> None:
    """Only kopf: its finalizer, one handler per kind that writes Ready, and our storage settings (kopf's
    bookkeeping in status, so a reconcile is one finalizer PATCH and one status PATCH, as ours is)."""
    import kopf

    from tfgrid_operator.handlers.startup import DiffBaseInStatus, ProgressInStatus

    registry = kopf.OperatorRegistry()  # ours, not the default one our handlers registered into on import

    @kopf.on.login(registry=registry)
    def login(**kwargs: object) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.persistence.finalizer = "grid.threefold.io/finalizer"
        settings.persistence.diffbase_storage = DiffBaseInStatus()
        settings.persistence.progress_storage = ProgressInStatus()

    for plural in harness.PLURALS:
        @kopf.on.create("grid.threefold.io", "v1alpha1", plural, registry=registry)
        async def ready(patch: kopf.Patch, **_: object) -> None:
            patch.status["conditions"] = [{"type": "Ready", "status": "True", "reason": "Available", "message": "",
                                           "lastTransitionTime": "2026-01-01T00:00:00Z"}]

        @kopf.on.delete("grid.threefold.io", "v1alpha1", plural, registry=registry)
        async def gone(**_: object) -> None:  # a delete handler: kopf adds its finalizer, as ours does
            pass

        @kopf.on.resume("grid.threefold.io", "v1alpha1", plural, registry=registry)
        async def resumed(**_: object) -> None:  # ours resumes every object after a restart: the floor of that
            pass

    kopf.configure(quiet=True)
    # cluster-wide, as ours runs (kopf's namespace-scoped mode watches Namespaces, which the emulator's watch does
    # not serve as kopf expects); run() stops it before anything else is created
    asyncio.run(kopf.operator(registry=registry, standalone=True, clusterwide=True))


async def run(emu: Any, kube: Any, docs: dict[str, list[dict]], namespace: str = "kopf-ceiling") -> dict:
    """The trivial operator over ``docs`` (by plural, created kind by kind as operator_scale creates them) in a
    namespace of their own, which is deleted at the end (the trivial operator removes its finalizers) before the
    trivial operator stops: nothing of it is left for an operator started after it."""
    objects = sum(len(v) for v in docs.values())
    await harness.create_namespace(kube, namespace)
    proc = subprocess.Popen([sys.executable, __file__, "--operator"])
    try:
        await watching(emu, proc)
        await asyncio.sleep(0.5)
        created: dict = {}
        ready: dict = {}
        calls0, cpu0, started = len(emu.calls), harness.cpu_s(proc.pid), time.perf_counter()
        for plural in harness.PLURALS:
            await harness.create_until_ready(emu, kube, namespace, plural, docs[plural], created, ready)
        elapsed = time.perf_counter() - started
        await harness.cpu_quiet(proc.pid)
        cpu = harness.cpu_s(proc.pid) - cpu0
        wrote = harness.writes(emu.calls[calls0:], ("kopf",))
        # a restart: a new process lists every object and resumes each (a handler that does nothing), as ours does
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
        calls0, restarted = len(emu.calls), time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--operator"])
        await watching(emu, proc)
        await harness.cpu_quiet(proc.pid, timeout_s=600)
        restart_s, restart_cpu = time.perf_counter() - restarted, harness.cpu_s(proc.pid)
        restart_writes = harness.writes(emu.calls[calls0:], ("kopf",))
        calls0, cpu0 = len(emu.calls), harness.cpu_s(proc.pid)
        delete_s = await harness.delete_namespace(emu, kube, namespace)
        await harness.cpu_quiet(proc.pid)
        deleted = harness.writes(emu.calls[calls0:], ("kopf",))
        delete_cpu = harness.cpu_s(proc.pid) - cpu0
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)  # the emulator (this loop) must keep serving its shutdown
    latencies = [ready[k] - created[k] for k in ready]
    return {"objects": objects, "trivial_per_s": round(objects / elapsed, 1),
            "cpu_ms_per_object": round(cpu * 1000 / objects, 2),
            "p99_ready_s": round(harness.percentile(latencies, 0.99), 3),
            "writes_per_object": round(sum(wrote.values()) / objects, 3),
            "delete_writes_per_object": round(sum(deleted.values()) / objects, 3),
            "delete_s": round(delete_s, 2), "delete_cpu_ms_per_object": round(delete_cpu * 1000 / objects, 2),
            "restart_idle_s": round(restart_s, 2), "restart_cpu_ms_per_object": round(restart_cpu * 1000 / objects, 2),
            "restart_writes": sum(restart_writes.values()), "burst_s_by_kind": harness.seconds_by_kind(created, ready)}


async def watching(emu: Any, proc: subprocess.Popen) -> None:
    """Until the trivial operator watches every kind (its LIST of each is done)."""
    calls0, deadline = len(emu.calls), time.monotonic() + 60
    while sum(1 for c in emu.calls[calls0:] if c.verb == "watch" and c.agent.startswith("kopf")
              and c.resource in harness.PLURALS) < len(harness.PLURALS):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the trivial kopf operator did not start")
        await asyncio.sleep(0.1)


async def standalone(scale: float) -> dict:
    import operator_scale  # the raw client and the emulator settings of the scale benchmark
    from tfgrid_operator.domain import identity
    from tfgrid_operator.kube.client import KubeClient
    from tfgrid_operator.sandbox import local

    farms, nodes, deployments = harness.sizes(scale)
    docs = harness.bodies(farms, nodes, deployments,
                          {f"node{i}": identity.KeyPair.generate().public_key for i in range(nodes)},
                          identity.KeyPair.generate().public_key)
    async with local.local_api(record_requests=False) as emu, KubeClient(user_agent="bench") as kube, \
            harness.DriverHeap():  # as operator_scale.py: this process is the cluster
        raw = await operator_scale.raw_api(scale)
        result = await run(emu, kube, docs)
    return {**result, "raw_api_per_s": round(raw, 1), "ratio": round(result["trivial_per_s"] / raw, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.2, help="of the grid size, as operator_scale's --scale")
    parser.add_argument("--operator", action="store_true", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.operator:
        trivial_operator()
        return
    print(json.dumps(asyncio.run(standalone(args.scale))))


if __name__ == "__main__":
    main()
