"""Every spec and status property of the grid CRDs has a description, so `kubectl explain` never prints
`<no description>`. Walks the committed crds/*.yaml (what users apply), recursively, array items included;
kopf's own x-kubernetes-preserve-unknown-fields object is the one exception: its children are kopf's."""

import pathlib
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
from tfgrid_operator.api import crds  # noqa: E402


def undescribed(schema: dict[str, Any], path: str) -> list[str]:
    """The paths under ``schema`` (itself included) whose description is missing or blank."""
    out = [] if str(schema.get("description") or "").strip() else [path]
    if schema.get("x-kubernetes-preserve-unknown-fields") and path.endswith(".kopf"):
        return out  # kopf's handler progress: its children are kopf's, not ours
    for name, sub in (schema.get("properties") or {}).items():
        out.extend(undescribed(sub, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        out.extend(undescribed(schema["items"], f"{path}[]"))
    return out


def _root(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"{crds.GROUP}_{plural}.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("plural", sorted(crds.ALL))
def test_every_spec_and_status_property_is_described(plural):
    root = _root(plural)
    assert str(root.get("description") or "").strip(), f"{plural}: the CRD itself has no description"
    missing = [p for part in ("spec", "status") for p in undescribed(root["properties"][part], part)]
    assert not missing, f"{plural}: properties without a description: {', '.join(missing)}"


@pytest.mark.parametrize("plural", sorted(crds.ALL))
def test_the_committed_file_is_the_generators(plural):
    """The walk above reads the committed files; they are the generator's (so its descriptions are what ships)."""
    assert _root(plural) == crds.ALL[plural]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_kopf_status_is_the_only_exception_and_is_described_itself():
    for plural in crds.ALL:
        kopf = _root(plural)["properties"]["status"]["properties"]["kopf"]
        assert kopf.get("x-kubernetes-preserve-unknown-fields") is True and kopf.get("description")


def test_the_walk_finds_a_missing_description_anywhere():
    schema = {"type": "object", "description": "d", "properties": {
        "a": {"type": "integer"},
        "b": {"type": "object", "description": "d", "properties": {"c": {"type": "string", "description": " "}}},
        "d": {"type": "array", "description": "d", "items": {"type": "object", "properties": {
            "e": {"type": "boolean", "description": "d"}, "f": {"type": "boolean"}}}},
        "kopf": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": "d",
                 "properties": {"g": {"type": "string"}}},
        "other": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": "d",
                  "properties": {"h": {"type": "string"}}},
    }}
    assert undescribed(schema, "status") == ["status.a", "status.b.c", "status.d[]", "status.d[].f", "status.other.h"]
