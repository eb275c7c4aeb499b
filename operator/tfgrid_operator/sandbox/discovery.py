"""API discovery as kube-apiserver answers it (/api, /apis, /apis/GROUP, /apis/GROUP/VERSION): what kubectl and
the kubernetes client read to map a kind or short name to a resource. Pure: the answer is built from the resource
definitions the emulator serves."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from tfgrid_operator.sandbox.apimachinery import JSON, ResourceDef


def answer(path: str, defs: Iterable[ResourceDef]) -> JSON | None:
    """The discovery document at ``path``, or None when the path is not a discovery path the server knows."""
    groups: dict[str, list[ResourceDef]] = collections.defaultdict(list)
    for d in defs:
        groups[d.group].append(d)
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g, ds) for g, ds in groups.items() if g]}
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) == 2:
        return _resource_list("", parts[1], groups.get("", []))
    if parts[0] == "apis" and len(parts) == 2 and parts[1] in groups:
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1], groups[parts[1]])}
    if parts[0] == "apis" and len(parts) == 3 and parts[1] in groups:
        return _resource_list(parts[1], parts[2], groups[parts[1]])
    return None


def _group(group: str, ds: list[ResourceDef]) -> JSON:
    versions = sorted({d.version for d in ds})
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def _resource_list(group: str, version: str, ds: list[ResourceDef]) -> JSON:
    out = []
    for d in ds:
        if d.version != version:
            continue
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        out.append({"name": d.plural, "singularName": d.singular or d.kind.lower(), "namespaced": d.namespaced,
                    "kind": d.kind, "verbs": verbs, "shortNames": d.short_names, "categories": d.categories})
        if d.status_subresource:
            out.append({"name": f"{d.plural}/status", "singularName": "", "namespaced": d.namespaced,
                        "kind": d.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
            "resources": out}
