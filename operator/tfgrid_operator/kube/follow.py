"""Following a collection as an informer does: LIST (in chunks), then WATCH from the list's resourceVersion; a watch
that ends is started again from the last version seen; one the server refuses as too old (410 Gone), or any failure,
LISTs again (after a wait that grows with consecutive failures). What is seen goes to a ``Sink``.

The view of the Secrets a Deployment's payer names (kube/secrets.py) follows its collection through this. The loop's
view of our objects (loop/mirror.View) is a ``Sink`` too, shown kopf's own LIST + WATCH of each kind instead
(handlers/kopf_tuning.tap), so that every event is read once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from tfgrid_operator.kube.client import ApiError, KubeClient

log = logging.getLogger("tfgrid_operator.kube")

WATCH_TIMEOUT_S = 300  # the server ends a watch after this; it is started again from the last resourceVersion
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits between failed LIST/WATCH attempts


class Sink(Protocol):
    def listing(self) -> None:
        """A LIST begins: what follows replaces everything seen before (events may have been missed)."""

    def listed(self, body: dict[str, Any]) -> None:
        """An object of the LIST."""

    def listed_all(self) -> None:
        """The LIST is complete: what it did not show is gone; events follow from here."""

    def changed(self, kind: str, body: dict[str, Any]) -> None:
        """A watch event: ADDED, MODIFIED or DELETED."""

    def lost(self) -> None:
        """The collection is no longer followed (here: the LIST or WATCH failed; kopf's stream also ends on its
        pause and on a 410): what was seen is as last seen until the next LIST."""


async def follow(kube: KubeClient, base: str, sink: Sink, what: str, chunk: int | None = None) -> None:
    """Follow the collection at ``base`` into ``sink`` for as long as the task runs, LISTing it in chunks of
    ``chunk`` objects (by default KubeClient's). Failures count until a WATCH has run: a LIST that works beside a
    WATCH that fails (list without watch in the RBAC) backs off too."""
    failures = 0
    while True:
        try:
            version = await _relist(kube, base, sink, chunk)
            while version:
                version = await _watch(kube, base, sink, version)
                failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as err:  # an API error or a dropped connection: list again after a wait
            sink.lost()
            log.warning("Watching %s failed (listing again): %s", what, err)
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
            failures += 1


async def _relist(kube: KubeClient, base: str, sink: Sink, chunk: int | None) -> str:
    sink.listing()
    version = ""
    async for items, listed_at in kube.list_pages(base, chunk):  # in chunks: one chunk's full objects held at a time
        version = listed_at  # the same in every chunk: the list's
        for item in items:
            sink.listed(item)
    sink.listed_all()
    return version


async def _watch(kube: KubeClient, base: str, sink: Sink, version: str) -> str:
    """One watch from ``version``; returns the version to go on from, or "" when the server says to LIST again."""
    path = f"{base}?watch=true&allowWatchBookmarks=true&timeoutSeconds={WATCH_TIMEOUT_S}&resourceVersion={version}"
    async for event in kube.watch(path, read_timeout_s=WATCH_TIMEOUT_S + 60):
        kind, body = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if body.get("code") == 410:
                return ""  # too old: the server no longer has what happened since; list again
            raise ApiError(int(body.get("code") or 500), str(body.get("message")))
        version = str((body.get("metadata") or {}).get("resourceVersion") or version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            sink.changed(kind, body)
    return version
