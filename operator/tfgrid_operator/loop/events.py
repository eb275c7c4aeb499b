"""What the loop says to the API server besides status: Events on objects, at most API_CONCURRENCY calls at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from tfgrid_operator import conditions, runtime
from tfgrid_operator.conditions import Reason
from tfgrid_operator.kube.client import ApiError

log = logging.getLogger("tfgrid_operator.loop")

API_CONCURRENCY = 16  # requests the loop keeps in flight to the API server


async def concurrently(calls: list[Coroutine[Any, Any, Any]], limit: int = API_CONCURRENCY) -> None:
    """Await the calls with at most ``limit`` in flight (one Event or PATCH per object, never one at a time)."""
    sem = asyncio.Semaphore(limit)

    async def one(call: Coroutine[Any, Any, Any]) -> None:
        async with sem:
            await call
    await asyncio.gather(*(one(c) for c in calls))


async def event(rt: runtime.Runtime, ref: dict[str, Any], type: str, reason: Reason, message: str) -> None:
    try:
        await rt.kube.post_event(ref, type=type, reason=str(reason), message=message,
                                 now=conditions.timestamp(rt.clock.now()))
    except ApiError as err:  # a namespace being deleted refuses new Events (403): nobody is left to tell
        terminating = err.status == 403 and "being terminated" in str(err)
        log.log(logging.DEBUG if terminating else logging.WARNING, "Could not post event %s: %s", reason, err)


KINDS = {"nodes": "Node", "farms": "Farm", "deployments": "Deployment", "proposals": "Proposal"}


def object_ref(rt: runtime.Runtime, plural: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object an Event is about, as the watch last showed it; None once it is gone."""
    body = rt.objects.get((plural, namespace, name))
    if body is None:
        return None
    return {"apiVersion": f"{runtime.GROUP}/{runtime.VERSION}", "kind": KINDS[plural], "metadata": body["metadata"]}
