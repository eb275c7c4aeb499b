"""Signed votes and vetoes, added to a Proposal's spec through the API (what `tfgrid-operator vote` does),
and council-signed node certifications, put on the Node as an annotation (`tfgrid-operator council certify`).

The same entries can arrive by a Git pull request instead; the operator verifies both the same way.
"""

from __future__ import annotations

import datetime
import secrets
import time
from typing import Any

from tfgrid_operator import runtime
from tfgrid_operator.domain import attestation, identity, voting
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import ApiError, KubeClient


def sign_proposal(key: identity.KeyPair, spec: dict[str, Any], proposal: str,
                  nonce: str | None = None) -> dict[str, Any]:
    """The Proposal spec signed by a council member for ``proposal`` (namespace/name), as `council sign` does: its
    key, a fresh nonce (128 random bits, unless given) and the signature over the spec (voting.PROPOSAL_V2).
    Raises api.InvalidSpec for a spec that is no proposal."""
    from tfgrid_operator import api

    signed = {**spec, "councilKey": key.public_key, "councilSignature": "-",
              "nonce": nonce if nonce is not None else secrets.token_hex(16)}
    parsed = api.parse(api.ProposalSpec, signed)
    signed["councilSignature"] = key.sign(voting.PROPOSAL_V2, parsed.signed_payload(proposal))
    return signed


def signed_vote(key: identity.KeyPair, *, proposal: str, proposal_id: int, action: dict[str, Any], threshold: int,
                end_ts: int, farm: str, approve: bool, seq: int | None = None, nonce: str = "") -> dict[str, Any]:
    """§5: the farm owner's vote, bound to the proposal (issue 13, invariant 5): its namespace/name, ledger id and
    council nonce, the action, threshold and deadline it opened with, and a sequence number (default: the time in
    ms), so a vote counts only on this proposal and only while it is the farm's newest."""
    seq = int(time.time() * 1000) if seq is None else seq
    digest = voting.proposal_digest(proposal=proposal, proposal_id=proposal_id, action=action, threshold=threshold,
                                    end_ts=end_ts, nonce=nonce)
    sig = key.sign(identity.VOTE_V2, voting.vote_payload(proposal=proposal, digest=digest, farm=farm, approve=approve,
                                                         seq=seq))
    return {"farm": farm, "approve": approve, "seq": seq, "signature": sig}


def vote_on(body: dict[str, Any], key: identity.KeyPair, *, farm: str, approve: bool,
            seq: int | None = None) -> dict[str, Any]:
    """A signed vote on the Proposal object ``body`` as the operator opened it (status.proposalId and deadline,
    the spec's action, threshold and nonce). A status or nonce someone else wrote only makes the vote fail to
    verify: the ledger checks it against what it opened."""
    from tfgrid_operator import api

    meta, status = body["metadata"], body.get("status") or {}
    if "proposalId" not in status or "deadline" not in status:
        raise ValueError(f"proposal {meta['namespace']}/{meta['name']} is not open for votes yet")
    spec = api.parse(api.ProposalSpec, body["spec"])
    end_ts = int(datetime.datetime.strptime(status["deadline"], "%Y-%m-%dT%H:%M:%SZ")
                 .replace(tzinfo=datetime.UTC).timestamp())
    return signed_vote(key, proposal=f"{meta['namespace']}/{meta['name']}", proposal_id=int(status["proposalId"]),
                       action=spec.action.ledger_action(), threshold=spec.threshold, end_ts=end_ts, farm=farm,
                       approve=approve, seq=seq, nonce=spec.nonce or "")


