"""The CustomResourceDefinitions, rendered from the api models: crds/*.yaml and the chart's copy are written from
here (scripts/generate_crds.py; a test compares the bytes), and the sandbox registers them from here.

The openAPIV3Schema of a spec or status is the model's JSON schema (pydantic), made structural: references
inlined, ``X | None`` as X, no titles, no ``additionalProperties`` (CRDs allow it only without properties),
integers ``int64``, a default only where the field is marked ``crd(default=True)``, and the CEL rules and
``x-kubernetes-*`` markers the models declare. The keys are ordered as kubectl and a reader expect them.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from tfgrid_operator.api import KINDS
from tfgrid_operator.api.common import COMMON_COLUMNS, DEFAULTED, GROUP, VERSION, Column, Kind, KindStatus

S = dict[str, Any]


class _Structural(GenerateJsonSchema):
    """pydantic's JSON schema with ``X | None`` as X: a status field is absent (or removed by a null in a merge
    patch), never stored as null, so the CRD declares no null."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])


# the order of a schema's keys in the rendered YAML, by its type; keys not named here come last, as they are
_ORDER = {
    "object": ("type", "x-kubernetes-preserve-unknown-fields", "properties", "description", "x-kubernetes-validations",
               "required"),
    "array": ("type", "maxItems", "description", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "items"),
    "integer": ("type", "format", "default", "description", "minimum", "maximum", "x-kubernetes-validations"),
    "string": ("type", "format", "enum", "pattern", "minLength", "maxLength", "default", "description",
               "x-kubernetes-validations"),
    "boolean": ("type", "default", "description"),
}
_DROPPED = ("title", "additionalProperties", "$defs")


def _structural(node: S, defs: dict[str, S]) -> S:
    ref = node.get("$ref")
    if ref is None and len(node.get("allOf", ())) == 1:  # older pydantic: a reference with siblings
        ref = node["allOf"][0]["$ref"]
    if ref is not None:  # the referenced model's schema, its field's own keys (description, markers) over it
        node = {**defs[ref.rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k not in ("$ref", "allOf")}}
    if "anyOf" in node or "oneOf" in node:
        raise TypeError(f"a union is not a structural schema: {node}")
    out: S = {}
    for key, value in node.items():
        if key in _DROPPED or key == DEFAULTED or (key == "default" and not node.get(DEFAULTED)):
            continue
        if key == "properties":
            value = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            value = _structural(value, defs)
        elif key == "x-kubernetes-validations":  # pydantic sorts the keys of json_schema_extra: rule first again
            value = [{"rule": v["rule"], **v} for v in value]
        out[key] = value
    if out.get("type") == "integer":
        out["format"] = "int64"
    order = _ORDER.get(out.get("type", ""), ())
    return {**{k: out[k] for k in order if k in out}, **{k: v for k, v in out.items() if k not in order}}


def schema_of(model: type[BaseModel]) -> S:
    """A model's openAPIV3Schema: structural, every property described as its Field says."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_Structural)
    return _structural(raw, raw.get("$defs", {}))


def _status_schema(model: type[KindStatus]) -> S:
    """The kind's own status fields first, then those every kind has (conditions, observedGeneration, kopf's)."""
    schema = schema_of(model)
    common = [f.alias or n for n, f in KindStatus.model_fields.items()]
    props = schema["properties"]
    schema["properties"] = {**{k: v for k, v in props.items() if k not in common}, **{k: props[k] for k in common}}
    return schema


def _column(c: Column) -> S:
    out: S = {"name": c.name, "type": c.type, "jsonPath": c.json_path}
    if c.description is not None:
        out["description"] = c.description
    if c.priority is not None:
        out["priority"] = c.priority
    return out


def crd(k: Kind) -> S:
    """The CustomResourceDefinition of a kind: namespaced, one served and stored version with a status
    subresource, its printer columns, short names and the ``grid`` category."""
    root: S = {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": schema_of(k.spec), "status": _status_schema(k.status),
    }, "description": k.description, "required": ["spec"]}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{k.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": k.kind, "plural": k.plural, "singular": k.kind.lower(), "shortNames": list(k.short_names),
                      "categories": ["grid"], "listKind": f"{k.kind}List"},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [_column(c) for c in (*k.columns, *COMMON_COLUMNS)],
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


ALL = {k.plural: crd(k) for k in KINDS}


# kopf's own peering resource (kopf docs, "Peering"): standby replicas find each other through one
# ClusterKopfPeering object. Needed only when more than one replica runs (PostgreSQL ledger).
PEERING = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {
        "scope": "Cluster", "group": "kopf.dev",
        "names": {"kind": "ClusterKopfPeering", "plural": "clusterkopfpeerings", "singular": "clusterkopfpeering"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }}}],
    },
}


def render() -> dict[str, str]:
    """The files of crds/ (and the chart's crds/): file name → YAML text."""
    docs = {f"{GROUP}_{plural}.yaml": doc for plural, doc in ALL.items()}
    docs["kopf.dev_clusterkopfpeerings.yaml"] = PEERING
    return {name: yaml.safe_dump(doc, sort_keys=False, width=120) for name, doc in docs.items()}
