"""`tfgrid-operator run` with the ledger's period work timed, as operator_scale.py starts the operator: each
mint_period / bill_period call appends 'NAME PERIOD SECONDS' to $BENCH_LEDGER_LOG (the operator has no metric of
it). Nothing else differs, and nothing of the benchmark is imported here (the process's memory is measured).

    BENCH_LEDGER_LOG=/tmp/ledger.log python benchmarks/timed_operator.py run --standalone
"""

from __future__ import annotations

import gc
import os
import pathlib
import signal
import sys
import threading
import time
import tracemalloc

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
                traced = tracemalloc.is_tracing()
                if traced:
                    before = tracemalloc.get_traced_memory()[0]
                    tracemalloc.reset_peak()
                try:
                    return await _method(*a, **kw)
                finally:
                    out.write(f"{_name} {kw.get('period')} {time.perf_counter() - started:.4f}\n")
                    if traced:  # to BENCH_TRACEMALLOC's file: what the call itself held at most
                        with pathlib.Path(os.environ["BENCH_TRACEMALLOC"]).open("a") as f:
                            f.write(f"{_name} peak +{(tracemalloc.get_traced_memory()[1] - before) / 2**20:.1f} MB\n")
            setattr(ledger, name, timed)
        return ledger
    backend.open_backend = open_backend  # startup.default_runtime opens the ledger through this name
    if os.environ.get("BENCH_GC_LOG"):
        time_collections(open(os.environ["BENCH_GC_LOG"], "a", buffering=1))  # noqa: SIM115
    if os.environ.get("BENCH_TRACEMALLOC"):
        trace_allocations(pathlib.Path(os.environ["BENCH_TRACEMALLOC"]),
                          on_signal=os.environ.get("BENCH_TRACEMALLOC_AT") == "delete")
    if os.environ.get("BENCH_SQL_LOG"):
        time_statements(pathlib.Path(os.environ["BENCH_SQL_LOG"]))
    if os.environ.get("BENCH_TX_LOG"):
        time_transactions(pathlib.Path(os.environ["BENCH_TX_LOG"]))
    if os.environ.get("BENCH_STALL_LOG"):
        record_stalls(pathlib.Path(os.environ["BENCH_STALL_LOG"]))
    if os.environ.get("BENCH_MALLOC_TRIM"):
        trim_malloc(pathlib.Path(os.environ["BENCH_MALLOC_TRIM"]))
    sys.argv = ["tfgrid-operator", *sys.argv[1:]]
    cli_main()


def time_statements(out: pathlib.Path, every_s: float = 2.0) -> None:
    """Every ``every_s``, the SQLite statements run since (on the ledger's thread: sqlite_cursor.run), by their text
    with IN lists folded: 'WALL' then 'SECONDS COUNT ROWS STATEMENT' for the ten costliest, appended to ``out``
    (BENCH_SQL_LOG): which of the ledger's statements a phase waits on."""
    import collections
    import re

    from tfgrid_operator.backend.sql import sqlite_cursor

    ran = sqlite_cursor.run
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0, 0])
    lock = threading.Lock()

    def run(conn, operation, *args, **kwargs):
        started = time.perf_counter()
        outcome = ran(conn, operation, *args, **kwargs)
        took = time.perf_counter() - started
        key = re.sub(r"\((?:\?, ?)+\?\)", "(?…)", " ".join(operation.split()))[:160]
        with lock:
            t = totals[key]
            t[0] += took
            t[1] += 1
            t[2] += len(outcome[1] or ())
        return outcome
    sqlite_cursor.run = run

    def dump() -> None:
        while True:
            time.sleep(every_s)
            with lock:
                if not totals:
                    continue
                top = sorted(totals.items(), key=lambda kv: -kv[1][0])[:10]
                totals.clear()
            with out.open("a") as f:
                f.write(f"{time.time():.3f}\n")
                for key, (took, n, rows) in top:
                    f.write(f"  {took:7.3f} {n:6d} {rows:7d} {key}\n")
    threading.Thread(target=dump, daemon=True).start()


