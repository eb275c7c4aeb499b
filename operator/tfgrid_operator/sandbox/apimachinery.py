"""What a real API server does to an object, apart from serving it: the resource definitions it knows, the metadata
it sets on a create, admission (schema pruning, defaulting and validation as kube-apiserver applies OpenAPI v3, and
the CEL rules), merge and JSON patches, label and field selectors. No I/O (a uid, a generated name and the time are
all they draw on); the server (emulator.py) applies them on every request.
"""

from __future__ import annotations

import copy
import datetime
import random
import re
import uuid
from typing import Any

import attrs
import jsonschema

from tfgrid_operator.sandbox import cel

JSON = dict[str, Any]
Key = tuple[str, str | None, str]  # (resource key, namespace, name)


@attrs.define
class ResourceDef:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = attrs.field(factory=list)
    categories: list[str] = attrs.field(factory=list)
    status_subresource: bool = False
    schema: JSON | None = None
    generation: bool = False  # metadata.generation: every custom resource; of the built-ins, only those with a spec

    @property
    def key(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTINS = [
    ResourceDef("", "v1", "namespaces", "Namespace", False, "namespace", ["ns"]),
    ResourceDef("", "v1", "events", "Event", True, "event", ["ev"]),
    ResourceDef("", "v1", "secrets", "Secret", True, "secret"),
    ResourceDef("", "v1", "configmaps", "ConfigMap", True, "configmap", ["cm"]),
    ResourceDef("", "v1", "services", "Service", True, "service", ["svc"]),
    ResourceDef("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ["sa"]),
    ResourceDef("", "v1", "pods", "Pod", True, "pod", ["po"]),
    ResourceDef("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, "persistentvolumeclaim", ["pvc"]),
    ResourceDef("events.k8s.io", "v1", "events", "Event", True, "event", ["ev"]),
    ResourceDef("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
    ResourceDef("apps", "v1", "deployments", "Deployment", True, "deployment", ["deploy"], generation=True),
    ResourceDef("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, "clusterrole"),
    ResourceDef("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, "clusterrolebinding"),
    ResourceDef("rbac.authorization.k8s.io", "v1", "roles", "Role", True, "role"),
    ResourceDef("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, "rolebinding"),
    ResourceDef("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
                "customresourcedefinition", ["crd", "crds"], generation=True),
    ResourceDef("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, "poddisruptionbudget", ["pdb"],
                generation=True),
]


def served_defs(crd: JSON) -> list[ResourceDef]:
    """The resources a CustomResourceDefinition serves: one per served version."""
    spec, names = crd["spec"], crd["spec"]["names"]
    return [ResourceDef(spec["group"], v["name"], names["plural"], names["kind"], spec["scope"] == "Namespaced",
                        names.get("singular", ""), list(names.get("shortNames", [])), list(names.get("categories", [])),
                        "status" in v.get("subresources", {}), v.get("schema", {}).get("openAPIV3Schema"),
                        generation=True)
            for v in spec["versions"] if v.get("served", True)]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> JSON:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
GENERATED_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apiserver names.SimpleNameGenerator


def created_metadata(d: ResourceDef, sent: JSON) -> JSON:
    """The metadata of an object being created, before its namespace and resourceVersion: the name (or one made from
    ``generateName``, as the server makes it: 5 characters from an alphabet without vowels or look-alikes),
    checked (422), and the server's own fields (uid, creationTimestamp, generation where the kind has one, a
    namespace's name label), whatever the client sent for them."""
    meta = dict(sent)
    if not meta.get("name"):
        if not meta.get("generateName"):
            raise ApiError(422, "Invalid", f"{d.kind}: metadata.name: Required value")
        meta["name"] = meta["generateName"] + "".join(random.choices(GENERATED_NAME_ALPHABET, k=5))
    name = meta["name"]
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        raise ApiError(422, "Invalid", f'{d.kind} "{name}" is invalid: metadata.name: Invalid value: a lowercase '
                                       "RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                                       "'-' or '.', and must start and end with an alphanumeric character")
    for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
        meta.pop(k, None)
    meta.update(uid=str(uuid.uuid4()), creationTimestamp=timestamp_now(), **({"generation": 1} if d.generation else {}))
    if d.key == "/v1/namespaces":  # the namespace defaulting (so the creator owns it)
        meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": name}
    return normalized_metadata(meta)


def normalized_metadata(meta: JSON) -> JSON:
    """ObjectMeta as the server stores it: a null, empty map or empty list is not kept (``omitempty``), so an
    object whose last label is removed has no ``labels``. ``managedFields`` is left to the field manager: an empty
    list sent by a client means "reset them" (sandbox/managedfields.py)."""
    return {k: v for k, v in meta.items() if k == "managedFields" or (v is not None and v != [] and v != {})}


def timestamp_now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- schema work (pure)
def prune(obj: Any, schema: JSON | None) -> Any:
    """Drop fields the structural schema does not declare, as the API server does."""
    if schema is None or schema.get("x-kubernetes-preserve-unknown-fields"):
        return obj
    if isinstance(obj, dict) and schema.get("type", "object") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and extra is None:
            return obj if schema.get("type") is None else {}
        out = {}
        for k, v in obj.items():
            if props is not None and k in props:
                out[k] = prune(v, props[k])
            elif isinstance(extra, dict):
                out[k] = prune(v, extra)
            elif extra is True:
                out[k] = v
        return out
    if isinstance(obj, list) and "items" in schema:
        return [prune(v, schema["items"]) for v in obj]
    return obj


def apply_defaults(obj: Any, schema: JSON | None) -> Any:
    """Structural defaulting, as the API server does to every custom resource it is sent (and so before the field
    manager sees it: the writer owns the defaults): a field the schema gives a ``default`` is set where it is
    absent (or null and not ``nullable``) in every object present, array items and map values included."""
    if schema is None:
        return obj
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for k, sub in props.items():
            if "default" in sub and (k not in obj or (obj[k] is None and not sub.get("nullable"))):
                obj[k] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for k, v in obj.items():
            apply_defaults(v, props.get(k, extra if isinstance(extra, dict) else None))
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for v in obj:
            apply_defaults(v, schema["items"])
    return obj


def _jsonschema(schema: JSON) -> JSON:
    """OpenAPI v3 → JSON Schema: drop x-kubernetes-* and turn ``nullable`` into a null type."""
    out: JSON = {k: _jsonschema_value(v) for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in schema:
        out["properties"] = {k: _jsonschema(v) for k, v in schema["properties"].items()}
    return out


def _jsonschema_value(value: Any) -> Any:
    """A schema's member (a JSON value: a sub-schema, a list such as ``required`` or ``allOf``, a scalar)."""
    if isinstance(value, dict):
        return _jsonschema(value)
    if isinstance(value, list):
        return [_jsonschema_value(v) for v in value]
    return value


_validators: dict[int, tuple[JSON, jsonschema.Draft7Validator]] = {}


def _validator(schema: JSON) -> jsonschema.Draft7Validator:
    """One compiled validator per registered schema (keyed by identity, holding the schema so the id stays its)."""
    cached = _validators.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    root_props = {k: v for k, v in schema.get("properties", {}).items() if k not in ("apiVersion", "kind", "metadata")}
    required = [k for k in schema.get("required", []) if k not in ("apiVersion", "kind", "metadata")]
    root = {**schema, "properties": root_props, "required": required}
    validator = jsonschema.Draft7Validator(_jsonschema(root), format_checker=jsonschema.FormatChecker())
    _validators[id(schema)] = (schema, validator)
    return validator


def validate(obj: JSON, schema: JSON, kind: str, name: str) -> None:
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    validator = _validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path) or "<root>"
        problems.append(f"{path}: Invalid value: {err.message}")
    if problems:
        raise ApiError(422, "Invalid", f"{kind} \"{name}\" is invalid: " + "; ".join(problems[:10]))


def admit(d: ResourceDef, obj: JSON, name: str, old: JSON | None = None, sub: str = "", *,
          cel_rules: bool = True) -> JSON:
    """What the API server makes of a write to a custom resource: pruned, defaulted, validated against the CRD's
    schema, then its CEL rules (not on the status subresource: rules here are on spec, which a status write
    cannot change). 422 when refused. A kind without a schema (a built-in) is taken as it is."""
    if d.schema is None:
        return obj
    admitted: JSON = apply_defaults(prune(obj, d.schema), d.schema)  # an object's schema keeps an object
    admitted["metadata"] = obj.get("metadata", {})
    validate(admitted, d.schema, d.kind, name)
    if cel_rules and sub != "status":
        body = {k: v for k, v in admitted.items() if k != "metadata"}
        before = {k: v for k, v in old.items() if k != "metadata"} if old is not None else None
        problems = cel.violations(d.schema, body, before)
        if problems:
            raise ApiError(422, "Invalid", f'{d.kind}.{d.group} "{name}" is invalid: ' + "; ".join(problems[:10]))
    return admitted


# ---------------------------------------------------------------- patches (pure)
def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(doc: JSON, ops: list[JSON]) -> JSON:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op["path"])
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ApiError(422, "Invalid", f"the test operation on {op['path']} failed")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            try:
                del parent[int(last) if isinstance(parent, list) else last]
            except (KeyError, IndexError) as exc:
                raise ApiError(422, "Invalid", f"cannot remove {op['path']}: no such path") from exc
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON-patch op {kind!r}")
    return doc


# ---------------------------------------------------------------- selectors (pure)
def _get_path(obj: JSON, dotted: str) -> Any:
    cur: Any = obj
    for p in dotted.split("."):
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur


def matches_labels(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in re.split(r",(?![^()]*\))", selector))):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            values = {v.strip() for v in m.group(3).split(",")}
            if (labels.get(m.group(1)) in values) != (m.group(2) == "in"):
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def in_scope(obj: JSON, namespace: str | None, params: Any) -> bool:
    """Whether a list or watch (in ``namespace``, None: all) with these query parameters selects ``obj``."""
    meta = obj.get("metadata", {})
    if namespace is not None and meta.get("namespace") != namespace:
        return False
    if params.get("labelSelector") and not matches_labels(meta.get("labels") or {}, params["labelSelector"]):
        return False
    return not (params.get("fieldSelector") and not matches_fields(obj, params["fieldSelector"]))


def matches_fields(obj: JSON, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negated = "!=" in term
        k, v = term.split("!=", 1) if negated else term.replace("==", "=").split("=", 1)
        actual = _get_path(obj, k.strip())
        equal = (str(actual) if actual is not None else "") == v.strip()
        if equal == negated:
            return False
    return True
