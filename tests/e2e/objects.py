"""Builders for the grid's objects in e2e tests, and reading them back from the emulator."""

from __future__ import annotations

import hashlib
from typing import Any

from e2e.conftest import condition
from polling import eventually
from tfgrid_operator import api, ballot
from tfgrid_operator.domain import identity

API = "grid.threefold.io/v1alpha1"
NS = f"/apis/{API}/namespaces/default"
OWNER = identity.KeyPair.generate()


class PatchFaults:
    """An emulator fault (``apiserver.fault = …``): the next ``times`` PATCHes of ``plural`` answer ``status``;
    ``left`` says how many are still to come."""

    def __init__(self, plural: str, status: int, times: int) -> None:
        self.plural, self.status, self.left = plural, status, times

    def __call__(self, verb: str, key: str, name: str) -> int | None:
        if verb == "patch" and key.endswith(f"/{self.plural}") and self.left > 0:
            self.left -= 1
            return self.status
        return None


def farm(name: str = "farm1", *, public_ips: int = 8, certified: bool = False, owner: str | None = None) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Farm", "metadata": {"name": name},
            "spec": {"ownerKey": owner or OWNER.public_key, "payoutAccount": f"{name}-payout", "publicIPs": public_ips,
                     "certified": certified}}


def node(name: str, farm_name: str = "farm1", *, key: identity.KeyPair | None = None, cru: int = 8,
         country: str = "BE", city: str = "Ghent", certified: bool = False) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Node", "metadata": {"name": name},
            "spec": {"farm": farm_name, "publicKey": (key or identity.KeyPair.generate()).public_key,
                     "resources": {"cru": cru, "mru": 32, "sru": 1000}, "certified": certified,
                     "location": {"country": country, "city": city}}}


def deployment(name: str, *, payer: str = "alice", cru: int = 2, public_ips: int = 1, **placement: Any) -> dict[str, Any]:
    """Paid by the twin account ``payer`` through the grant ``twin_account`` gave the namespace."""
    return {"apiVersion": API, "kind": "Deployment", "metadata": {"name": name},
            "spec": {"resources": {"cru": cru, "mru": 4, "sru": 50}, "publicIPs": public_ips,
                     "payer": paid_by(payer), "placement": placement}}


def twin(account: str) -> identity.KeyPair:
    """The test twin key of an account (the same on every import of this module)."""
    return identity.KeyPair(hashlib.sha256(f"tfgrid-test-twin:{account}".encode()).digest())


def paid_by(account: str) -> dict[str, Any]:
    return {"account": account, "grantRef": {"name": f"{account.replace('_', '-')}-grant"}}


async def twin_account(ledger: Any, apiserver: Any, account: str, namespace: str = "default") -> None:
    """A twin account with its key on the ledger, and its grant (signed by that key) for ``namespace`` as the Secret
    `tfgrid-operator grant` prints: what a tenant does before its Deployments may name the account as payer."""
    from e2e.conftest import START
    from tfgrid_operator.domain import names
    from tfgrid_operator.handlers import tenancy

    await ledger.ensure_account(name=account, public_key=twin(account).public_key)
    made = await apiserver.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": namespace}})
    assert made.status in (201, 409), await made.text()  # the API server requires the namespace, as a cluster does
    grant = names.Grant(account, namespace, START + names.MAX_GRANT_S).signed(twin(account))
    resp = await apiserver.post(f"/api/v1/namespaces/{namespace}/secrets",
                                json=tenancy.grant_secret(grant, paid_by(account)["grantRef"]["name"]))
    assert resp.status in (201, 409), await resp.text()


def obj(apiserver: Any, plural: str, name: str) -> dict[str, Any] | None:
    return apiserver.read(f"{API}/{plural}", "default", name)


async def create(apiserver: Any, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        resp = await apiserver.post(f"{NS}/{body['kind'].lower()}s", json=body)
        assert resp.status == 201, await resp.text()


async def ready(apiserver: Any, plural: str, *names: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    await eventually(lambda: all(condition(obj(apiserver, plural, n))["status"] == "True" for n in names),
                     timeout=timeout, what=f"{plural} {names} Ready")
    return [obj(apiserver, plural, n) for n in names]  # type: ignore[misc]


async def with_reason(apiserver: Any, plural: str, name: str, reason: str) -> dict[str, Any]:
    return await eventually(lambda: condition(obj(apiserver, plural, name)).get("reason") == reason
                            and obj(apiserver, plural, name), what=f"{plural}/{name} {reason}")


def events(apiserver: Any, reason: str, name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in apiserver.read_all("events") if e.get("reason") == reason
            and (name is None or e.get("involvedObject", {}).get("name") == name)]


def proposal(name: str, signer: identity.KeyPair, action: dict[str, Any], *, hours: int = 24, threshold: int = 5,
             votes: list[dict[str, Any]] | None = None, nonce: str | None = None,
             namespace: str = "default") -> dict[str, Any]:
    """A Proposal signed by ``signer`` over its namespaced name with a fresh nonce (or ``nonce``), as
    `tfgrid-operator council sign` does."""
    spec = {"title": f"proposal {name}", "action": action, "durationHours": hours, "threshold": threshold,
            "votes": votes or []}
    try:
        spec = ballot.sign_proposal(signer, spec, f"{namespace}/{name}", nonce=nonce)
    except api.InvalidSpec:  # unsignable
        spec.update(councilKey=signer.public_key, councilSignature="-")
    return {"apiVersion": API, "kind": "Proposal", "metadata": {"name": name}, "spec": spec}


async def held_a_period(ledger: Any, nodes: dict[str, identity.KeyPair]) -> None:
    """The nodes' agents report through minting period 100 (the one START begins; their capacity attested at
    START) and it is minted: from then on each farm weighs that capacity in votes (§5). The operator's clock
    stays where it is: the reports are the agents' word, the mint the ledger's."""
    import ledger_setup
    from e2e.conftest import PERIOD, START

    await ledger_setup.held_a_period(ledger, nodes, period=START // PERIOD)
