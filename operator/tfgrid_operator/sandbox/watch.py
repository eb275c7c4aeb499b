"""Watches as kube-apiserver serves them: each resource's recent events (so a watch resumes from a
resourceVersion, or gets 410 Expired when that is older than the history), the open streams' queues, and the
stream itself (initial events, the ``sendInitialEvents`` bookmark, then every event in scope). The emulator
(emulator.py) emits into it under its lock; a stream runs outside it."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable

import aiohttp.web
import attrs

from tfgrid_operator.sandbox.apimachinery import JSON

Event = tuple[int, str, JSON]  # (resourceVersion, ADDED | MODIFIED | DELETED | ERROR, object)
Queue = asyncio.Queue[Event | None]  # None: the stream is cut


def expired(since: str) -> Event:
    return (0, "ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                         "reason": "Expired", "message": f"too old resource version: {since}"})


@attrs.define
class Watches:
    history_size: int = 50_000
    _log: dict[str, collections.deque[Event]] = attrs.field(factory=dict)
    _queues: dict[str, set[Queue]] = attrs.field(factory=lambda: collections.defaultdict(set))

    def emit(self, key: str, event: Event) -> None:
        self._log.setdefault(key, collections.deque(maxlen=self.history_size)).append(event)
        for q in list(self._queues[key]):
            q.put_nowait(event)

    def since(self, key: str, since: str) -> list[Event]:
        """The events after resourceVersion ``since``, or one 410 when the history no longer reaches back to it."""
        log = self._log.get(key, collections.deque())
        start = int(since)
        if log and log[0][0] > start + 1 and len(log) == log.maxlen:
            return [expired(since)]
        return [e for e in log if e[0] > start]

    def subscribe(self, key: str) -> Queue:
        q: Queue = asyncio.Queue()
        self._queues[key].add(q)
        return q

    def unsubscribe(self, key: str, q: Queue) -> None:
        self._queues[key].discard(q)

    def drop(self) -> None:
        """Close every open watch stream, as a load balancer or an API server restart would."""
        for queues in self._queues.values():
            for q in list(queues):
                q.put_nowait(None)


async def stream(raw: aiohttp.web.BaseRequest, initial: list[Event], q: Queue, in_scope: Callable[[JSON], bool],
                 bookmark: JSON | None) -> aiohttp.web.StreamResponse:
    """Write ``initial`` (an ERROR ends the stream), the bookmark if asked for, then what arrives on ``q``."""
    response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(raw)

    async def send(kind: str, obj: JSON) -> None:
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    try:
        for _rv, kind, obj in initial:
            if kind == "ERROR":
                await send(kind, obj)
                return response
            if in_scope(obj):
                await send(kind, obj)
        if bookmark is not None:
            await send("BOOKMARK", bookmark)
        while (event := await q.get()) is not None:
            _, kind, obj = event
            if in_scope(obj):
                await send(kind, obj)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response