def time_transactions(out: pathlib.Path) -> None:
    """Each of the ledger's write transactions as 'WALL CALLER WAIT_S HELD_S' (WAIT_S: for the write lock, in and
    out of the process; HELD_S: from then until it ends), and each refresh of the planner's statistics as
    'WALL statistics SECONDS TABLES' (those it analyzed, '-' for none), appended to ``out`` (BENCH_TX_LOG): which
    transaction a batch waits behind."""
    import contextlib

    import sqlalchemy as sa

    from tfgrid_operator.backend.sql import engine

    f = out.open("a", buffering=1)
    began = engine.LedgerBase._tx
    refresh = engine.LedgerBase._planner_statistics

    @contextlib.asynccontextmanager
    async def _tx(self):
        caller = sys._getframe(2).f_code.co_name
        asked = time.perf_counter()
        held = asked
        try:
            async with began(self) as conn:
                held = time.perf_counter()
                yield conn
        finally:
            f.write(f"{time.time():.3f} {caller} {held - asked:.4f} {time.perf_counter() - held:.4f}\n")

    count = sa.text("SELECT relname, analyze_count FROM pg_stat_user_tables WHERE schemaname = current_schema()")

    async def _planner_statistics(self, conn, tables):
        if self.is_sqlite:  # nothing to refresh there
            return await refresh(self, conn, tables)
        before = dict((await conn.execute(count)).all())
        started = time.perf_counter()
        try:
            return await refresh(self, conn, tables)
        finally:
            took = time.perf_counter() - started
            await conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # the transaction's, taken before
            analyzed = ",".join(sorted(t for t, n in (await conn.execute(count)).all() if n != before.get(t))) or "-"
            f.write(f"{time.time():.3f} statistics {took:.4f} {analyzed}\n")
    engine.LedgerBase._tx = _tx
    engine.LedgerBase._planner_statistics = _planner_statistics


def record_stalls(out: pathlib.Path, stall_s: float = 0.05, every_s: float = 0.005) -> None:
    """Each time the event loop does not come back for over ``stall_s``, 'WALL SECONDS' and the main thread's stacks
    sampled every ``every_s`` meanwhile (the innermost frames of ours or kopf's, most frequent first) appended to
    ``out`` (BENCH_STALL_LOG): which synchronous work holds the loop, and for how long, when a batch waits."""
    import asyncio
    import collections

    from tfgrid_operator import loop

    beat = [time.monotonic()]
    main_id = threading.main_thread().ident
    started = loop.run_forever

    async def run_forever(rt):  # the loop's task also keeps the heartbeat (started as the operator starts)
        async def heartbeat() -> None:
            while True:
                beat[0] = time.monotonic()
                await asyncio.sleep(every_s)
        task = asyncio.create_task(heartbeat())
        try:
            return await started(rt)
        finally:
            task.cancel()
    loop.run_forever = run_forever

    def place(frame) -> str:
        names = []
        while frame is not None and len(names) < 4:
            f = frame.f_code.co_filename
            if any(m in f for m in ("tfgrid_operator/", "kopf/", "aiohttp/", "sqlalchemy/", "benchmarks/")):
                names.append(f"{f.rsplit('/', 1)[-1]}:{frame.f_code.co_name}:{frame.f_lineno}")
            frame = frame.f_back
        return " < ".join(names) or "?"

    def watch() -> None:
        samples: collections.Counter[str] = collections.Counter()
        since = None
        while True:
            time.sleep(every_s)
            late = time.monotonic() - beat[0]
            if late > stall_s:
                since = since or time.time() - late
                frame = sys._current_frames().get(main_id)
                samples[place(frame)] += 1
            elif since is not None:
                with out.open("a") as f:
                    f.write(f"{since:.3f} {time.time() - since - every_s:.3f}\n")
                    for where, n in samples.most_common(6):
                        f.write(f"  {n:4d} {where}\n")
                samples.clear()
                since = None
    threading.Thread(target=watch, daemon=True).start()


