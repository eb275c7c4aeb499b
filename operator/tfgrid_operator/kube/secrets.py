"""The Secrets a Deployment's payer names, read from a watch instead of a GET per reconcile.

Every Deployment's reconcile proves its payer from a Secret of its namespace (handlers/deployments.py). Read with a
GET each time, that was one API call per Deployment beside its two writes — ~0.9 calls per object in a burst at grid
size (issue 17), on the API server that a real cluster's burst is bounded by. controller-runtime serves a
controller's reads of Secrets from an informer's cache for that reason; this is the same, kept small:

- One LIST + WATCH of the Secrets in what the operator watches (every namespace, or ``run -n``'s), through
  ``kube.follow``: each Secret's data is kept only once a reconcile has asked for it (a cluster's other Secrets —
  certificates, Helm releases, tokens — are seen go by and dropped), up to ``KEPT_LIMIT`` of them.
- A Secret asked for the first time, or while the watch is not current (before its first LIST is complete, after
  a failure until the next LIST is), is read with a GET, as before; from then on the watch keeps it current,
  its deletion included (a deleted Secret reads as 404 without asking).
- A GET whose answer meets an event of the same Secret seen since it was asked keeps the event's (the newer).

What a reconcile reads is the Secret as the watch last showed it: a change (a renewed grant, a revoked key) shows
as soon as its event arrives, as in any informer — the reconcile that races it by milliseconds reads the one
before. One that fails on it (a missing Secret, an expired grant) waits and is retried by the loop, which then
reads the change.
"""

from __future__ import annotations

import collections
from typing import Any

from tfgrid_operator.kube import follow
from tfgrid_operator.kube.client import ApiError, KubeClient

KEPT_LIMIT = 10_000  # Secrets whose data is kept; past it all are dropped and read again on their next use
LIST_CHUNK = 50  # Secrets per chunk of the LIST
Key = tuple[str, str]  # (namespace, name)
Data = dict[str, str]


class SecretView:
    def __init__(self) -> None:
        self._kept: dict[Key, Data | None] = {}  # None: the Secret does not exist (as the watch last showed)
        self._current = False  # the watch has LISTed and follows: what is kept is as the server has it
        self._epoch = 0  # counts the LISTs begun and the drops of everything kept (past KEPT_LIMIT)
        self._asking: collections.Counter[Key] = collections.Counter()  # GETs on their way, by Secret
        self._serial = 0  # counts the events of kept or asked-for Secrets
        self._changed: dict[Key, int] = {}  # a kept or asked-for Secret → the serial of its latest event
        self._listed: set[Key] = set()  # the kept or asked-for Secrets the LIST under way showed
        self._namespace: str | None = None  # the watch's namespace (None: every namespace)

    async def data(self, kube: KubeClient, namespace: str, name: str) -> Data:
        """The ``data`` of Secret ``name`` of ``namespace`` (a copy); ApiError 404 when there is none."""
        key = (namespace, name)
        kept = self._kept[key] if self._current and key in self._kept else await self._get(kube, key)
        if kept is None:
            raise ApiError(404, f'secrets "{name}" not found')
        return dict(kept)

    async def _get(self, kube: KubeClient, key: Key) -> Data | None:
        """A GET (callers asking at once share it: ``get_shared``), kept from now on when the watch was current from
        before it was asked until its answer, and so will bring every change after it."""
        self._asking[key] += 1
        epoch, since, current = self._epoch, self._serial, self._current
        try:
            data: Data | None = _data(await kube.get_shared(kube.path("", "v1", "secrets", *key)))
        except ApiError as err:
            if err.status != 404:
                raise
            data = None
        finally:
            self._asking[key] -= 1
            if not self._asking[key]:
                del self._asking[key]
        if self._epoch != epoch or not (current and self._current):
            return data  # a LIST or a drop came between: what the watch shows of it may be older or newer
        if self._changed.get(key, -1) > since and key in self._kept:
            return self._kept[key]  # an event of it came while the GET was on its way: newer than its answer
        if self._namespace in (None, key[0]):  # its events will come: keep it
            self._keep(key, data)
        return data

    def kept(self) -> int:
        """How many Secrets the view keeps (those a reconcile asked for)."""
        return len(self._kept)

    def _keep(self, key: Key, data: Data | None) -> None:
        if key not in self._kept and len(self._kept) >= KEPT_LIMIT:
            self._kept.clear()  # each read again on its next use
            self._changed.clear()
            self._epoch += 1
        self._kept[key] = data

    def _seen(self, body: dict[str, Any], gone: bool) -> Key | None:
        """An event or listed object: kept if it is a Secret the view keeps or asks for (its key), else dropped."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if key not in self._kept and key not in self._asking:
            return None
        self._serial += 1
        self._changed[key] = self._serial
        self._keep(key, None if gone else _data(body))
        return key

    # the Sink that kube.follow fills
    def listing(self) -> None:
        self._current = False
        self._epoch += 1
        self._listed = set()

    def listed(self, body: dict[str, Any]) -> None:
        key = self._seen(body, gone=False)
        if key is not None:
            self._listed.add(key)

    def listed_all(self) -> None:
        for key in [k for k in self._kept if k not in self._listed]:
            self._kept[key] = None  # gone while nobody watched
        self._listed = set()
        self._current = True

    def changed(self, kind: str, body: dict[str, Any]) -> None:
        self._seen(body, gone=kind == "DELETED")

    def lost(self) -> None:
        self._current = False

    async def follow(self, kube: KubeClient, namespace: str | None) -> None:
        """Keep the view current for as long as the task runs (``namespace`` None: every namespace; a Secret of
        another namespace is read with a GET each time). The LIST comes in chunks of LIST_CHUNK: a cluster's
        Secrets can be large (a Helm release's up to ~1 MB), and all of them pass through it."""
        self._namespace = namespace
        try:
            await follow.follow(kube, kube.path("", "v1", "secrets", namespace), self, "secrets", LIST_CHUNK)
        finally:
            self._current = False


def _data(body: Any) -> Data:
    data = body.get("data") if isinstance(body, dict) else None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
