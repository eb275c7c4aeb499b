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
from tfgrid_operator.loop import mirror
from tfgrid_operator.loop.jobs import bill_due, close_due, heal, mint_due, sweep
from tfgrid_operator.loop.pacing import PacedWrites
from tfgrid_operator.loop.refresh import paced_writes, refresh

log = logging.getLogger("tfgrid_operator.loop")


async def run_forever(rt: runtime.Runtime) -> None:
    writes = paced_writes(rt)
    watches = mirror.start(rt)  # rt.objects: what the ticks read of the cluster
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.wake.wait(), rt.settings.tick_s)
            rt.wake.clear()
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        await writes.close()


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
