"""A signature has exactly one text: a re-spelled one (the unused bits of base64's last character) is refused, so a
revoked grant or a counted vote cannot come back under another spelling (issue 13)."""

from __future__ import annotations

import base64

import pytest

from tfgrid_operator.domain import identity

KEY = identity.KeyPair(bytes(range(32)))
PAYLOAD = {"account": "alice", "namespace": "team-a"}


def respellings(text: str) -> list[str]:
    """Other texts that loose base64 decoding reads as the same bytes."""
    raw, last = base64.b64decode(text), len(text.rstrip("=")) - 1  # the last character carrying data
    out = []
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/":
        other = text[:last] + c + text[last + 1:]
        if other != text and base64.b64decode(other) == raw:
            out.append(other)
    return out


def test_the_canonical_signature_verifies_and_no_respelling_does():
    signature = KEY.sign(identity.VOTE, PAYLOAD)
    identity.verify(KEY.public_key, identity.VOTE, PAYLOAD, signature)
    others = respellings(signature)
    assert others  # an 88-character ed25519 signature has re-spellings
    for other in others:
        with pytest.raises(identity.BadSignature):
            identity.verify(KEY.public_key, identity.VOTE, PAYLOAD, other)


def test_a_respelled_public_key_is_not_a_public_key():
    assert identity.is_public_key(KEY.public_key)
    others = respellings(KEY.public_key)
    assert others  # a 32-byte key's last base64 character has two unused bits
    for other in others:
        assert not identity.is_public_key(other)


def test_a_remembered_verification_answers_only_for_the_same_key_message_and_signature():
    """verify remembers what verified (a namespace's grant is checked on every reconcile): the memory is keyed by
    the key, the message and the signature, so a changed payload, purpose, key or signature is verified anew."""
    other = identity.KeyPair(bytes(range(1, 33)))
    purpose = identity.VOTE
    signature = KEY.sign(purpose, PAYLOAD)
    for _ in range(2):  # the second time from memory
        identity.verify(KEY.public_key, purpose, PAYLOAD, signature)
    refused = [
        (KEY.public_key, purpose, {**PAYLOAD, "namespace": "team-b"}, signature),
        (KEY.public_key, identity.VETO, PAYLOAD, signature),
        (other.public_key, purpose, PAYLOAD, signature),
        (KEY.public_key, purpose, PAYLOAD, other.sign(purpose, PAYLOAD)),
    ]
    for _ in range(2):  # a refusal is never remembered as a success
        for args in refused:
            with pytest.raises(identity.BadSignature):
                identity.verify(*args)
    assert identity._verifies.cache_info().maxsize == identity.VERIFIED_MEMORY  # bounded
