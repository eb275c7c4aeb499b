"""The report step every handler shares: conditions + status fields → the smallest status patch.

A reconcile that changes nothing adds nothing to kopf's patch, so kopf sends no PATCH at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import aiohttp
import kopf
from pydantic import BaseModel

from tfgrid_operator import api, conditions, runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.conditions import Reason
from tfgrid_operator.handlers import blocked, tenancy
from tfgrid_operator.kube.client import ApiError
from tfgrid_operator.loop import status as projections

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


def desired_status(rt: runtime.Runtime, body: Any, *, finished: bool = True, **kwargs: Any) -> dict[str, Any]:
    """The status a reconcile reports. ``finished``: this generation's reconcile is done (applied, or judged
    invalid), so observedGeneration becomes it; a wait on the world (no room for a resize) is not, and keeps the
    generation that last finished (none yet: no observedGeneration), so that `kubectl wait` and kstatus are not
    told an edit was applied while the ledger still holds the old one."""
    status = dict(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation", 1) if finished else status.get("observedGeneration")
    return conditions.desired_status(status, generation=generation, now=conditions.timestamp(rt.clock.now()), **kwargs)


def apply(rt: runtime.Runtime, body: Any, patch: kopf.Patch, desired: dict[str, Any]) -> bool:
    tenancy.note(rt, body, desired)  # the loop asks this, not the status, whether a handler holds the object
    changes = conditions.diff(dict(body.get("status") or {}), desired)
    if set(changes) <= projections.ROUTINE:
        # only what moves by itself (a new bill, uptime, a node's occupancy): the loop's paced write-back carries it.
        # Written here, 10,000 Deployments resumed after a billing hour would send every new bill at once, unpaced
        return False
    # a field its Status model lacks is a bug: said here, not pruned silently (checked when written: a restart
    # resumes thousands of objects whose status stays as it was)
    api.check_status(body["kind"], desired)
    for k, v in changes.items():
        patch.status[k] = v
    return True


def report(rt: runtime.Runtime, body: Any, patch: kopf.Patch, **kwargs: Any) -> bool:
    return apply(rt, body, patch, desired_status(rt, body, **kwargs))


class Requeued(Exception):
    """A reconcile that reported a wait: counted as a requeue (controller-runtime's result), returned to kopf as
    a success so that its status patch is written and no kopf retry holds a worker."""


def waiting(rt: runtime.Runtime, body: Any, patch: kopf.Patch, *, reason: Reason, message: str,
            fields: dict[str, Any] | None = None, synced: bool = True) -> NoReturn:
    """Report a wait on the world (no node has room, the payer or the farm does not exist yet): Ready=False with
    the reason, one Warning Event per new reason, and end the reconcile (Requeued). The batched loop requeues
    waiting objects with a backoff; a kopf retry would hold one of its workers (settings.worker_limit) asleep for
    as long as the wait lasts."""
    if report(rt, body, patch, ready=False, reason=reason, message=message, fields=fields, synced=synced,
              synced_message=message if not synced else "", finished=False):
        kopf.warn(body, reason=str(reason), message=message)
    raise Requeued(message)


def ledger_failure(rt: runtime.Runtime, body: Any, patch: kopf.Patch, err: errors.LedgerError, *,
                   ready_reason: Reason, fields: dict[str, Any] | None = None, retry: int = 0,
                   waits: Waits | None = None) -> NoReturn:
    """Report a ledger error the one way: Synced=False, a Warning Event, and a retry with backoff. ``retry``: kopf's
    count of this handler's retries so far; ``waits``: a blocked delete that the last of its dependents finishes
    (handlers/blocked.py), which kopf then retries only after a long delay (see blocked_delay)."""
    current = dict(body.get("status") or {})
    ready = (conditions.get(current.get("conditions") or [], "Ready") or {}).get("status") == "True"
    changed = report(rt, body, patch, ready=ready and not isinstance(err, errors.NotFound), reason=ready_reason,
                     message=err.message, synced=False, synced_message=err.message, fields=fields)
    if changed:  # one Event per new failure, not one per retry; named for the condition when it is specific
        generic = ready_reason in (Reason.CREATING, Reason.DELETING)
        if body.get("metadata", {}).get("deletionTimestamp"):
            closing_event(rt, body, "Warning", err.reason if generic else str(ready_reason), err.message)
        else:
            kopf.warn(body, reason=err.reason if generic else str(ready_reason), message=err.message)
    if ready_reason == Reason.DELETE_BLOCKED:  # a wait on the world (a farm that still has nodes), not a failure
        if changed:
            log.info("%s/%s waits: %s", body.get("metadata", {}).get("namespace"), body.get("metadata", {}).get("name"),
                     err.message)
        blockers = err.blockers if isinstance(err, errors.Conflict) else ()
        if waits is not None and blockers:
            blocked.wait(rt, body, waits.plural, waits.handler, retry, (blocked.dependent(waits.on, b) for b in blockers))
        raise Blocked(err.message, delay=blocked_delay(rt, retry, woken=waits is not None and bool(blockers)))
    raise kopf.TemporaryError(err.message, delay=rt.retry_delay_s)


BLOCKED_BACKOFF_CAP = 6  # the longest wait of a blocked delete, in multiples of the first (retry_delay_s)
# a blocked delete that its last dependent finishes waits this many times retry_delay_s before kopf retries it anyway
# (the safety net: a dependent this operator did not close, a restart), then twice as long each time up to the cap
WOKEN_DELAY = 24
WOKEN_DELAY_CAP_S = 300.0


@dataclasses.dataclass(frozen=True)
class Waits:
    """What a delete handler waits for when the ledger says it is blocked: its object's plural, kopf's id of the
    handler, and the plural of the dependents the ledger names (a node's contracts: deployments; a farm's nodes)."""

    plural: str
    handler: str
    on: str


def blocked_delay(rt: runtime.Runtime, retry: int, *, woken: bool) -> float:
    """How long kopf waits before it retries a blocked delete. Each retry costs two writes (kopf's progress in
    status, then its touch to wake the object when the delay ends). A delete that its last dependent finishes (issue
    17: polling cost ~9 writes per node when a namespace is deleted whole) waits long, only as a safety net. Otherwise
    it backs off after three quick tries (most waits are short: a farm whose nodes are going too)."""
    if woken:
        return min(rt.retry_delay_s * WOKEN_DELAY * (1 << min(retry, 8)), WOKEN_DELAY_CAP_S)
    return rt.retry_delay_s * min(1 << min(max(0, retry - 2), 8), BLOCKED_BACKOFF_CAP)


class Blocked(kopf.TemporaryError):
    """A delete that waits on the world (a farm that still has nodes, a node that still carries deployments):
    retried like any temporary error, but it is expected, so kopf's per-retry "failed temporarily" line is
    DEBUG, not ERROR (ExpectedWaits); the condition, one Warning Event and one INFO line say it once."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message, delay=delay)
        _blocked.add(message)
        if len(_blocked) > 10_000:  # bounded: messages name objects
            _blocked.clear()
            _blocked.add(message)


_blocked: set[str] = set()


class ExpectedWaits(logging.Filter):
    """Log records that are not errors although kopf logs them at ERROR: its per-retry line of a Blocked delete,
    and its attempts to post an Event into a namespace being deleted (a cluster refuses them with 403; the
    namespace and the object go, so there is nobody to tell). Those become DEBUG; everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        blocked = " failed temporarily: " in text and text.partition(" failed temporarily: ")[2] in _blocked
        if blocked or "because it is being terminated" in text:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def invalid_spec(rt: runtime.Runtime, body: Any, patch: kopf.Patch, message: str) -> None:
    if report(rt, body, patch, ready=False, reason=Reason.INVALID_SPEC, message=message, synced=False,
              synced_message=message):
        kopf.warn(body, reason=str(Reason.INVALID_SPEC), message=message)


def parse_spec(rt: runtime.Runtime, model: type[M], body: Any, spec: Any, patch: kopf.Patch) -> M | None:
    """The parse step: the spec as a model, or None after reporting InvalidSpec (condition + Event)."""
    try:
        return api.parse(model, spec)
    except api.InvalidSpec as exc:
        invalid_spec(rt, body, patch, str(exc))
        return None


async def close_on_ledger(rt: runtime.Runtime, body: Any, patch: kopf.Patch, closing: Awaitable[Any], *,
                          message: Callable[[Any], str | None], retry: int = 0, waits: Waits | None = None) -> Any:
    """The delete step: close the ledger record, or keep the finalizer and say what blocks it.
    ``message`` turns the ledger's answer into the Closed Event's text (None posts no Event); ``retry``: kopf's;
    ``waits``: what finishes this delete when the ledger says it is blocked (handlers/blocked.py)."""
    try:
        closed = await closing
    except errors.Conflict as err:
        ledger_failure(rt, body, patch, err, ready_reason=Reason.DELETE_BLOCKED, retry=retry, waits=waits)
    except errors.LedgerError as err:
        ledger_failure(rt, body, patch, err, ready_reason=Reason.DELETING)
    if waits is not None:
        meta = body.get("metadata", {})
        blocked.forget(rt, (waits.plural, meta.get("namespace") or "", meta.get("name", "")))
    text = message(closed)
    if text:
        closing_event(rt, body, "Normal", str(Reason.CLOSED), text)
    return closed


# namespace → when (monotonic) the API server last refused an Event there because the namespace is being deleted
_terminating: dict[str, float] = {}
TERMINATING_MEMORY_S = 60.0  # then one Event is tried again (a namespace of that name may have been made anew)
_posting: set[asyncio.Task[None]] = set()


def terminating(namespace: str) -> bool:
    """Whether an Event into this namespace was refused lately because the namespace is being deleted."""
    since = _terminating.get(namespace)
    if since is None:
        return False
    if time.monotonic() - since < TERMINATING_MEMORY_S:
        return True
    del _terminating[namespace]
    return False


def closing_event(rt: runtime.Runtime, body: Any, type: str, reason: str, message: str) -> None:
    """An Event about an object being deleted: posted once in the background by our client, never retried, and not
    at all into a namespace that refused one because it is being deleted (every object in it is going, nobody is
    left to read it; kopf's queue would retry each refused Event: issue 17 counted ~39,000 of them)."""
    namespace = body.get("metadata", {}).get("namespace") or ""
    if terminating(namespace):
        return
    ref = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": dict(body.get("metadata", {}))}

    async def post() -> None:
        try:
            await rt.kube.post_event(ref, type=type, reason=reason, message=message,
                                     now=conditions.timestamp(rt.clock.now()))
        except ApiError as err:
            if err.status == 403 and "being terminated" in str(err):
                _terminating[namespace] = time.monotonic()
                if len(_terminating) > 10_000:  # bounded: namespaces come and go
                    _terminating.clear()
            else:
                log.warning("Could not post the %s Event of %s/%s: %s", reason, namespace, ref["metadata"].get("name"),
                            err)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            log.warning("Could not post the %s Event of %s/%s: %s", reason, namespace, ref["metadata"].get("name"), err)
    task = asyncio.get_running_loop().create_task(post())
    _posting.add(task)
    task.add_done_callback(_posting.discard)


# a kopf handler as kopf calls it: keyword arguments only (those it names, the rest in **kwargs); what the
# wrappers below return is exactly that, whatever the handler they wrap declares
Handler = Callable[..., Awaitable[Any]]


def metered(controller: str) -> Callable[[Handler], Handler]:
    """controller-runtime's reconcile metrics for a handler: count by result (success / requeue / error)
    and duration. The controller label is a kind, never an object name (bounded cardinality)."""
    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def handler(**kwargs: Any) -> Any:
            rt = runtime.of(kwargs.get("memo"))
            if rt is None:  # an event before startup finished: nothing to count into yet
                with contextlib.suppress(Requeued):
                    return await fn(**kwargs)
                return None
            m = rt.metrics
            started = time.perf_counter()
            result = "success"
            try:
                return await fn(**kwargs)
            except Requeued:
                result = "requeue"
                return None
            except kopf.TemporaryError:
                result = "requeue"
                raise
            except Exception:
                result = "error"
                m.reconcile_errors.labels(controller).inc()
                raise
            finally:
                m.reconcile_total.labels(controller, result).inc()
                m.reconcile_time.labels(controller).observe(time.perf_counter() - started)
        return handler
    return wrap


def ran_for_generation(plural: str) -> Callable[[Handler], Handler]:
    """Remember which generation a reconcile ran for: the loop nudges an object only when a reconcile ran but
    its report never landed (kopf's own write failed), never one that is merely still queued. While it runs, the
    object is the handler's (rt.busy): the loop writes nothing on it, not even what the ledger shows half-way
    through the handler's calls (a tally of four of five votes being counted)."""
    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def handler(**kwargs: Any) -> Any:
            rt = runtime.of(kwargs.get("memo"))
            key = (plural, kwargs.get("namespace") or "", kwargs["name"])
            if rt is not None:
                rt.busy[key] = rt.busy.get(key, 0) + 1
            try:
                return await fn(**kwargs)
            finally:
                if rt is not None:
                    rt.handled[key] = kwargs["body"].get("metadata", {}).get("generation", 1)
                    rt.last_reconcile = time.monotonic()
                    if rt.busy[key] <= 1:
                        del rt.busy[key]
                    else:
                        rt.busy[key] -= 1
        return handler
    return wrap


def reconciler(plural: str, controller: str) -> Callable[[Handler], Handler]:
    """The one decorator stack of every kind's reconcile handler: run on resume, create, spec updates and the
    loop's requeue annotation (never on our own status writes), with the controller's reconcile metrics."""
    def wrap(fn: Handler) -> Handler:
        handler = ran_for_generation(plural)(metered(controller)(fn))
        for on in (kopf.on.update(runtime.GROUP, runtime.VERSION, plural, field="spec"),
                   kopf.on.update(runtime.GROUP, runtime.VERSION, plural,
                                  field=("metadata", "annotations", runtime.REQUEUE_ANNOTATION)),
                   kopf.on.create(runtime.GROUP, runtime.VERSION, plural),
                   kopf.on.resume(runtime.GROUP, runtime.VERSION, plural)):
            on(handler)  # registers it (kopf's decorators return the function they are given)
        return handler
    return wrap
