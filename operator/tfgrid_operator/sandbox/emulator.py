"""A strict Kubernetes API emulator: kmock's KubernetesEmulator, made to behave like a real API server.

kmock stores bodies verbatim. A real API server does much more, and an operator that only ever met
kmock can ship bugs a cluster would expose. This subclass serves every resource request itself:

* objects as a real server returns them: server-set metadata (uid, creationTimestamp, resourceVersion,
  generation where the kind has one, ``generateName``, a namespace's defaults), ObjectMeta without empty maps
  or lists, the CRD schema's defaults, and ``metadata.managedFields`` kept by the server's field-manager rules
  (sandbox/managedfields.py) — in every reply, list item and watch event alike, so what a client holds in
  memory here is what it would hold against a cluster;
* optimistic concurrency: stale ``resourceVersion`` → 409, failing JSON-patch ``test`` → 422;
* the status subresource: the main endpoint ignores status, ``/status`` ignores everything else;
* ``generation`` bumps only on spec changes; finalizers hold deletion; no new finalizer once deleting;
* CRDs POSTed to it are served; objects are **validated against the CRD's openAPIV3Schema and pruned**
  of undeclared fields, as a real server does — a status field the schema forgets is silently dropped;
* list/watch with label and field selectors, watch resumption from a resourceVersion (410 when too
  old), bookmarks with ``sendInitialEvents`` so kubectl ≥1.35 works;
* every call is recorded as (verb, group, resource, subresource) so tests can derive RBAC from it;
* optional fault injection (HTTP errors, dropped watches) for reliability tests;
* optional **authentication** (``Authn``): client certificates the TLS layer verified against the CA (the
  user is the certificate's CN), bearer tokens, and token files read on every request (so a test can
  rotate one); anything else is 401, as on a cluster. ``serve()`` serves it over HTTPS;
* namespaces terminate as on a cluster: deleting one deletes what is in it (finalizers hold those objects and
  the namespace, which shows ``status.phase: Terminating``); creating anything in it is refused with 403;
* ``x-kubernetes-validations`` (CEL) rules of a CRD are evaluated on every write (sandbox/cel.py): 422 with the
  rule's message, transition rules (``oldSelf``) on updates.

``/version`` answers like Kubernetes 1.30; other non-resource paths (unknown URLs) stay with kmock.

What it does to an object (schemas, defaults, patches, selectors) is apimachinery.py, who owns which field
managedfields.py, the watch streams and their history watch.py, discovery discovery.py, how it is reached (TLS,
authentication) transport.py. This module is the one class that serves requests: its methods share one state
(the store, resourceVersions, finalizers), and a request's semantics read top to bottom here.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import aiohttp
import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering

from tfgrid_operator.sandbox import discovery, managedfields, watch
from tfgrid_operator.sandbox.apimachinery import (
    BUILTINS,
    JSON,
    ApiError,
    Key,
    ResourceDef,
    admit,
    created_metadata,
    in_scope,
    json_patch,
    merge_patch,
    normalized_metadata,
    served_defs,
    timestamp_now,
)
from tfgrid_operator.sandbox.transport import Authn

NAMESPACES = "/v1/namespaces"  # the resource key of core/v1 namespaces
CLUSTER_SCOPE = "-"  # the placeholder namespace of namespace requests (see StrictApiServer.__call__)


class Call(NamedTuple):
    """One API call as RBAC sees it, and who made it (the User-Agent)."""

    verb: str
    group: str
    resource: str
    subresource: str
    agent: str


VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0+tfgrid-emulator", "platform": "linux/amd64"}


def _spec_of(obj: JSON) -> JSON:
    """What a write's generation bump compares: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@attrs.define(kw_only=True)
