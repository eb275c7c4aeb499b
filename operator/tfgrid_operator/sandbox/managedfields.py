"""``metadata.managedFields`` as kube-apiserver's field manager keeps them. Pure functions; emulator.py calls
``track`` on every create, update and patch.

Why the emulator carries them: a real server returns every object with one entry per (manager, operation,
apiVersion, subresource) and the set of fields that manager owns, which is often a third of the object's bytes.
An operator's memory measured against a server that omits them predicts a cluster wrongly (issue 17: half the RSS).

What it follows (k8s.io/apiserver's fieldmanager and sigs.k8s.io/structured-merge-diff):

* the manager is ``?fieldManager=`` or else the User-Agent up to its first ``/`` (non-printable characters
  dropped, at most 128 bytes; "unknown" when that leaves nothing);
* an Update (POST, PUT, PATCH) compares the object before and after the write: every field added or changed
  leaves the other managers' sets and joins the writer's, every field removed leaves every set, an entry whose
  set becomes empty goes, and only an entry that gained fields gets a new ``time``; a write that changes nothing
  changes no entry (so a no-op write stays a no-op);
* the field set is FieldsV1: ``f:NAME`` for a field, ``k:{"type":"Ready"}`` for an item of a list the schema
  declares ``x-kubernetes-list-type: map`` (keyed by its ``x-kubernetes-list-map-keys``), ``v:VALUE`` for an
  item of a ``set`` list, lists without a list type (and ``x-kubernetes-map-type: atomic`` maps) as one leaf,
  ``.`` where a map or item itself is owned because the write created it; metadata's own schema is the server's
  (labels and annotations maps, finalizers a set, ownerReferences keyed by uid), never the CRD's; apiVersion, kind
  and the server-set metadata (name, namespace, uid, resourceVersion, generation, creationTimestamp …) are
  owned by no one;
* a client may write ``metadata.managedFields`` on the main resource: an empty list (or a list of one empty
  entry) resets them (the writer then owns only what that write changed), a valid list replaces them, an
  absent, null or malformed one keeps the server's; on a subresource the request's are always ignored;
* at most 10 Update entries: the oldest are merged into one ``ancient-changes`` entry;
* Apply (server-side apply): the applier's set becomes exactly the applied configuration's fields; a field
  another manager owns whose value the apply changes is a 409 conflict unless ``force=true``, which moves it.
  Not modelled: an apply removing the fields its manager applied before and now leaves out.

The comparison runs on the objects as stored (after pruning and the status subresource's rules), which is
what the server's reset-fields filter amounts to for the writes seen here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from tfgrid_operator.sandbox.apimachinery import JSON, ApiError

Path = tuple[str, ...]  # path elements as FieldsV1 writes them: "f:spec", 'k:{"type":"Ready"}', 'v:"x"'
MAX_UPDATE_MANAGERS = 10  # fieldmanager.DefaultMaxUpdateManagers
ANCIENT = "ancient-changes"
MAX_MANAGER_BYTES = 128  # validation.FieldManagerMaxLength
_MISSING: Any = object()

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA_SCHEMA: JSON = {"type": "object", "properties": {
    "labels": _STRING_MAP,
    "annotations": _STRING_MAP,
    "finalizers": {"type": "array", "x-kubernetes-list-type": "set"},
    "ownerReferences": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"]},
}}
STRIPPED: frozenset[Path] = frozenset({("f:apiVersion",), ("f:kind",), ("f:metadata",)} | {
    ("f:metadata", f"f:{name}") for name in ("name", "namespace", "creationTimestamp", "selfLink", "uid",
                                             "clusterName", "generation", "managedFields", "resourceVersion")})


class Writer(NamedTuple):
    """Who writes, as a managedFields entry is keyed: (manager, operation, apiVersion, subresource)."""

    manager: str
    operation: str  # "Update" or "Apply"
    api_version: str
    subresource: str = ""


class Owned(NamedTuple):
    fields: frozenset[Path]
    time: str | None


Managed = dict[Writer, Owned]


# ---------------------------------------------------------------- who writes
def manager_name(field_manager: str | None, user_agent: str) -> str:
    """``?fieldManager=`` if given (validated as the server does: 422), else the User-Agent's prefix."""
    if field_manager:
        if len(field_manager.encode()) > MAX_MANAGER_BYTES:
            raise ApiError(422, "Invalid", f"fieldManager: Too long: may not be more than {MAX_MANAGER_BYTES} bytes")
        if not field_manager.isprintable():
            raise ApiError(422, "Invalid", f"fieldManager: Invalid value: {field_manager!r}: "
                                           "must only contain printable characters")
        return field_manager
    out = ""
    for ch in user_agent.split("/")[0]:
        if not ch.isprintable():
            continue
        if len((out + ch).encode()) > MAX_MANAGER_BYTES:
            break
        out += ch
    return out or "unknown"


