"""Signed votes and vetoes, added to a Proposal's spec through the API (what `tfgrid-operator vote` does).

The same entries can arrive by a Git pull request instead; the operator verifies both the same way.
"""

from __future__ import annotations

from typing import Any

from tfgrid_operator import runtime
from tfgrid_operator.domain import identity
from tfgrid_operator.kube.client import ApiError, KubeClient


def signed_vote(key: identity.KeyPair, *, proposal: str, farm: str, approve: bool) -> dict[str, Any]:
    """§5: the farm owner's signature over (proposal, farm, choice); ``proposal`` is "namespace/name"."""
    sig = key.sign(identity.VOTE, {"proposal": proposal, "farm": farm, "approve": approve})
    return {"farm": farm, "approve": approve, "signature": sig}


def signed_veto(key: identity.KeyPair, *, proposal: str) -> dict[str, Any]:
    return {"memberKey": key.public_key, "signature": key.sign(identity.VETO, {"proposal": proposal})}


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
