"""Coalesce concurrent requests into batches that one worker runs back to back.

Placement needs the ledger's write lock. Taken once per deployment, the lock is held across a handful of database
round trips, and each round trip waits its turn in an event loop busy with thousands of other objects: placements
queue behind each other and slow down as the grid grows. Taken once per batch, every placement that arrived while
the previous batch ran shares one transaction, one candidate query and one insert.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass
class _Waiting(Generic[T, R]):
    item: T
    done: asyncio.Future[R]


class Batcher(Generic[T, R]):
    """``await submit(item)`` returns ``run(batch)``'s answer for that item. ``run`` returns one answer per item,
    in order: a value, or an exception instance raised to that item's caller alone. An exception ``run`` raises
    reaches every caller of the batch."""

    def __init__(self, run: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]], max_batch: int = 256) -> None:
        self._run, self._max = run, max_batch
        self._queue: list[_Waiting[T, R]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # how many batches ran (the tests and the benchmark read it)

    async def submit(self, item: T) -> R:
        waiting: _Waiting[T, R] = _Waiting(item, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await waiting.done

    async def close(self) -> None:
        """Stop the worker; callers still waiting are cancelled (what a batch committed stays committed)."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for w in self._queue:
            w.done.cancel()
        self._queue = []

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self._max], self._queue[self._max:]
            self.batches += 1
            try:
                answers = await self._run([w.item for w in batch])
            except asyncio.CancelledError:
                for w in batch + self._queue:
                    w.done.cancel()
                self._queue = []
                raise
            except Exception as exc:  # handed to every caller of the batch
                answers = [exc] * len(batch)
            for w, answer in zip(batch, answers, strict=True):
                if w.done.done():  # the caller went away (cancelled); the answer is in the ledger anyway
                    continue
                if isinstance(answer, BaseException):
                    w.done.set_exception(answer)
                else:
                    w.done.set_result(answer)
