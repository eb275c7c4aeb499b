"""The pace of the loop's writes (issue 17): a budget of API calls per second (settings.status_writes_per_s) for its
status PATCHes and requeue nudges, so a billing hour's write-back spreads over time instead of holding the API
server saturated, and objects created meanwhile become Ready as fast as when nothing else runs.

Each tick offers what it found (offer_status, offer_nudge); what a person needs now (anything but counters: a
condition, Ready, a move, a grace period, an error, a nudge) is sent before counter-only changes, and within each,
the oldest first. A tick sends at once what the budget has room for (flush); what does not fit is carried, as it
was computed, and a pacer task sends it at the budget's rate between ticks. A later tick that finds a newer change
for a queued object replaces the queued one in place: an object is written once, with its latest status.
The handlers' own writes (kopf's) are not paced by this.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("tfgrid_operator.loop")

Key = tuple[str, str, str]  # (plural, namespace, name)
STATUS, NUDGE = "status", "nudge"
EPSILON = 1e-9  # a token short by float rounding is a token (or a wait of 1e-17 s would never end)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; time from ``monotonic`` seconds given by the caller."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not rate={rate} burst={burst}")
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def _fill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def take(self, now: float, wanted: int) -> int:
        """How many of ``wanted`` calls may go now (each spends a token)."""
        self._fill(now)
        n = max(0, min(wanted, int(self.tokens + EPSILON)))
        self.tokens -= n
        return n

    def wait_s(self, now: float) -> float:
        """Seconds until the next token."""
        self._fill(now)
        return 0.0 if self.tokens + EPSILON >= 1 else (1 - self.tokens) / self.rate


@dataclasses.dataclass
class Write:
    kind: str  # STATUS (a merge patch of status) or NUDGE (a requeue annotation touch)
    key: Key
    uid: str  # the object it was computed for: a later object of the same name never gets it
    urgent: bool  # something a person needs now; False: counters only
    change: dict[str, Any] = dataclasses.field(default_factory=dict)
    basis: dict[str, Any] = dataclasses.field(default_factory=dict)  # the status the change was computed against
    report: object = None  # the handler's report it was computed with (the sender checks that it still stands)


class PacedWrites:
    """The queue of the loop's writes and their budget. ``send`` does one write; ``monotonic`` and ``sleep`` are the
    time the budget is counted in (injectable: tests count writes per window of a clock they move)."""

    def __init__(self, rate: float, send: Callable[[Write], Awaitable[None]], *, concurrency: int = 16,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.bucket = TokenBucket(rate, burst=max(1.0, rate), now=monotonic())  # at most a second's worth at once
        self.send, self.concurrency, self.monotonic, self.sleep = send, concurrency, monotonic, sleep
        self.urgent: OrderedDict[tuple[str, Key], Write] = OrderedDict()
        self.counters: OrderedDict[tuple[str, Key], Write] = OrderedDict()
        self.pacer: asyncio.Task[None] | None = None
        self.sent = 0

    def __len__(self) -> int:
        return len(self.urgent) + len(self.counters)

    def queued(self, key: Key) -> Write | None:
        return self.urgent.get((STATUS, key)) or self.counters.get((STATUS, key))

    def offer_status(self, key: Key, uid: str, change: dict[str, Any], urgent: bool,
                     basis: dict[str, Any] | None = None, report: object = None) -> None:
        """Queue a status change, or replace the one queued for the object in place: it is written once, with the
        latest change (an urgent one never waits behind counters)."""
        q = (STATUS, key)
        old = self.urgent.get(q) or self.counters.get(q)
        write = Write(STATUS, key, uid, urgent or (old is not None and old.urgent), change, basis or {}, report)
        if old is not None and (old.urgent or not write.urgent):
            (self.urgent if old.urgent else self.counters)[q] = write  # keeps its place
            return
        self.counters.pop(q, None)
        (self.urgent if write.urgent else self.counters)[q] = write

    def withdraw(self, key: Key) -> None:
        """The status is already what it should be: nothing to write."""
        self.urgent.pop((STATUS, key), None)
        self.counters.pop((STATUS, key), None)

    def offer_nudge(self, key: Key, uid: str) -> None:
        self.urgent.setdefault((NUDGE, key), Write(NUDGE, key, uid, True))

    def keep(self, alive: Callable[[Write], bool]) -> None:
        """Forget the writes whose object went (deleted, being deleted, another object of the same name)."""
        for book in (self.urgent, self.counters):
            for q in [q for q, w in book.items() if not alive(w)]:
                del book[q]

    def _pop(self, n: int) -> list[Write]:
        out: list[Write] = []
        for book in (self.urgent, self.counters):
            while book and len(out) < n:
                out.append(book.popitem(last=False)[1])
        return out

    async def _send(self, n: int) -> int:
        """Send the first ``n`` queued writes (their tokens already taken), at most ``concurrency`` at once."""
        sent = 0
        while sent < n and (batch := self._pop(min(n - sent, self.concurrency))):
            results = await asyncio.gather(*(self.send(w) for w in batch), return_exceptions=True)
            for w, result in zip(batch, results, strict=True):
                if isinstance(result, Exception):  # a dropped connection: the next tick finds the change again
                    log.warning("The loop's %s write of %s %s/%s failed: %s", w.kind, *w.key, result)
            sent += len(batch)
        self.sent += sent
        return sent

    async def flush(self) -> int:
        """A tick's share: what the budget has room for as the tick ends (at most a second's worth); the rest is
        carried and paced, so a tick never waits for a period's write-back."""
        sent = await self._send(self.bucket.take(self.monotonic(), len(self)))
        if self and (self.pacer is None or self.pacer.done()):
            self.pacer = asyncio.create_task(self._pace(), name="tfgrid-paced-writes")
        return sent

    async def _pace(self) -> None:
        while self:
            wait = self.bucket.wait_s(self.monotonic())
            if wait > 0:
                await self.sleep(wait)
                continue
            await self._send(self.bucket.take(self.monotonic(), min(len(self), self.concurrency)))

    async def close(self) -> None:
        if self.pacer is not None:
            self.pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pacer
