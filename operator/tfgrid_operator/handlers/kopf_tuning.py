"""Work kopf does that does nothing for us, cut: what kopf keeps of a watch event (the object without its
managedFields, decoded by orjson), and a deep copy of the whole object on each of its patches.

kopf queues each object's watch events until one of its workers (``TFGRID_WORKER_LIMIT`` per kind) takes them, with
no back-pressure on the watch: during a burst thousands of events wait, each a full object as the API server sent it.
About half of one of our objects as kube-apiserver serves it is ``metadata.managedFields`` (server-side apply's
bookkeeping: who set which field), which no handler reads and kopf's own processing only copies around.
controller-runtime's caches offer the same cut (``cache.TransformStripManagedFields``). So every event kopf's watch
yields — the initial LIST's objects and each WATCH event — loses its managedFields before kopf queues it; the writes
kopf and our handlers make are patches, which never carry them.

kopf decodes each line of a watch stream with the standard library's ``json``, and each response (its LISTs, the
object every PATCH answers with) with aiohttp's default, the same; both go through ``kube.jsonwire`` (orjson, about
three times faster; JSON decoding was ~11 % of a burst's CPU with objects as served, and the stdlib's decoding of
kopf's LISTs and PATCH answers still ~3 % of a restart's at grid size) instead.

kopf builds the JSON patch of a change's callable part (its finalizers) after every PATCH it sends, deep-copying the
object the server answered first, also when there is no such part (every status PATCH): ~2 % of a burst's CPU for
a copy it throws away.

kopf holds a worker for ``settings.persistence.consistency_timeout`` (5 s) after it removes an object's last
finalizer: it marks the version it waits for as one that never arrives (its workaround for the API server answering
that PATCH with the version before it), so its worker waits out the whole timeout after the object's DELETED event,
the last one there can be. With ``worker_limit`` workers a kind, that capped deleting a namespace at about
worker_limit / 5 objects a second (issue 17: 224 s to delete 11,050 objects at grid size, the operator idle most of
it). After that PATCH nothing is waited for: the DELETED event comes next and the worker ends after its idle
timeout. A stale event still queued behind the PATCH can at most run the delete handler again, which closes nothing
twice (the ledger's close is idempotent) and whose finalizer PATCH then finds the object gone.

All hook into kopf's internals (its watch stream, its API module's JSON, its Patch class), which is why kopf is
pinned; tests/shell/test_kopf_tuning.py runs kopf's own watch against the strict emulator through them."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import watching as kopf_watching
from kopf._cogs.structs import patches as kopf_patches
from kopf._core.actions import application as kopf_application

from tfgrid_operator.kube import jsonwire

KOPF_INFINITE_WATCH = kopf_watching.infinite_watch
KOPF_AS_JSON_PATCH = kopf_patches.Patch.as_json_patch
KOPF_REQUEST = kopf_api.request
KOPF_PATCH_AND_CHECK = kopf_application.patch_and_check
NEVER_ARRIVES = "~which~never~arrives"  # kopf's mark on the version after an object's last finalizer is removed


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(raw_event: Any) -> Any:
    """The event with its object's managedFields dropped, and kubectl's last-applied annotation (a whole copy of the
    object as `kubectl apply` last sent it, which kopf's essence leaves out too); a bookmark or an error status is
    passed as it is."""
    if isinstance(raw_event, dict):
        obj = raw_event.get("object")
        if isinstance(obj, dict):
            meta = obj.get("metadata")
            if isinstance(meta, dict):
                meta.pop("managedFields", None)
                annotations = meta.get("annotations")
                if isinstance(annotations, dict):
                    annotations.pop(LAST_APPLIED, None)
    return raw_event


async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
    """kopf's own watch stream (LIST, then WATCH, reconnecting forever), each event slimmed as it arrives."""
    async for raw_event in KOPF_INFINITE_WATCH(**kwargs):
        yield slim(raw_event)


class JsonWire:
    """Stands in for the ``json`` module in kopf's API module, whose only use of it is ``json.loads`` of a line."""

    loads = staticmethod(jsonwire.loads)


async def request(*args: Any, **kwargs: Any) -> aiohttp.ClientResponse:
    """kopf's own request, whose response's ``json()`` decodes with ``kube.jsonwire`` (aiohttp's ``loads`` argument:
    its content-type check and empty-body answer stay aiohttp's)."""
    response = await KOPF_REQUEST(*args, **kwargs)
    setattr(response, "json", functools.partial(response.json, loads=jsonwire.loads))  # noqa: B010  (an instance's)
    return response


async def patch_and_check(**kwargs: Any) -> tuple[str | None, Any]:
    """kopf's own, with no version to wait for after the PATCH that removed an object's last finalizer."""
    version, remaining = await KOPF_PATCH_AND_CHECK(**kwargs)
    if version is not None and version.endswith(NEVER_ARRIVES):
        return None, remaining
    return version, remaining


def as_json_patch(self: kopf_patches.Patch, body: Any = None) -> Any:
    """kopf's own, without the deep copy of ``body`` when the patch is empty (it returns no operations then)."""
    if not self:
        return []
    return KOPF_AS_JSON_PATCH(self, body)


def install() -> None:
    """Route kopf's watchers through ``infinite_watch``, its stream and response decoding through orjson, its JSON
    patches through ``as_json_patch``, and its patches of objects through ``patch_and_check`` (idempotent)."""
    kopf_watching.infinite_watch = infinite_watch
    kopf_patches.Patch.as_json_patch = as_json_patch  # type: ignore[method-assign]
    kopf_api.request = request
    kopf_application.patch_and_check = patch_and_check
    setattr(kopf_api, "json", JsonWire)  # noqa: B010  (kopf's module global, not a typed attribute)
