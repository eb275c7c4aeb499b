"""The loop itself: one task for all objects, never a timer per object. Each tick runs the period jobs
(jobs.py) and then the status write-back (refresh.py); settings.tick_s apart, or at once when ``rt.wake`` is set.
The write-back's queue and budget (pacing.py) live as long as the loop: what one tick could not send, the pacer
sends between ticks, and the next tick's minting and billing never wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from tfgrid_operator import runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.loop.jobs import bill_due, close_due, heal, mint_due, sweep
from tfgrid_operator.loop.pacing import PacedWrites
from tfgrid_operator.loop.refresh import paced_writes, refresh

log = logging.getLogger("tfgrid_operator.loop")


async def run_forever(rt: runtime.Runtime) -> None:
    writes = paced_writes(rt)
    # rt.objects, what the ticks read of the cluster, comes from kopf's watch streams (handlers/startup.py taps
    # them: loop/mirror.py); the Secrets Deployments' payers name, for their reconciles, from a watch of its own
    watches = [asyncio.create_task(rt.secrets.follow(rt.kube, rt.settings.watch_namespace or None), name="secrets")]
    try:
        while True:
            started = time.perf_counter()
            try:
                await tick(rt, writes)
            except asyncio.CancelledError:
                raise
            except errors.LedgerError as err:
                log.warning("Ledger unavailable in the periodic loop: %s", err.message)
            except Exception:
                log.exception("Periodic loop failed; retrying next tick")
            rt.metrics.loop_tick.observe(time.perf_counter() - started)
            await idle(rt.wake, rt.settings.tick_s)
    finally:
        await stop(*watches)
        await writes.close()


STOP_GRACE_S = 10.0


async def stop(*tasks: asyncio.Task[Any], grace_s: float = STOP_GRACE_S) -> None:
    """Cancel ``tasks`` and wait for them to end, at most ``grace_s``: a task that does not end by then is named
    in the log with where it waits, and the stop goes on without it (an operator that hangs on its way out holds
    its peering and its leader lease; one that leaves a stuck task behind only leaves a log line)."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        frames = "; ".join(f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno}" for f in task.get_stack())
        log.error("Task %s did not stop within %.0f s of its cancel (waiting at %s); stopping without it",
                  task.get_name(), grace_s, frames or "?")


async def idle(wake: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``wake`` is set or ``timeout_s`` passes, then clear it. asyncio.timeout, not asyncio.wait_for: on
    Python 3.11, wait_for returns normally when the task is cancelled just after the event is set (CPython
    gh-86296), so a stop that met a wake-up was lost and the loop, its watches with it, ran on."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await wake.wait()
    wake.clear()


async def tick(rt: runtime.Runtime, writes: PacedWrites) -> dict[str, int]:
    """One pass; ``writes``: the loop's write queue and budget, carried from pass to pass."""
    now = rt.clock.now()
    cfg = rt.ledger.config
    minted = await _isolated("minting", mint_due(rt, now, cfg))
    billed = await _isolated("billing", bill_due(rt, now, cfg))
    proposals = await rt.ledger.proposal_summaries()
    closed = await close_due(rt, now, proposals)
    if closed:
        proposals = await rt.ledger.proposal_summaries()
    swept = await sweep(rt, now)
    summaries = await rt.ledger.node_summaries(now=now)
    moved = await heal(rt, now, summaries)
    if moved:
        summaries = await rt.ledger.node_summaries(now=now)  # capacity moved between nodes
    patched = await refresh(rt, now, summaries, proposals, writes)
    return {"minted_periods": minted, "billed_periods": billed, "closed_proposals": closed, "moved": moved,
            "patched": patched, "swept": swept}


async def _isolated(stage: str, job: Coroutine[Any, Any, int]) -> int:
    """Invariant 6: a period the ledger refuses (a bound, a conflict) stops that stage only, never the rest of the
    tick (closing proposals, sweeps, healing, status); an unavailable ledger still ends the tick (every stage needs it)."""
    try:
        return await job
    except errors.Unavailable:
        raise
    except errors.LedgerError as err:
        log.error("The %s stage was refused by the ledger (%s); the rest of the tick goes on: %s", stage,
                  err.reason, err.message)
        return 0
