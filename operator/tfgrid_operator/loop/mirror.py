"""The loop's own view of our objects, kept in ``rt.objects`` as slim bodies from what kopf's LIST + WATCH of each kind
brings, as its stream brings it (``View``, which handlers/kopf_tuning.tap shows kopf's streams to).

It was a kopf event handler per kind: kopf then ran a handler invocation for every watch event of every object
(~12 % of a burst's CPU, issue 17), and the view lagged behind kopf's queue of unstarted objects (the loop kept
refreshing Nodes that were already being deleted). Then a LIST + WATCH of its own per kind, which decoded every
event a second time (and made the API server encode and send each twice); now it reads kopf's streams before kopf
queues their events: as current as the API server, for no decode of its own. It keeps only what the loop reads:
name, namespace, uid, generation, resourceVersion, deletionTimestamp, the spec, and the status without kopf's
bookkeeping (status.kopf, status.lastHandledConfiguration) — never managedFields, labels or annotations (on a real
cluster managedFields alone can be most of an object's size).

A kept copy is small (issue 17: the view was ~3.6 KB an object, ~40 MB at grid size, in a peak it is part of): the
spec, which the loop reads only to move a deployment, to check a node's attestation and to parse a proposal, is
kept as its JSON (``spec_of`` decodes it); the short strings of the status and of the namespace are interned, as a
grid's objects repeat the same few (condition types and reasons, states, node and farm names, timestamps of one
second): ~2.2 KB an object.

It sees what kopf watches: every namespace, or the one ``settings.watch_namespace`` names (`run -n`).
"""

from __future__ import annotations

import sys
from typing import Any

from tfgrid_operator import runtime
from tfgrid_operator.kube import jsonwire

PLURALS = ("farms", "nodes", "deployments", "proposals")
KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
KOPF_STATUS = ("kopf", "lastHandledConfiguration")  # kopf's bookkeeping (handlers/startup.py), never the loop's


INTERNED_METADATA = ("namespace", "deletionTimestamp")  # shared by many objects (one deletion: one time)
SHORT = 40  # characters: a status string up to this long is interned


def slim(body: dict[str, Any]) -> dict[str, Any]:
    """What the loop keeps of an object: its spec as JSON (``spec_of``)."""
    meta = body.get("metadata") or {}
    kept = {k: _kept_metadata(k, meta[k]) for k in KEPT_METADATA if k in meta}
    return {"metadata": kept, "spec": packed_spec(body.get("spec")), "status": slim_status(body.get("status") or {})}


def _kept_metadata(key: str, value: Any) -> Any:
    """A metadata value as the view keeps it: interned where many objects share it (INTERNED_METADATA)."""
    return sys.intern(value) if key in INTERNED_METADATA and isinstance(value, str) else value


def packed_spec(spec: Any) -> bytes:
    """A spec as the view keeps it: its JSON, keys sorted (equal specs pack alike)."""
    return jsonwire.dumps_sorted(spec or {})


def spec_of(body: dict[str, Any]) -> dict[str, Any]:
    """The spec of an object the view keeps (a fresh dict: the caller's to change)."""
    spec = jsonwire.loads(body["spec"])
    return spec if isinstance(spec, dict) else {}


def slim_status(status: dict[str, Any]) -> dict[str, Any]:
    """The status the view keeps: without kopf's bookkeeping, its short strings interned."""
    return {k: _interned(v) for k, v in _visible(status).items()}


def _visible(status: dict[str, Any]) -> dict[str, Any]:
    """The status without kopf's bookkeeping."""
    return {k: v for k, v in status.items() if k not in KOPF_STATUS}


def _interned(value: Any) -> Any:
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= SHORT else value
    if isinstance(value, dict):
        return {k: _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    return value


def remember(rt: runtime.Runtime, plural: str, body: dict[str, Any]) -> None:
    meta = body.get("metadata") or {}
    key = (plural, sys.intern(str(meta.get("namespace") or "")), meta.get("name") or "")  # the view's key: interned too
    kept = rt.objects.get(key)
    if kept is not None and kept["metadata"].get("uid") == meta.get("uid") and \
            kept["spec"] == packed_spec(body.get("spec")) and kept["status"] == _visible(body.get("status") or {}):
        # only the metadata moved (a deletion's MODIFIED event, a finalizer, kopf's annotations): the kept copy's
        # spec and status stand, and the event's decoded ones are freed with it — a namespace deleted whole no
        # longer makes a new copy of every object while kopf's queue holds its events (issue 17)
        _update_metadata(kept["metadata"], meta)
    else:
        rt.objects[key] = slim(body)


def _update_metadata(kept: dict[str, Any], meta: dict[str, Any]) -> None:
    for k in KEPT_METADATA:
        if k not in meta:
            kept.pop(k, None)
        elif kept.get(k) != meta[k]:
            kept[k] = _kept_metadata(k, meta[k])


def forget(rt: runtime.Runtime, plural: str, namespace: str, name: str) -> None:
    rt.objects.pop((plural, namespace, name), None)
    if plural == "deployments":  # gone: through our finalizer, or past it (the sweep closes what is left)
        rt.request_sweep(f"{namespace}/{name}")


class View:
    """One kind's part of ``rt.objects``, kept from what a LIST + WATCH of it brings (kopf's own streams:
    handlers/kopf_tuning.tap; or ``kube.follow``)."""

    def __init__(self, rt: runtime.Runtime, plural: str) -> None:
        self.rt, self.plural, self.seen = rt, plural, set[tuple[str, str, str]]()

    def listing(self) -> None:
        self.seen = set()
        self.rt.unfollowed.discard(self.plural)  # followed again: what it lists and then watches is current

    def listed(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        self.seen.add((self.plural, meta.get("namespace") or "", meta.get("name") or ""))
        remember(self.rt, self.plural, body)

    def listed_all(self) -> None:
        for key in [k for k in self.rt.objects if k[0] == self.plural and k not in self.seen]:
            forget(self.rt, *key)  # gone while nobody watched
        self.seen = set()

    def changed(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "DELETED":
            meta = body.get("metadata") or {}
            forget(self.rt, self.plural, meta.get("namespace") or "", meta.get("name") or "")
        else:
            remember(self.rt, self.plural, body)

    def lost(self) -> None:
        """What the view holds stands until the next LIST replaces it; until that begins, the loop leaves it alone
        (``rt.unfollowed``: a view frozen while kopf pauses its stream would be nudged and moved on forever)."""
        self.rt.unfollowed.add(self.plural)
