"""Two tenants in two namespaces, and an attacker who has only namespace rights: create, update and delete the grid
kinds and Secrets of its own namespace, and write the status of its own objects."""

from __future__ import annotations

from typing import Any

from e2e.conftest import condition
from e2e.objects import API, paid_by
from ledger_audit import conserved  # noqa: F401
from polling import eventually
from tfgrid_operator.domain import identity

MERGE = {"headers": {"Content-Type": "application/merge-patch+json"}}


def path(ns: str, plural: str, name: str | None = None) -> str:
    return f"/apis/{API}/namespaces/{ns}/{plural}" + (f"/{name}" if name else "")


def get(apiserver: Any, ns: str, plural: str, name: str) -> dict[str, Any] | None:
    return apiserver.read(f"{API}/{plural}", ns, name)


async def create(apiserver: Any, ns: str, *bodies: dict[str, Any]) -> None:
    """Create ``bodies`` in namespace ``ns``, creating the namespace first (the API server requires it, as a
    cluster does)."""
    made = await apiserver.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": ns}})
    assert made.status in (201, 409), await made.text()
    for body in bodies:
        resp = await apiserver.post(path(ns, f"{body['kind'].lower()}s"), json=body)
        assert resp.status == 201, await resp.text()


async def patch(apiserver: Any, ns: str, plural: str, name: str, body: dict[str, Any], sub: str = "") -> None:
    resp = await apiserver.patch(path(ns, plural, name) + sub, json=body, **MERGE)
    assert resp.status == 200, await resp.text()


async def reason(apiserver: Any, ns: str, plural: str, name: str, expected: str) -> dict[str, Any]:
    return await eventually(lambda: condition(get(apiserver, ns, plural, name)).get("reason") == expected
                            and get(apiserver, ns, plural, name), what=f"{ns}/{plural}/{name} {expected}")


def farm(name: str, owner: identity.KeyPair, payout: str, public_ips: int = 2) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Farm", "metadata": {"name": name},
            "spec": {"ownerKey": owner.public_key, "payoutAccount": payout, "publicIPs": public_ips}}


def node(name: str, farm_name: str, key: identity.KeyPair, cru: int = 8,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Node", "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"farm": farm_name, "publicKey": key.public_key, "resources": {"cru": cru, "mru": 32, "sru": 1000},
                     "location": {"country": "BE", "city": "Ghent"}}}


def deployment(name: str, payer: dict[str, Any] | str, cru: int = 2) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Deployment", "metadata": {"name": name},
            "spec": {"resources": {"cru": cru, "mru": 4, "sru": 50}, "publicIPs": 0,
                     "payer": paid_by(payer) if isinstance(payer, str) else payer}}


async def gone_by_hand(apiserver: Any, ns: str, plural: str, name: str) -> None:
    """What an admin (or a tenant) can do: drop the operator's finalizer (`kubectl edit`) and delete, so no delete
    handler runs. The finalizer is dropped in the emulator's store, without a watch event: a running kopf would
    otherwise put it back before the DELETE arrives, and the test would race it."""
    stored = apiserver.store[(apiserver._resolve(f"{API}/{plural}").key, ns, name)]
    stored["metadata"].pop("finalizers", None)
    resp = await apiserver.delete(path(ns, plural, name))
    assert resp.status in (200, 202, 404), await resp.text()
    assert get(apiserver, ns, plural, name) is None

