"""Identities: ed25519 keys with pynacl; signing and verifying uptime reports, votes and vetoes.

Every signed message is a canonical JSON document prefixed with a purpose tag, so a signature made
for one purpose can never be replayed as another.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from typing import Any

import nacl.exceptions
import nacl.signing

UPTIME = "tfgrid-uptime-v1"
VOTE = "tfgrid-vote-v1"
VETO = "tfgrid-veto-v1"
PROPOSAL = "tfgrid-proposal-v1"
CAPACITY = "tfgrid-capacity-v1"  # a node agent's measured resources, signed by the node key (as Zero-OS reports them)
CERTIFICATION = "tfgrid-certification-v1"  # a council member certifying (or not) one ledger node (§1.3)
VOTE_V2 = "tfgrid-vote-v2"  # a vote bound to the proposal's ledger id and council-signed payload, with a sequence
VERIFIED_MEMORY = 4096  # signatures whose verification is remembered (verify)


class BadSignature(ValueError):
    """A signature, key or message that does not verify."""


def canonical(purpose: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{purpose}:{body}".encode()


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPair:
    seed: bytes  # 32 bytes; secret

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_text(cls, text: str) -> KeyPair:
        """A key file holds the base64 seed (one line)."""
        try:
            seed = base64.b64decode(text.strip(), validate=True)
        except ValueError as exc:
            raise BadSignature("the key is not base64") from exc
        if len(seed) != 32:
            raise BadSignature("an ed25519 seed is 32 bytes")
        return cls(seed)

    def to_text(self) -> str:
        return base64.b64encode(self.seed).decode()

    @property
    def public_key(self) -> str:
        return base64.b64encode(bytes(nacl.signing.SigningKey(self.seed).verify_key)).decode()

    def sign(self, purpose: str, payload: dict[str, Any]) -> str:
        signed = nacl.signing.SigningKey(self.seed).sign(canonical(purpose, payload))
        return base64.b64encode(signed.signature).decode()

    def __repr__(self) -> str:  # never print the seed
        return f"KeyPair(public_key={self.public_key!r})"


def _canonical_b64(text: str) -> bytes:
    """Decode base64 only in its one canonical spelling: loose decoding lets 2-3 texts (the unused bits of the last
    character) mean the same bytes, so a revoked or counted signature could come back under another spelling."""
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def verify(public_key: str, purpose: str, payload: dict[str, Any], signature: str) -> None:
    """Raise BadSignature unless ``signature`` is ``public_key``'s signature over the payload (both canonical
    base64, so one signature has exactly one text)."""
    if not _verifies(public_key, canonical(purpose, payload), signature):
        raise BadSignature(f"signature does not verify for key {public_key[:12]}…")


@functools.lru_cache(maxsize=VERIFIED_MEMORY)
def _verifies(public_key: str, message: bytes, signature: str) -> bool:
    """Whether the signature verifies: a pure function of its text arguments, so an answer is remembered (every
    Deployment of a namespace proves its payer with the same grant on each reconcile: one ed25519 verification,
    not one a reconcile). Bounded: the least recently used answers are forgotten first."""
    try:
        key = nacl.signing.VerifyKey(_canonical_b64(public_key))
        key.verify(message, _canonical_b64(signature))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def is_public_key(text: str) -> bool:
    try:
        return len(_canonical_b64(text)) == 32
    except (ValueError, TypeError):
        return False