def rss_mb() -> float:
    status = pathlib.Path("/proc/self/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS"))) / 1024


def trim_malloc(out: pathlib.Path, every_s: float = 5.0) -> None:
    """Every ``every_s``, glibc's malloc_trim(0) (free memory malloc holds given back to the system) and
    'WALL RSS_BEFORE_MB RSS_AFTER_MB' appended to ``out`` (BENCH_MALLOC_TRIM): how much of the process's RSS is memory
    freed but kept by the allocator, phase by phase."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")

    def loop() -> None:
        while True:
            time.sleep(every_s)
            before = rss_mb()
            libc.malloc_trim(0)
            with out.open("a") as f:
                f.write(f"{time.time():.0f} {before:.1f} {rss_mb():.1f}\n")
    threading.Thread(target=loop, daemon=True).start()


def time_collections(out) -> None:
    """Append 'WALL GENERATION SECONDS COLLECTED' for each garbage collection that took over a millisecond, and the
    running totals per generation with the process's RSS every 5 s of wall time (BENCH_GC_LOG: where the process's
    CPU goes to the GC, and when its memory grows)."""
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
            out.write(f"{now:.3f} totals " + " ".join(f"gen{g}={n}/{s:.3f}s" for g, (n, s) in totals.items())
                      + f" rss={int(rss_mb())}MB\n")
    gc.callbacks.append(callback)


def trace_allocations(out: pathlib.Path, every_s: float = 15.0, frames: int = 12, on_signal: bool = False) -> None:
    """Every ``every_s``, the memory still allocated, by the innermost frame of ours (or else kopf's, aiohttp's,
    the standard library's) that allocated it: 'WALL TRACED_MB PEAK_MB' then the top 25 places, appended to ``out``
    (BENCH_TRACEMALLOC; tracemalloc slows the process down several times: counts and sizes, not timings). With
    ``on_signal`` (BENCH_TRACEMALLOC_AT=delete), tracing starts at SIGUSR1, which operator_scale.py sends the restarted
    operator as it deletes the namespace: the process reaches that phase at full speed, and what is traced is what
    the deletion allocates."""
    if on_signal:
        signal.signal(signal.SIGUSR1, lambda *_: tracemalloc.start(frames))
    else:
        tracemalloc.start(frames)

    def owner(tb: tracemalloc.Traceback) -> str:
        inner_first = list(reversed(tb))  # tracemalloc orders a traceback from the oldest call
        places = []
        for f in inner_first:  # the innermost frame of ours (the CLI's aside), kopf's, aiohttp's or SQLAlchemy's
            if any(m in f.filename for m in ("tfgrid_operator/", "kopf/", "aiohttp/", "sqlalchemy/")) \
                    and "tfgrid_operator/cli/" not in f.filename:
                places.append(f"{f.filename.split('site-packages/')[-1].split('operator/')[-1]}:{f.lineno}")
                if "kube/jsonwire.py" not in f.filename:  # JSON decoded or encoded: for whom, too
                    return " < ".join(places)
        if places:
            return " < ".join(places)
        return f"{inner_first[0].filename.rsplit('/', 1)[-1]}:{inner_first[0].lineno}" if inner_first else "?"

    def dump() -> None:
        while True:
            time.sleep(every_s)
            if not tracemalloc.is_tracing():
                continue
            current, peak = tracemalloc.get_traced_memory()
            by: dict[str, int] = {}
            for stat in tracemalloc.take_snapshot().statistics("traceback"):
                by[owner(stat.traceback)] = by.get(owner(stat.traceback), 0) + stat.size
            with out.open("a") as f:
                f.write(f"{time.time():.0f} traced {current / 2**20:.1f} MB peak {peak / 2**20:.1f} MB\n")
                for where, size in sorted(by.items(), key=lambda x: -x[1])[:25]:
                    f.write(f"  {size / 2**20:8.1f} MB  {where}\n")
    threading.Thread(target=dump, daemon=True).start()


if __name__ == "__main__":
    main()
