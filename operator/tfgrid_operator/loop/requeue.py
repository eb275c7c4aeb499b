"""Which objects the loop asks kopf to reconcile again, and when: a report that was lost (nudges) and a wait on
the world (requeues, with a capped backoff). Asking is one annotation touch (nudge); kopf does the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from tfgrid_operator import conditions, runtime
from tfgrid_operator.conditions import WAITING
from tfgrid_operator.kube.client import ApiError

log = logging.getLogger("tfgrid_operator.loop")

Key = tuple[str, str, str]  # (plural, namespace, name)


REQUEUE_BACKOFF_CAP = 12  # the longest wait between two tries, in multiples of the first (retry_delay_s)


async def nudge(rt: runtime.Runtime, plural: str, ns: str, name: str) -> None:
    """A new event for kopf: it re-runs the handlers of an object (whose last pass never got written, or whose
    payer grant is about to end and must be read again)."""
    # wall time to the microsecond: a value that always differs, so the patch is always a change kopf sees
    meta = {"metadata": {"annotations": {runtime.REQUEUE_ANNOTATION: datetime.now(UTC).isoformat()}}}
    try:
        await rt.kube.request("PATCH", rt.kube.path(runtime.GROUP, runtime.VERSION, plural, ns, name), meta,
                              "application/merge-patch+json")
    except ApiError as err:
        log.warning("Could not request a reconcile of %s %s/%s: %s", plural, ns, name, err)


def unobserved(rt: runtime.Runtime) -> list[Key]:
    """Objects whose status has not shown their current generation for settings.nudge_after_s: kopf retries a
    failed handler by itself, but not a failed write of its own (a 409 or a dropped connection on its PATCH).
    When a reconcile ran for that generation, its report was lost: nudge. When none ran yet, the object is either
    still in kopf's queue (a burst of creations: nudging would only add work) or kopf's finalizer write failed
    before the handler: those are nudged once kopf has been quiet for nudge_after_s (no reconcile finished)."""
    now = time.monotonic()
    quiet = now - rt.last_reconcile >= rt.settings.nudge_after_s
    return [key for key, body in list(rt.objects.items()) if _unobserved(rt, key, body, now, quiet)]


def requeues(rt: runtime.Runtime) -> list[Key]:
    """Objects waiting on the world (no room, no payer, no farm yet) due for another try: first after
    rt.retry_delay_s, then each wait twice the last, up to REQUEUE_BACKOFF_CAP times the first."""
    now = time.monotonic()
    return [key for key, body in list(rt.objects.items()) if _requeue_due(rt, key, body, now)]


async def due(rt: runtime.Runtime, every: int) -> list[Key]:
    """``unobserved`` and ``requeues`` in one pass over every object that lets the event loop run every ``every``
    objects (at grid size the two passes held it ~70 ms a tick in one piece): each object is looked at as it is
    when its turn comes, one gone meanwhile is not; what both find, in key order."""
    now = time.monotonic()
    quiet = now - rt.last_reconcile >= rt.settings.nudge_after_s
    found = []
    for i, key in enumerate(list(rt.objects)):
        if i and i % every == 0:
            await asyncio.sleep(0)
        body = rt.objects.get(key)
        if body is None:
            continue
        # both: each keeps its own bookkeeping of the object
        if _unobserved(rt, key, body, now, quiet) | _requeue_due(rt, key, body, now):
            found.append(key)
    return sorted(found)


def _unobserved(rt: runtime.Runtime, key: Key, body: dict[str, Any], now: float, quiet: bool) -> bool:
    if key[0] in rt.unfollowed:  # as last seen: its status may have moved on since
        return False
    meta = body["metadata"]
    generation = meta.get("generation", 1)
    seen = (body.get("status") or {}).get("observedGeneration")
    ready = conditions.get((body.get("status") or {}).get("conditions") or [], "Ready") or {}
    # a wait on the world keeps observedGeneration behind on purpose; requeues() retries those, not nudges
    if meta.get("deletionTimestamp") or (seen is not None and seen >= generation) or \
            ready.get("reason") in WAITING or (rt.handled.get(key, -1) < generation and not quiet):
        rt.unobserved_since.pop(key, None)
        return False
    since = rt.unobserved_since.setdefault(key, now)
    if now - since >= rt.settings.nudge_after_s:
        rt.unobserved_since[key] = now
        return True
    return False


def _requeue_due(rt: runtime.Runtime, key: Key, body: dict[str, Any], now: float) -> bool:
    if key[0] in rt.unfollowed:
        return False
    held = rt.reported.get(key)
    if body["metadata"].get("deletionTimestamp") or held is None or \
            held[0] != body["metadata"].get("uid", "") or held[1] not in WAITING:
        rt.requeue_at.pop(key, None)
        return False
    first = rt.retry_delay_s
    at, wait = rt.requeue_at.setdefault(key, (now + first, first))
    if now < at:
        return False
    wait = min(wait * 2, first * REQUEUE_BACKOFF_CAP)
    rt.requeue_at[key] = (now + wait, wait)
    return True


def forget_gone(rt: runtime.Runtime) -> None:
    """Per-object bookkeeping of the loop ends with the object."""
    for book in (rt.unobserved_since, rt.counters_written, rt.occupancy_written, rt.handled, rt.requeue_at,
                 rt.refreshed, rt.reported, rt.refused):
        for key in book.keys() - rt.objects.keys():
            del book[key]
