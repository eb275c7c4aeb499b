"""kopf's own ceiling on this machine: the throughput of a kopf operator that does nothing but add its finalizer
and write Ready (with our storage settings), against the same emulator and objects as operator_scale.py.
operator_scale's `ratio` cannot exceed this one's: it is what the framework costs before any grid work.

    python benchmarks/kopf_ceiling.py [--objects 2000]

Prints one JSON object: objects, trivial_per_s, raw_api_per_s, ratio, cpu_ms_per_object (the trivial operator's).
The trivial operator is this file run with --operator, in a process of its own (as operator_scale runs ours).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import operator_scale as bench  # the same objects, emulator, raw client and readiness watch


def trivial_operator() -> None:
    """Only kopf: its finalizer, one handler that writes Ready, and our storage settings (kopf's bookkeeping in
    status, so a reconcile is one finalizer PATCH and one status PATCH, as ours is)."""
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

    @kopf.on.create("grid.threefold.io", "v1alpha1", "deployments", registry=registry)
    async def ready(patch: kopf.Patch, **_: object) -> None:
        patch.status["conditions"] = [{"type": "Ready", "status": "True", "reason": "Available", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]

    @kopf.on.delete("grid.threefold.io", "v1alpha1", "deployments", registry=registry)
    async def gone(**_: object) -> None:  # a delete handler: kopf adds its finalizer, as ours does
        pass

    kopf.configure(quiet=True)
    asyncio.run(kopf.operator(registry=registry, standalone=True, clusterwide=True))


def cpu_s(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def ceiling(objects: int) -> dict:
    from tfgrid_operator.kube.client import KubeClient
    from tfgrid_operator.sandbox import local

    scale = objects / 10_000
    docs = bench.bodies(1, 1, objects, {"node0": "unused"})["deployments"]
    async with local.local_api(record_requests=False) as emu, KubeClient(user_agent="bench") as kube:
        raw = await bench.raw_api(scale)
        proc = subprocess.Popen([sys.executable, __file__, "--operator"])
        try:
            await asyncio.sleep(3)  # imported, listed and watching
            cpu0, started = cpu_s(proc.pid), time.perf_counter()
            await bench.create_until_ready(emu, kube, "deployments", docs, {}, {})
            elapsed, cpu = time.perf_counter() - started, cpu_s(proc.pid) - cpu0
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)  # the emulator (this loop) must keep serving its shutdown
    rate = objects / elapsed
    return {"objects": objects, "trivial_per_s": round(rate, 1), "raw_api_per_s": round(raw, 1),
            "ratio": round(rate / raw, 3), "cpu_ms_per_object": round(cpu * 1000 / objects, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--operator", action="store_true", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.operator:
        trivial_operator()
        return
    print(json.dumps(asyncio.run(ceiling(args.objects))))


if __name__ == "__main__":
    main()