async def verdict(kube: KubeClient, *, namespace: str, name: str, farm: str, seq: int, timeout_s: float,
                  poll_s: float = 0.25) -> dict[str, str]:
    """The operator's verdict on a farm's vote: counted (status.counted has it, with its sequence number) or
    rejected (status.rejectedVotes names the farm). No verdict within ``timeout_s`` is an error too."""
    import asyncio

    path = kube.path(runtime.GROUP, runtime.VERSION, "proposals", namespace, name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        status = (await kube.request("GET", path)).get("status") or {}
        if any(c.get("farm") == farm and c.get("seq") == seq for c in status.get("counted") or []):
            return {"reason": "", "message": f"counted: proposal {namespace}/{name} is {status.get('state')}, ayes "
                                             f"{status.get('ayesWeight')} vs nays {status.get('naysWeight')}"}
        for r in status.get("rejectedVotes") or []:
            if r.get("farm") == farm and r.get("seq") == seq:
                return {"reason": str(r.get("reason"))}
        if loop.time() >= deadline:
            return {"reason": f"no verdict from the operator within {timeout_s:g} s (is it running?)"}
        await asyncio.sleep(poll_s)


def veto_payload(*, proposal: str, proposal_id: int, nonce: str = "") -> dict[str, Any]:
    """What a veto signs: the proposal's name and its ledger identity — its id and the nonce of the council signature
    that opened it (the ledger opens one proposal per nonce, ever) — so a veto never counts on another proposal of
    the same name: not a withdrawn one's on a later one, nor one signed against a forged status.proposalId on the
    proposal that later gets that id (§5). A proposal opened before nonces (none recorded) signs as it did then."""
    payload: dict[str, Any] = {"proposal": proposal, "proposalId": proposal_id}
    if nonce:
        payload["nonce"] = nonce
    return payload


def signed_veto(key: identity.KeyPair, *, proposal: str, proposal_id: int, nonce: str = "") -> dict[str, Any]:
    payload = veto_payload(proposal=proposal, proposal_id=proposal_id, nonce=nonce)
    return {"memberKey": key.public_key, "signature": key.sign(identity.VETO, payload)}


def veto_on(body: dict[str, Any], key: identity.KeyPair) -> dict[str, Any]:
    """A signed veto of the Proposal object ``body`` as the operator opened it: status.proposalId and spec.nonce
    (fixed once proposed). A status or nonce someone else wrote only makes the veto fail to verify on this
    proposal; it never makes it count on another, whose nonce is another council signature's."""
    meta, status = body["metadata"], body.get("status") or {}
    pid = status.get("proposalId")
    if not isinstance(pid, int):
        raise ValueError(f"proposal {meta['namespace']}/{meta['name']} is not open on the ledger yet")
    nonce = (body.get("spec") or {}).get("nonce") or ""
    return signed_veto(key, proposal=f"{meta['namespace']}/{meta['name']}", proposal_id=pid, nonce=str(nonce))


async def add_entry(kube: KubeClient, *, namespace: str, name: str, field: str, entry: dict[str, Any],
                    same: str, attempts: int = 5) -> dict[str, Any]:
    """Put ``entry`` into spec.<field>, replacing the entry with the same ``same`` key (a switched vote).
    Optimistic concurrency: the patch carries the resourceVersion read, and a 409 reads again."""
    path = kube.path(runtime.GROUP, runtime.VERSION, "proposals", namespace, name)
    for _ in range(attempts):
        current = await kube.request("GET", path)
        entries = [e for e in (current.get("spec") or {}).get(field) or [] if e.get(same) != entry[same]]
        body = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": {field: [*entries, entry]}}
        try:
            result: dict[str, Any] = await kube.request("PATCH", path, body, "application/merge-patch+json")
            return result
        except ApiError as err:
            if err.status != 409:
                raise
    raise ApiError(409, f"proposal {namespace}/{name} kept changing; gave up after {attempts} attempts")


CERTIFICATION_ANNOTATION = f"certification.{runtime.PREFIX}/council"  # not under kopf's own prefix, which its diffs ignore


def signed_certification(key: identity.KeyPair, *, node: str, node_id: int, certified: bool, ts: int,
                         resources: Resources | None = None) -> dict[str, Any]:
    """A council member's (de)certification of one ledger node (§1.2): bound to its ledger id and a time, and a
    certification to the capacity the member certifies (``resources``, required then): the ledger applies it only
    while the node attests exactly that capacity."""
    if certified and resources is None:
        raise ValueError(f"a certification of node {node} names the capacity it certifies")
    payload = attestation.certification_payload(node=node, node_id=node_id, certified=certified, ts=ts,
                                    resources=resources if certified else None)
    return {**payload, "memberKey": key.public_key, "signature": key.sign(identity.CERTIFICATION, payload)}


def certification_on(body: dict[str, Any], key: identity.KeyPair, *, certified: bool, ts: int) -> dict[str, Any]:
    """A signed (de)certification of the Node object ``body``: its ledger id (status.nodeId) and, to certify, the
    capacity its agent attested (status.attested). A status someone else wrote only makes it fail on the ledger,
    which checks both against what it holds; it never certifies a capacity the node does not attest."""
    meta, status = body["metadata"], body.get("status") or {}
    node_id, attested = status.get("nodeId"), status.get("attested") or {}
    if not isinstance(node_id, int):
        raise ValueError(f"node {meta['namespace']}/{meta['name']} is not registered on the ledger yet")
    resources = None
    if certified:
        try:
            resources = Resources(*(int(attested[f]) for f in ("cru", "mru", "sru", "hru")))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"node {meta['namespace']}/{meta['name']} has no attested capacity to certify yet "
                             f"(status.attested)") from None
    return signed_certification(key, node=meta["name"], node_id=node_id, certified=certified, ts=ts,
                                resources=resources)


async def certify(kube: KubeClient, *, namespace: str, node: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Put the signed certification on the Node (an annotation: the operator never writes it, the spec stays the
    farmer's); the operator verifies it against the council's keys."""
    import json

    path = kube.path(runtime.GROUP, runtime.VERSION, "nodes", namespace, node)
    body = {"metadata": {"annotations": {CERTIFICATION_ANNOTATION: json.dumps(entry, sort_keys=True)}}}
    result: dict[str, Any] = await kube.request("PATCH", path, body, "application/merge-patch+json")
    return result
