"""Deletes that wait for their dependents (a Node still carrying deployments, a Farm still having nodes) sleep in
kopf with a long delay and are finished when the last dependent is gone, instead of polling.

A kopf retry of a blocked delete costs two writes (kopf's progress in status, then its touch when the delay ends):
polling every few seconds, a Node waiting for its deployments while its namespace is deleted whole cost ~9 writes,
a Farm ~11 (issue 17). Here a blocked delete registers what the ledger said blocks it (``Conflict.blockers``);
when this operator closes the last of them (a Deployment's contract, a Node), it finishes that delete as kopf's
retry would have: the ledger record closed (the kind's closer, registered with closes()), then the finalizer
removed — one write, where clearing kopf's stored delay would have cost three (the wake, kopf's purge of its
progress, its removal of the finalizer). The object goes; kopf, asleep on the delay, sees it gone.

It waits until kopf has stored the blocked retry (its retry count moved past the one that blocked: kopf's
progress is in status, handlers/startup.py ProgressInStatus), so that it never races the write of the block.
Something new in the way (a deployment placed on the node since) is waited for in turn; a ledger that fails
leaves the delete to kopf's retry, which reports it. What this operator does not close itself (a contract the
sweep closes as orphaned, a grant revoked, a move off a down node) or anything across a restart (the registry is
in memory) is left to the long delay, the safety net.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp

from tfgrid_operator import runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.kube.client import ApiError

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (plural, namespace, name)

WAKE_POLLS = 40  # how often a wake looks for kopf's stored delay before leaving it to the delay
WAKE_POLL_S = 0.25
FINALIZER = f"{runtime.PREFIX}/finalizer"  # kopf's, as handlers/startup.py configures it
_waking: set[asyncio.Task[None]] = set()

# plural → (the plural of its dependents, how its ledger record is closed given the object's body)
Closer = Callable[[runtime.Runtime, Any], Awaitable[Any]]
_closers: dict[str, tuple[str, Closer]] = {}


def closes(plural: str, on: str, closer: Closer) -> None:
    """How a blocked delete of ``plural`` (waiting for ``on``) is finished when nothing blocks it any more."""
    _closers[plural] = (on, closer)


def dependent(plural: str, name: str) -> str:
    """How a dependent is named in the registry: its kind and its ledger name (a contract's key, a node's name)."""
    return f"{plural}:{name}"


def wait(rt: runtime.Runtime, body: Any, plural: str, handler: str, retry: int, dependents: Iterable[str]) -> None:
    """Register a blocked delete of ``body`` (kopf's handler id ``handler``, at kopf's retry count ``retry``) that
    waits for ``dependents`` (named by dependent())."""
    meta = body.get("metadata", {})
    key: Key = (plural, meta.get("namespace") or "", meta.get("name", ""))
    forget(rt, key)
    pending = set(dependents)
    rt.waits[key] = (meta.get("uid", ""), handler, retry, pending)
    for d in pending:
        rt.waited_for.setdefault(d, set()).add(key)


def forget(rt: runtime.Runtime, key: Key) -> None:
    """The object no longer waits (closed, or it blocks anew with what blocks it now)."""
    held = rt.waits.pop(key, None)
    if held is None:
        return
    for d in held[3]:
        waiting = rt.waited_for.get(d)
        if waiting is not None:
            waiting.discard(key)
            if not waiting:
                del rt.waited_for[d]


def gone(rt: runtime.Runtime, what: str) -> None:
    """A dependent is gone (its contract or record closed): wake every delete that waited for it and for nothing
    else any more."""
    for key in rt.waited_for.pop(what, set()):
        held = rt.waits.get(key)
        if held is None:
            continue
        held[3].discard(what)
        if not held[3]:
            del rt.waits[key]
            task = asyncio.get_running_loop().create_task(_wake(rt, key, held[0], held[1], held[2]))
            _waking.add(task)
            task.add_done_callback(_waking.discard)


def stored_retries(obj: Any, handler: str) -> tuple[int, bool]:
    """kopf's stored progress of ``handler`` on ``obj``: its retry count and whether a delay is stored."""
    record = (((obj.get("status") or {}).get("kopf") or {}).get("progress") or {}).get(handler) or {}
    return int(record.get("retries") or 0), bool(record.get("delayed"))


async def _wake(rt: runtime.Runtime, key: Key, uid: str, handler: str, retry: int) -> None:
    """Once kopf has stored the retry that blocked, finish the delete (_finish). Reads until then."""
    plural, namespace, name = key
    path = rt.kube.path(runtime.GROUP, runtime.VERSION, plural, namespace, name)
    for _ in range(WAKE_POLLS):
        try:
            obj = await rt.kube.request("GET", path)
            meta = obj.get("metadata", {})
            if meta.get("uid") != uid or not meta.get("deletionTimestamp"):
                return  # gone and made anew: not the object that waited
            retries, delayed = stored_retries(obj, handler)
            if retries > retry + 1:
                return  # kopf ran it again since (its delay ended): that run registered what blocks it now
            if retries == retry + 1 and delayed and await _finish(rt, key, obj, handler, retries):
                return
        except ApiError as err:
            if err.status != 404:
                log.warning("Could not finish the delete of %s %s/%s: %s", plural, namespace, name, err)
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            log.warning("Could not finish the delete of %s %s/%s: %s", plural, namespace, name, err)
            return
        except Exception:  # a task of its own: nobody above it would say it failed (kopf's retry still comes)
            log.exception("Could not finish the delete of %s %s/%s", plural, namespace, name)
            return
        await asyncio.sleep(WAKE_POLL_S)  # kopf's write of this retry is on its way (or the object moved on)


async def _finish(rt: runtime.Runtime, key: Key, obj: Any, handler: str, retries: int) -> bool:
    """What kopf's retry would do: close the ledger record, then remove the finalizer (one JSON patch, on this
    resourceVersion). True when done with this wait (finished, waiting for something new, or left to kopf's
    retry); False to look again (the object changed under the patch)."""
    plural, namespace, name = key
    if plural not in _closers:  # nothing here finishes this kind: kopf's retry does
        await _clear_delay(rt, key, handler)
        return True
    on, closer = _closers[plural]
    try:
        await closer(rt, obj)
    except errors.Conflict as err:  # something new is in the way (a deployment placed on the node since)
        if err.blockers:
            wait(rt, obj, plural, handler, retries - 1, (dependent(on, b) for b in err.blockers))
        return True  # or the stored delay retries it
    except errors.LedgerError:
        await _clear_delay(rt, key, handler)  # kopf's retry reports the failure (condition, Event) and backs off
        return True
    finalizers = list(obj.get("metadata", {}).get("finalizers") or [])
    if FINALIZER in finalizers:
        ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"].get("resourceVersion")},
               {"op": "remove", "path": f"/metadata/finalizers/{finalizers.index(FINALIZER)}"}]
        try:
            await rt.kube.request("PATCH", rt.kube.path(runtime.GROUP, runtime.VERSION, plural, namespace, name), ops,
                                  "application/json-patch+json")
        except ApiError as err:
            if err.status in (409, 422):
                return False  # written since: read it again (the close is idempotent)
            raise
    gone(rt, dependent(plural, name))
    return True


async def _clear_delay(rt: runtime.Runtime, key: Key, handler: str) -> None:
    """Make kopf's blocked retry due now: its stored delay cleared (an event kopf sees at once)."""
    plural, namespace, name = key
    await rt.kube.patch_status(runtime.GROUP, runtime.VERSION, plural, namespace, name,
                               {"kopf": {"progress": {handler: {"delayed": None}}}})