def writer(verb: str, sub: str, params: Any, agent: str, ctype: str, api_version: str) -> Writer:
    """Whose write a request is: Apply for a server-side apply (which must name its manager: 400), else Update."""
    apply = verb == "patch" and "apply-patch" in ctype
    if apply and not params.get("fieldManager"):
        raise ApiError(400, "BadRequest", "PATCH requests with apply content type need fieldManager")
    manager = manager_name(params.get("fieldManager"), agent) if verb in ("create", "update", "patch") else ""
    return Writer(manager, "Apply" if apply else "Update", api_version, sub)


# ---------------------------------------------------------------- comparing two objects under a schema
class Comparison(NamedTuple):
    added: set[Path]
    modified: set[Path]
    removed: set[Path]


def root_schema(schema: JSON | None) -> JSON:
    """The schema the comparison walks: the CRD's (none for a built-in kind: every map field by field, every
    list whole, as the server deduces for an unknown type) with the server's own for metadata."""
    base: JSON = schema if schema is not None else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {**base, "properties": {**base.get("properties", {}), "metadata": METADATA_SCHEMA}}


def _shape(schema: JSON | None, value: Any) -> str:
    """How a value is tracked: "map" field by field, "listmap" by key, "set" by value, or "leaf" whole."""
    if schema is None or (schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema
                          and "additionalProperties" not in schema and "type" not in schema):
        return "map" if isinstance(value, dict) else "leaf"
    if isinstance(value, dict) and schema.get("x-kubernetes-map-type") != "atomic" and (
            schema.get("type") == "object" or "properties" in schema or "additionalProperties" in schema
            or schema.get("x-kubernetes-preserve-unknown-fields")):
        return "map"
    if isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map" and schema.get("x-kubernetes-list-map-keys") and all(isinstance(i, dict) for i in value):
            return "listmap"
        if list_type == "set" and not any(isinstance(i, (dict, list)) for i in value):
            return "set"
    return "leaf"


def _child_schema(schema: JSON | None, name: str) -> JSON | None:
    if schema is None:
        return None
    props = schema.get("properties") or {}
    if name in props:
        child: JSON = props[name]
        return child
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _children(shape: str, schema: JSON | None, value: Any) -> dict[str, tuple[Any, JSON | None]]:
    """A tracked node's children by path element, each with its schema."""
    if value is _MISSING:
        return {}
    if shape == "map":
        return {f"f:{k}": (v, _child_schema(schema, k)) for k, v in value.items()}
    assert schema is not None
    item = schema.get("items") if isinstance(schema.get("items"), dict) else None
    if shape == "listmap":
        keys = schema["x-kubernetes-list-map-keys"]
        return {"k:" + _compact({k: i[k] for k in keys if k in i}): (i, item) for i in value}
    return {f"v:{_compact(i)}": (i, item) for i in value}  # set


def compare(lhs: Any, rhs: Any, schema: JSON | None, path: Path = (), out: Comparison | None = None) -> Comparison:
    """What a write changed, as structured-merge-diff's comparison: leaves added, modified or removed, and a map,
    list or item added or removed as a whole also itself (its path: the ``.`` of FieldsV1)."""
    out = out if out is not None else Comparison(set(), set(), set())
    if lhs is not _MISSING and rhs is not _MISSING and type(lhs) is type(rhs) and lhs == rhs:
        return out  # nothing changed below: one comparison in C instead of a walk (a status write's spec, say)
    shape = _shape(schema, rhs if rhs is not _MISSING else lhs)
    if shape != "leaf" and lhs is not _MISSING and rhs is not _MISSING and _shape(schema, lhs) != shape:
        shape = "leaf"  # a map that became a string, say: compared whole
    if shape == "leaf":
        if lhs is _MISSING:
            out.added.add(path)
        elif rhs is _MISSING:
            out.removed.add(path)
        elif lhs != rhs or type(lhs) is not type(rhs):
            out.modified.add(path)
        return out
    left, right = _children(shape, schema, lhs), _children(shape, schema, rhs)
    for pe in left.keys() | right.keys():
        lv, ls = left.get(pe, (_MISSING, None))
        rv, rs = right.get(pe, (_MISSING, None))
        compare(lv, rv, rs if pe in right else ls, (*path, pe), out)
    if lhs is _MISSING:
        out.added.add(path)
    elif rhs is _MISSING:
        out.removed.add(path)
    return out


def fields_of(obj: JSON, schema: JSON | None) -> frozenset[Path]:
    """Every field of an object (what an applied configuration sets), less what no one owns."""
    return frozenset(compare({}, obj, root_schema(schema)).added - STRIPPED - {()})


# ---------------------------------------------------------------- FieldsV1
def encode_fields(paths: Iterable[Path]) -> JSON:
    members = set(paths)
    tree: JSON = {}
    for p in members:
        node = tree
        for pe in p:
            node = node.setdefault(pe, {})

    def render(node: JSON, path: Path) -> JSON:
        out: JSON = {".": {}} if node and path in members else {}
        for pe in sorted(node):
            out[pe] = render(node[pe], (*path, pe))
        return out

    return render(tree, ())


