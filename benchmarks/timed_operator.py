"""`tfgrid-operator run` with the ledger's period work timed, as operator_scale.py starts the operator: each
mint_period / bill_period call appends 'NAME PERIOD SECONDS' to $BENCH_LEDGER_LOG (the operator has no metric of
it). Nothing else differs, and nothing of the benchmark is imported here (the process's memory is measured).

    BENCH_LEDGER_LOG=/tmp/ledger.log python benchmarks/timed_operator.py run --standalone
"""

from __future__ import annotations

import gc
import os
import sys
import time

TIMED = ("mint_period", "bill_period")


def main() -> None:
    from tfgrid_operator import backend
    from tfgrid_operator.cli import main as cli_main

    out = open(os.environ["BENCH_LEDGER_LOG"], "a", buffering=1)  # noqa: SIM115  (open for the process's life)
    opened = backend.open_backend

    async def open_backend(*args, **kwargs):
        ledger = await opened(*args, **kwargs)
        for name in TIMED:
            method = getattr(ledger, name)

            async def timed(*a, _method=method, _name=name, **kw):
                started = time.perf_counter()
                try:
                    return await _method(*a, **kw)
                finally:
                    out.write(f"{_name} {kw.get('period')} {time.perf_counter() - started:.4f}\n")
            setattr(ledger, name, timed)
        return ledger
    backend.open_backend = open_backend  # startup.default_runtime opens the ledger through this name
    if os.environ.get("BENCH_GC_LOG"):
        time_collections(open(os.environ["BENCH_GC_LOG"], "a", buffering=1))  # noqa: SIM115
    sys.argv = ["tfgrid-operator", *sys.argv[1:]]
    cli_main()


def time_collections(out) -> None:
    """Append 'WALL GENERATION SECONDS COLLECTED' for each garbage collection that took over a millisecond, and the
    running totals per generation every 5 s of wall time (BENCH_GC_LOG: where the process's CPU goes to the GC)."""
    started: list[float] = []
    totals = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
    last = [time.time()]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
            return
        took = time.perf_counter() - started[0]
        gen = info["generation"]
        totals[gen][0] += 1
        totals[gen][1] += took
        now = time.time()
        if took > 0.001:
            out.write(f"{now:.3f} gen{gen} {took:.4f} {info['collected']}\n")
        if now - last[0] > 5:
            last[0] = now
            out.write(f"{now:.3f} totals " + " ".join(f"gen{g}={n}/{s:.3f}s" for g, (n, s) in totals.items()) + "\n")
    gc.callbacks.append(callback)


if __name__ == "__main__":
    main()