class StrictApiServer(kmock.KubernetesEmulator):
    defs: dict[str, ResourceDef] = attrs.field(factory=dict)
    store: dict[Key, JSON] = attrs.field(factory=dict)
    calls: list[Call] = attrs.field(factory=list)
    noop_writes: list[tuple[str, str, str]] = attrs.field(factory=list)  # (resource, subresource, name)
    record_requests: bool = True
    fault: Callable[[str, str, str], int | None] | None = None  # (verb, resource key, name) → HTTP status
    require_namespaces: bool = False  # True: as on a cluster, creating in a namespace that does not exist is 404
    cel: bool = True  # evaluate the CRDs' x-kubernetes-validations (off: a cluster whose CRDs predate the rules)
    authn: Authn | None = None  # None: every request is served (plain kmock use, the strictness unit tests)
    users: list[str] = attrs.field(factory=list)  # who made each authenticated request
    _rv: int = 0
    _listed: dict[tuple[str, str | None, str, str], list[tuple[tuple[str, str], JSON]]] = attrs.field(factory=dict)
    _listed_rv: int = -1  # the resourceVersion _listed was sorted at
    watches: watch.Watches = attrs.field(factory=watch.Watches)  # event history and open streams

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for d in BUILTINS:
            self.defs[d.key] = d

    # -- public helpers for tests and the sandbox
    def read(self, resource: str, namespace: str | None, name: str) -> JSON | None:
        obj = self.store.get((self._resolve(resource).key, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def read_all(self, resource: str) -> list[JSON]:
        key = self._resolve(resource).key
        return [copy.deepcopy(o) for (k, _, _), o in self.store.items() if k == key]

    def register_crd(self, crd: JSON) -> None:
        for d in served_defs(crd):
            self.defs[d.key] = d
            self.resources[f"{d.group}/{d.version}/{d.plural}"] = kmock.ResourceInfo(
                kind=d.kind, namespaced=d.namespaced, singular=d.singular, shortnames=set(d.short_names),
                categories=set(d.categories), subresources={"status"} if d.status_subresource else set(),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"})

    def _resolve(self, resource: str) -> ResourceDef:
        if resource in self.defs:
            return self.defs[resource]
        for d in self.defs.values():
            if resource in (d.plural, f"{d.plural}.{d.group}", d.kind):
                return d
        raise KeyError(resource)

    # -- dispatch
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock parses /api/v1/namespaces[/NAME] as a namespace with no resource (and fails on the collection):
        those are served as the cluster-scoped resource they are, under a placeholder namespace kmock can parse."""
        path = raw_request.rel_url.path.rstrip("/")
        parts = path.split("/")[4:]  # after /api/v1/namespaces: [], [NAME] or [NAME, status|finalize]
        if path == "/api/v1/namespaces" or (path.startswith("/api/v1/namespaces/") and (
                len(parts) == 1 or (len(parts) == 2 and parts[1] in ("status", "finalize")))):
            rest = path[len("/api/v1/namespaces"):]
            url = raw_request.rel_url.with_path(f"/api/v1/namespaces/{CLUSTER_SCOPE}/namespaces{rest}")
            raw_request = raw_request.clone(rel_url=url)  # the same connection and body, another path
        return await super().__call__(raw_request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if not self.record_requests and self._requests:
            self._requests.clear()
        path = request.url.path.rstrip("/")
        try:
            if self.authn is not None:
                user = self.authn.user(request._raw_request, request.headers)
                if user is None:
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                self.users.append(user)
            if request.method.value == "GET" and path == "/version":  # what `kubectl version` and our probe read
                return aiohttp.web.json_response(VERSION)
            if request.method.value == "GET" and (path in ("/api", "/apis", "/api/v1") or path.startswith("/apis/")):
                discovered = discovery.answer(path, self.defs.values())
                if discovered is not None:
                    return aiohttp.web.json_response(discovered)
            if request.resource is None or request.resource.plural is None:
                return await super()._handle(request)
            d = self._def_for(request)
            if d is None:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            return await self._serve(request, d)
        except ApiError as err:
            return aiohttp.web.json_response(err.body(), status=err.code)

    def _def_for(self, request: rendering.Request) -> ResourceDef | None:
        r = request.resource
        assert r is not None
        group = r.group or ""
        plural = r.plural
        namespace = request.namespace
        # kmock reads /api/v1/namespaces/NAME as namespace=NAME with no plural; fix it up
        if plural is None and namespace is not None:
            plural, namespace = "namespaces", None
        return self.defs.get(f"{group}/{r.version}/{plural}")

    async def _serve(self, request: rendering.Request, d: ResourceDef) -> aiohttp.web.StreamResponse:
        method = request.method.value
        name = request.name
        namespace = request.namespace if d.namespaced else None
        if request.resource is not None and request.resource.plural is None:
            name, namespace = request.namespace, None  # /api/v1/namespaces/NAME
        sub = request.subresource or ""
        params = request.params
        watch = params.get("watch") in ("true", "1")
        verb = {"GET": "watch" if watch else ("get" if name else "list"), "POST": "create", "PATCH": "patch",
                "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
        self.calls.append(Call(verb, d.group, d.plural, sub, request.headers.get("User-Agent", "")))
        if self.fault is not None and (code := self.fault(verb, d.key, name or "")):
            raise ApiError(code, "InternalError" if code >= 500 else "Conflict", f"injected fault {code}")
        if "protobuf" in request.headers.get("Content-Type", ""):
            raise ApiError(415, "UnsupportedMediaType", "protobuf is not supported by this emulator")
        if verb == "watch":
            return await self._watch(request, d, namespace)
        ctype = request.headers.get("Content-Type", "")
        writer = managedfields.writer(verb, sub, params, request.headers.get("User-Agent", ""), ctype, d.group_version)
        async with self._lock:
            if verb == "list":
                return aiohttp.web.json_response(self._list(d, namespace, params))
            if verb == "get":
                return aiohttp.web.json_response(self._fetch(d, namespace, name))
            body = self._body(request)
            created = verb == "create"
            if verb == "create":
                obj = self._create(d, namespace, body, writer)
            elif verb == "update":
                obj = self._update(d, namespace, name, body, sub, writer, replace=True)
            elif verb == "patch":
                created = (d.key, namespace, name or "") not in self.store  # an apply that creates: 201
                obj = self._patch(d, namespace, name, body, sub, ctype, writer, force=params.get("force") in ("true", "1"))
            elif verb == "delete":
                obj = self._delete(d, namespace, name)
            else:
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")
        return aiohttp.web.json_response(obj, status=201 if created else 200)

    def _track(self, d: ResourceDef, live: JSON | None, new: JSON, writer: managedfields.Writer,
               applied: JSON | None = None, force: bool = False) -> None:
        """Set ``new``'s managedFields after ``writer``'s write (sandbox/managedfields.py), as the server does."""
        entries = managedfields.track(live, new, writer, d.schema, timestamp_now(), applied=applied, force=force)
        if entries:
            new["metadata"]["managedFields"] = entries
        else:
            new["metadata"].pop("managedFields", None)

    def _body(self, request: rendering.Request) -> Any:
        if request.data is not None and not isinstance(request.data, (str, bytes)) and not hasattr(request.data, "getall"):
            return request.data
        try:
            return yaml.safe_load(request.text) if request.text else {}
        except yaml.YAMLError as exc:
            raise ApiError(400, "BadRequest", f"the body is neither JSON nor YAML: {exc}") from exc

    # -- storage operations (called under the lock)
    def _fetch(self, d: ResourceDef, namespace: str | None, name: str | None) -> JSON:
        obj = self.store.get((d.key, namespace, name or ""))
        if obj is None:
            raise ApiError(404, "NotFound", f'{d.plural}.{d.group or "core"} "{name}" not found')
        return obj

    def _list(self, d: ResourceDef, namespace: str | None, params: Any) -> JSON:
        """A LIST, in chunks when it asks for them (``limit``, then each ``continue`` token), as kube-apiserver
        serves them: in key order (namespace, name), every chunk with the first chunk's resourceVersion. Unlike the
        server (which reads etcd at that revision) a later chunk shows the objects after the token's key as they
        are now; a watch from the list's resourceVersion brings whatever changed meanwhile either way."""
        listed = self._sorted(d, namespace, params)
        rv = str(self._rv)
        if params.get("continue"):
            try:
                token = json.loads(base64.b64decode(params["continue"], validate=True))
                rv, after = str(token["rv"]), tuple(token["after"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(400, "BadRequest", "the continue token is not valid") from exc
            listed = listed[bisect.bisect_right(listed, after, key=lambda item: item[0]):]
        meta: JSON = {"resourceVersion": rv}
        try:
            limit = int(params.get("limit") or 0)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"limit is not an integer: {params.get('limit')!r}") from exc
        if 0 < limit < len(listed):
            listed = listed[:limit]
            meta["continue"] = base64.b64encode(json.dumps({"rv": rv, "after": listed[-1][0]}).encode()).decode()
        return {"kind": f"{d.kind}List", "apiVersion": d.group_version, "metadata": meta, "items": [o for _, o in listed]}

    def _sorted(self, d: ResourceDef, namespace: str | None, params: Any) -> list[tuple[tuple[str, str], JSON]]:
        """What a LIST selects, in key order; kept until the next write, so the chunks of one listing sort once, as
        a server reads each chunk from its key on (sorting everything for each chunk made a listing's cost grow with
        the square of the objects: 0.16 s a chunk at 33,000)."""
        if self._listed_rv != self._rv:
            self._listed.clear()
            self._listed_rv = self._rv
        key = (d.key, namespace, params.get("labelSelector") or "", params.get("fieldSelector") or "")
        listed = self._listed.get(key)
        if listed is None:
            listed = self._listed[key] = sorted(
                ((ns or "", name), o) for (k, ns, name), o in self.store.items()
                if k == d.key and (namespace is None or ns == namespace) and in_scope(o, None, params))
        return listed

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, d: ResourceDef, kind: str, obj: JSON) -> None:
        self.watches.emit(d.key, (self._rv, kind, obj))

    def _create(self, d: ResourceDef, namespace: str | None, body: JSON, writer: managedfields.Writer,
                applied: JSON | None = None, force: bool = False) -> JSON:
        if d.key == "apiextensions.k8s.io/v1/customresourcedefinitions":
            self.register_crd(body)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        meta = created_metadata(d, body.get("metadata") or {})
        name = meta["name"]
        if d.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            meta["namespace"] = namespace
        if d.namespaced and self.require_namespaces and (NAMESPACES, None, namespace) not in self.store:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        if d.namespaced and self._terminating(namespace):
            raise ApiError(403, "Forbidden", f'{d.plural} "{name}" is forbidden: unable to create new content in '
                                             f"namespace {namespace} because it is being terminated")
        if (d.key, namespace, name) in self.store:
            raise ApiError(409, "AlreadyExists", f'{d.plural} "{name}" already exists')
        obj = {**body, "apiVersion": d.group_version, "kind": d.kind}
        if d.key == "/v1/secrets":  # the Secret defaulting (so the creator owns it)
            obj.setdefault("type", "Opaque")
        if d.status_subresource:
            obj.pop("status", None)
        obj["metadata"] = meta
        obj = admit(d, obj, name, cel_rules=self.cel)
        self._track(d, None, obj, writer, applied, force)
        if d.key == NAMESPACES:  # the namespace strategy: owned by no one
            obj["spec"] = {"finalizers": ["kubernetes"], **(obj.get("spec") or {})}
            obj["status"] = {"phase": "Active"}
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self.store[(d.key, namespace, name)] = obj
        self._emit(d, "ADDED", obj)
        return obj

    def _update(self, d: ResourceDef, namespace: str | None, name: str | None, body: JSON, sub: str,
                writer: managedfields.Writer, replace: bool, *, current: JSON | None = None,
                applied: JSON | None = None, force: bool = False) -> JSON:
        old = current if current is not None else self._fetch(d, namespace, name)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if replace and not rv:
            raise ApiError(422, "Invalid", f'{d.kind} "{name}" is invalid: metadata.resourceVersion: must be specified')
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {d.plural} "{name}": the object has '
                                            "been modified; please apply your changes to the latest version and try again")
        new = copy.deepcopy(body)
        if sub == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
        elif d.status_subresource:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        meta = dict(new.get("metadata") or {})
        for k in ("uid", "creationTimestamp", "namespace", "name", "generation"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        if "deletionTimestamp" in old["metadata"]:
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise ApiError(422, "Forbidden", f"no new finalizers can be added if the object is being deleted: {sorted(added)}")
        if sub == "status":
            meta = copy.deepcopy(old["metadata"])
        new["metadata"] = normalized_metadata(meta)
        new["apiVersion"], new["kind"] = d.group_version, d.kind
        new = admit(d, new, name or "", old, sub, cel_rules=self.cel)
        if d.generation and _spec_of(new) != _spec_of(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self._track(d, old, new, writer, applied, force)
        if new == old:
            self.noop_writes.append((d.plural, sub, new["metadata"]["name"]))
            return old  # a no-op write does not bump the resourceVersion, as on a real server
        if d.key == "apiextensions.k8s.io/v1/customresourcedefinitions":
            self.register_crd(new)
        new["metadata"]["resourceVersion"] = self._next_rv()
        key = (d.key, namespace, old["metadata"]["name"])
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self.store[key]
            self._emit(d, "DELETED", new)
            self._reap(namespace)
        else:
            self.store[key] = new
            self._emit(d, "MODIFIED", new)
        return new

    def _patch(self, d: ResourceDef, namespace: str | None, name: str | None, body: Any, sub: str, ctype: str,
               writer: managedfields.Writer, force: bool = False) -> JSON:
        """JSON patch, or a merge patch (strategic merge patches and server-side apply as merge patches: no CRD
        here needs their list merging); an apply creates what is missing."""
        current = self.store.get((d.key, namespace, name or ""))
        applied = body if writer.operation == "Apply" else None
        if current is None:
            if applied is not None:
                return self._create(d, namespace, {**body, "metadata": {**body.get("metadata", {}), "name": name}},
                                    writer, applied, force)
            self._fetch(d, namespace, name)
        assert current is not None
        if "json-patch" in ctype:
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            patched = json_patch(current, body)
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        else:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be an object")
            patched = merge_patch(current, body)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            patched["metadata"]["resourceVersion"] = rv or current["metadata"]["resourceVersion"]
        return self._update(d, namespace, name, patched, sub, writer, replace=False, current=current,
                            applied=applied, force=force)

    def _terminating(self, namespace: str | None) -> bool:
        ns = self.store.get((NAMESPACES, None, namespace or ""))
        return ns is not None and bool(ns["metadata"].get("deletionTimestamp"))

    def _delete_namespace(self, name: str) -> JSON:
        """As the namespace controller does: the namespace shows Terminating, everything in it is deleted
        (finalizers hold what has them), and the namespace goes when nothing is left."""
        ns = copy.deepcopy(self._fetch(self.defs[NAMESPACES], None, name))
        if not ns["metadata"].get("deletionTimestamp"):
            ns["metadata"]["deletionTimestamp"] = timestamp_now()
            ns["status"] = {**(ns.get("status") or {}), "phase": "Terminating"}
            ns["metadata"]["resourceVersion"] = self._next_rv()
            self.store[(NAMESPACES, None, name)] = ns
            self._emit(self.defs[NAMESPACES], "MODIFIED", ns)
        for key, obj_ns, obj_name in [k for k in self.store if k[1] == name]:
            self._delete(self.defs[key], obj_ns, obj_name)
        self._reap(name)
        return ns

    def _reap(self, namespace: str | None) -> None:
        """A terminating namespace with nothing left in it is gone."""
        if namespace is None or not self._terminating(namespace) or any(k[1] == namespace for k in self.store):
            return
        ns = self.store.pop((NAMESPACES, None, namespace))
        ns = {**ns, "metadata": {**ns["metadata"], "resourceVersion": self._next_rv()}}
        self._emit(self.defs[NAMESPACES], "DELETED", ns)

    def _delete(self, d: ResourceDef, namespace: str | None, name: str | None) -> JSON:
        if d.key == NAMESPACES:
            return self._delete_namespace(name or "")
        obj = self._fetch(d, namespace, name)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = timestamp_now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                if obj["metadata"].get("generation"):
                    obj["metadata"]["generation"] += 1
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self.store[(d.key, namespace, name or "")] = obj
                self._emit(d, "MODIFIED", obj)
            return obj
        del self.store[(d.key, namespace, name or "")]
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self._next_rv()}}
        self._emit(d, "DELETED", obj)
        self._reap(namespace)
        return {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name, "kind": d.plural}}

    # -- watches
    async def _watch(self, request: rendering.Request, d: ResourceDef, namespace: str | None) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        params = request.params
        async with self._lock:
            since = params.get("resourceVersion")
            if params.get("sendInitialEvents") == "true" or not since or since == "0":
                initial = [(self._rv, "ADDED", o) for (k, ns, _), o in self.store.items()
                           if k == d.key and (namespace is None or ns == namespace)]
            else:
                initial = self.watches.since(d.key, since)
            q = self.watches.subscribe(d.key)
        bookmark = {"kind": d.kind, "apiVersion": d.group_version, "metadata": {
            "resourceVersion": str(self._rv), "annotations": {"k8s.io/initial-events-end": "true"}}}
        try:
            return await watch.stream(raw, initial, q, lambda obj: in_scope(obj, namespace, params),
                                      bookmark if params.get("sendInitialEvents") == "true" else None)
        finally:
            self.watches.unsubscribe(d.key, q)


    def drop_watches(self) -> None:
        """Close every open watch stream, as a load balancer or an API server restart would."""
        self.watches.drop()