def decode_fields(tree: Any, path: Path = ()) -> set[Path]:
    if not isinstance(tree, dict):
        raise ValueError("fieldsV1 is a map")
    if not tree:
        return {path}
    out: set[Path] = set()
    for pe, sub in tree.items():
        if pe == ".":
            out.add(path)
        elif pe[:2] in ("f:", "k:", "v:", "i:"):
            out |= decode_fields(sub, (*path, pe))
        else:
            raise ValueError(f"unknown path element {pe!r}")
    return out


def decode(entries: Any) -> Managed | None:
    """The entries of ``metadata.managedFields``; None when they cannot be read (the server then keeps its own)."""
    if not isinstance(entries, list):
        return None
    out: Managed = {}
    try:
        for e in entries:
            if e.get("fieldsType") != "FieldsV1" or e.get("operation") not in ("Apply", "Update"):
                return None
            writer = Writer(str(e.get("manager") or ""), e["operation"], str(e.get("apiVersion") or ""),
                            str(e.get("subresource") or ""))
            fields = decode_fields(e.get("fieldsV1") or {}) if e.get("fieldsV1") else set()
            previous = out.get(writer)
            merged = fields | set(previous.fields) if previous else fields
            out[writer] = Owned(frozenset(merged), e.get("time"))
    except (AttributeError, TypeError, ValueError):
        return None
    return out


def encode(managed: Managed) -> list[JSON]:
    """The entries in the server's order: Apply before Update, then oldest first, then by manager."""
    def order(item: tuple[Writer, Owned]) -> tuple[str, str, str, str, str]:
        w, o = item
        return (w.operation, o.time or "", w.manager, w.api_version, w.subresource)

    out = []
    for w, o in sorted(managed.items(), key=order):
        entry: JSON = {"manager": w.manager, "operation": w.operation, "apiVersion": w.api_version}
        if o.time is not None:
            entry["time"] = o.time
        entry |= {"fieldsType": "FieldsV1", "fieldsV1": encode_fields(o.fields)}
        if w.subresource:
            entry["subresource"] = w.subresource
        out.append(entry)
    return out


# ---------------------------------------------------------------- one write
def _is_reset(entries: Any) -> bool:
    return isinstance(entries, list) and (entries == [] or entries == [{}])


def _starting_point(live_entries: Any, request_entries: Any, subresource: str) -> Managed:
    if subresource:
        return decode(live_entries) or {}
    if _is_reset(request_entries):
        return {}
    requested = decode(request_entries)
    return requested if requested else (decode(live_entries) or {})


def _without_managed_fields(obj: JSON | None) -> JSON:
    if obj is None:
        return {}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def _cap(managed: Managed) -> Managed:
    updaters = sorted((w for w in managed if w.operation == "Update"),
                      key=lambda w: (managed[w].time or "", w.manager))
    excess = len(updaters) - MAX_UPDATE_MANAGERS
    if excess <= 0:
        return managed
    out = dict(managed)
    oldest = updaters[: excess + 1]  # merged into one bucket entry: excess fewer entries
    bucket = Writer(ANCIENT, "Update", oldest[-1].api_version)
    fields: frozenset[Path] = frozenset().union(*(out.pop(w).fields for w in oldest))
    previous = out.pop(bucket, None)
    out[bucket] = Owned(fields | (previous.fields if previous else frozenset()), managed[oldest[-1]].time)
    return out


def track(live: JSON | None, new: JSON, writer: Writer, schema: JSON | None, now: str, *,
          applied: JSON | None = None, force: bool = False) -> list[JSON]:
    """The ``managedFields`` of ``new`` after ``writer`` turned ``live`` (None: a create) into it; ``new`` carries
    what the request sent for them (if anything). ``applied``: the configuration of a server-side apply."""
    live_entries = (live or {}).get("metadata", {}).get("managedFields")
    managed = _starting_point(live_entries, (new.get("metadata") or {}).get("managedFields"), writer.subresource)
    change = compare(_without_managed_fields(live), _without_managed_fields(new), root_schema(schema))
    touched = change.added | change.modified
    if applied is not None:
        wanted = fields_of(applied, schema)
        conflicts = {w: o.fields & touched & wanted for w, o in managed.items() if w != writer}
        conflicts = {w: c for w, c in conflicts.items() if c}
        if conflicts and not force:
            lines = [f'conflict with "{w.manager}"' + (f" with subresource {w.subresource!r}" if w.subresource else "")
                     + f": .{'.'.join(p[2:] for p in sorted(c)[0])}" for w, c in conflicts.items()]
            raise ApiError(409, "Conflict", f"Apply failed with {len(lines)} conflict(s): " + "; ".join(lines))
    out: Managed = {}
    for w, o in managed.items():
        if w == writer and applied is not None:
            continue
        kept = o.fields - touched - change.removed
        if kept:
            out[w] = Owned(kept, o.time)
    if applied is not None:
        out[writer] = Owned(wanted, now)
    else:
        gained = touched - STRIPPED - {()}
        if gained:
            previous = out.get(writer)
            out[writer] = Owned(frozenset(gained) | (previous.fields if previous else frozenset()), now)
    return encode(_cap(out))
