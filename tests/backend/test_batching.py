"""The batcher that coalesces concurrent placements: answers per caller, errors per caller or per batch."""

from __future__ import annotations

import asyncio

import pytest

from tfgrid_operator.backend.batching import Batcher


async def test_concurrent_submits_share_batches_and_each_gets_its_own_answer():
    seen: list[list[int]] = []

    async def run(batch):
        seen.append(list(batch))
        await asyncio.sleep(0.01)
        return [ValueError(f"odd {x}") if x % 2 else x * 10 for x in batch]

    b = Batcher(run, max_batch=8)
    answers = await asyncio.gather(*(b.submit(i) for i in range(20)), return_exceptions=True)
    assert [a if isinstance(a, int) else str(a) for a in answers] == \
        [i * 10 if i % 2 == 0 else f"odd {i}" for i in range(20)]
    assert sorted(x for batch in seen for x in batch) == list(range(20))  # each item ran exactly once
    assert b.batches == len(seen) < 20 and max(map(len, seen)) == 8


async def test_a_batch_that_fails_fails_each_of_its_callers_and_the_next_batch_runs():
    calls = 0

    async def run(batch):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("ledger gone")
        return list(batch)

    b = Batcher(run)
    first = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    assert all(isinstance(x, RuntimeError) for x in first)
    assert await b.submit(3) == 3


async def test_a_cancelled_caller_is_skipped_and_close_cancels_the_waiting():
    gate = asyncio.Event()

    async def run(batch):
        await gate.wait()
        return list(batch)

    b = Batcher(run)
    gone = asyncio.create_task(b.submit(1))
    stays = asyncio.create_task(b.submit(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    gate.set()
    assert await stays == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
    gate.clear()
    waiting = asyncio.create_task(b.submit(3))
    await asyncio.sleep(0.01)
    await b.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
