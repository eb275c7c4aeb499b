"""The sandbox's manifests: loaded from a folder in sync-wave order, re-keyed with fresh keys, and the
accounts that pay for them."""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
from typing import Any

import yaml

from tfgrid_operator import api, ballot, runtime
from tfgrid_operator.domain import identity
from tfgrid_operator.kube.client import ApiError

KINDS = ("Namespace", "Secret", "Farm", "Node", "Deployment", "Proposal")  # sync-wave order
GRID_KINDS = ("Farm", "Node", "Deployment", "Proposal")


class SandboxError(Exception):
    """The sandbox cannot run (no examples, a broken example, a used ledger): the message says what to fix."""


@dataclasses.dataclass
class Manifest:
    file: pathlib.Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.doc["metadata"].get("namespace") or "default")


def load_examples(folder: pathlib.Path) -> list[Manifest]:
    if not folder.is_dir():
        raise SandboxError(f"no examples folder at {folder}: run from the project root or pass --examples")
    found: list[Manifest] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SandboxError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        for d in docs:
            if not d:
                continue
            if not isinstance(d, dict) or not isinstance(d.get("metadata"), dict) or not d["metadata"].get("name"):
                raise SandboxError(f"{path}: every manifest needs kind and metadata.name")
            if d.get("kind") in KINDS:
                found.append(Manifest(path, d))
    if not any(m.kind == "Node" for m in found):
        raise SandboxError(f"{folder} has no Node: nothing to run")
    wave = {k: i for i, k in enumerate(KINDS)}
    return sorted(found, key=lambda m: wave[m.kind])  # stable: files and documents keep their order in a wave


def rekey(manifests: list[Manifest], council: identity.KeyPair) -> dict[str, identity.KeyPair]:
    """Fresh keys for every farm owner, node and twin Secret; proposals re-signed by the sandbox council.
    Keys are "farm/NAME", "node/NAME" and "twin/NAMESPACE/SECRET"."""
    keys: dict[str, identity.KeyPair] = {}
    for m in manifests:
        spec = m.doc.get("spec") or {}
        if m.kind == "Farm":
            spec["ownerKey"] = keys.setdefault(f"farm/{m.name}", identity.KeyPair.generate()).public_key
        elif m.kind == "Node":
            spec["publicKey"] = keys.setdefault(f"node/{m.name}", identity.KeyPair.generate()).public_key
        elif m.kind == "Secret":
            twin = keys.setdefault(f"twin/{m.namespace}/{m.name}", identity.KeyPair.generate())
            for field in list(m.doc.get("data") or {}):
                m.doc["data"][field] = base64.b64encode(twin.to_text().encode()).decode()
        elif m.kind == "Proposal":
            spec.update(votes=[], vetoes=[])
            try:  # as `council sign` does: a fresh nonce, so the signature opens this proposal once
                m.doc["spec"] = ballot.sign_proposal(council, spec, f"{m.namespace}/{m.name}")
            except api.InvalidSpec as exc:
                raise SandboxError(f"{m.file}: Proposal {m.name}: {exc}") from None
    return keys


def payers(manifests: list[Manifest], keys: dict[str, identity.KeyPair]) -> dict[str, str]:
    """account → its twin's public key ("" for a payer named by account): the accounts the sandbox funds.
    A Secret-held twin's account is named after the Secret, without a "-twin" suffix."""
    out: dict[str, str] = {}
    for m in manifests:
        payer = (m.doc.get("spec") or {}).get("payer") or {} if m.kind == "Deployment" else {}
        if payer.get("account"):
            out.setdefault(str(payer["account"]), "")
        elif (payer.get("secretRef") or {}).get("name"):
            secret = str(payer["secretRef"]["name"])
            twin = keys.get(f"twin/{m.namespace}/{secret}")
            if twin is None:
                raise SandboxError(f"{m.file}: Deployment {m.name} pays with secret {secret!r}, which no manifest "
                                   f"in namespace {m.namespace!r} defines")
            out[secret.removesuffix("-twin")] = twin.public_key
    return out


def api_message(err: ApiError) -> str:
    """The API server's own message (a 422 names the field), not its JSON envelope."""
    _, _, body = str(err).partition(": ")
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return str(err)


def collection_path(m: Manifest) -> str:
    if m.kind == "Secret":
        return f"/api/v1/namespaces/{m.namespace}/secrets"
    return f"/apis/{runtime.GROUP}/{runtime.VERSION}/namespaces/{m.namespace}/{m.kind.lower()}s"
