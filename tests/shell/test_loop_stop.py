"""Stopping the loop: a cancel always ends it, even one that arrives as a wake-up does (the hang a CI run met:
the operator's cleanup waited on a loop that had swallowed its cancel, its watches still open)."""

from __future__ import annotations

import asyncio

import pytest

from tfgrid_operator.loop.runner import idle, stop


async def test_a_cancel_that_meets_a_wake_up_still_stops_the_idle_wait() -> None:
    wake = asyncio.Event()
    waiting = asyncio.create_task(idle(wake, 60))
    await asyncio.sleep(0)  # it waits on the event now
    wake.set()  # its wait is done, but it has not run again yet ...
    waiting.cancel()  # ... when the stop arrives
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert waiting.cancelled()


async def test_the_idle_wait_ends_on_a_wake_up_or_its_timeout_and_clears_the_wake_up() -> None:
    wake = asyncio.Event()
    wake.set()
    await idle(wake, 60)  # set already: no wait
    assert not wake.is_set()
    await asyncio.wait_for(idle(wake, 0.01), 5)  # nobody wakes it: the timeout ends it, no TimeoutError
    assert not wake.is_set()


async def test_a_task_that_ignores_its_cancel_is_named_and_left_behind_the_stop_goes_on(caplog) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # the kind of bug the bound is for

    ends = asyncio.create_task(asyncio.sleep(60), name="ends")
    stuck = asyncio.create_task(stubborn(), name="stuck")
    await asyncio.sleep(0)
    await stop(ends, stuck, grace_s=0.05)
    assert ends.cancelled() and not stuck.done()
    assert "Task stuck did not stop within" in caplog.text and "test_loop_stop.py" in caplog.text
    release.set()
    await stuck


async def test_stopping_nothing_is_at_once() -> None:
    await stop()
