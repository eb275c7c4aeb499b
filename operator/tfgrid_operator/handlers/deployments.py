"""Deployment: place on a node and open a contract atomically, resize in place, final bill on delete."""

from __future__ import annotations

import base64
from typing import Any

import kopf

from tfgrid_operator import conditions, crd_models, periodic, runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain import identity
from tfgrid_operator.handlers import reporting, tracking
from tfgrid_operator.kube.client import ApiError

G, V = runtime.GROUP, runtime.VERSION


async def payer_account(spec: crd_models.DeploymentSpec, namespace: str) -> str:
    """The twin account: named in the spec, or the one whose key the referenced Secret holds.
    The key is read only here, only to derive its public key; no message ever carries it."""
    if spec.payer.account:
        return spec.payer.account
    ref = spec.payer.secret_ref
    assert ref is not None
    rt = runtime.get()
    try:
        secret = await rt.kube.request("GET", rt.kube.path("", "v1", "secrets", namespace, ref.name))
    except ApiError as err:
        if err.status == 404:
            raise errors.NotFound(f"secret {ref.name!r} does not exist") from None
        raise errors.Unavailable(f"cannot read secret {ref.name!r}: HTTP {err.status}") from None
    value = (secret.get("data") or {}).get(ref.key)
    if value is None:
        raise errors.NotFound(f"secret {ref.name!r} has no key {ref.key!r}")
    try:
        key = identity.KeyPair.from_text(base64.b64decode(value).decode(errors="replace"))
    except (ValueError, identity.BadSignature):
        raise errors.NotFound(f"secret {ref.name!r} key {ref.key!r} is not a base64 ed25519 twin key") from None
    return (await rt.ledger.account_by_key(public_key=key.public_key)).name


@reporting.reconciler("deployments", "deployment")
async def reconcile_deployment(body: Any, spec: Any, name: str, namespace: str, patch: kopf.Patch, **_: Any) -> None:
    rt = runtime.get()
    key = f"{namespace}/{name}"
    s = reporting.parse_spec(crd_models.DeploymentSpec, body, spec, patch)
    if s is None:
        return
    now = rt.clock.now()
    try:
        current = await rt.ledger.observe_contract(key=key)
        # a Deleted contract this object never recorded belongs to an earlier object of the same name
        earlier = current is not None and current.state == "Deleted" and \
            (body.get("status") or {}).get("contractId") != current.id
        if current is None or earlier:
            payer = await payer_account(s, namespace)
            current = await rt.ledger.open_contract(key=key, payer=payer, request=s.request(), now=now)
            if current.created:
                kopf.info(body, reason=str(Reason.PLACED),
                          message=f"Deployment {key} placed on node {current.node}, contract {current.id}")
        elif current.state != "Deleted" and (current.resources != s.capacity or current.public_ips != s.public_ips) \
                and not current.dedicated:
            current = await rt.ledger.resize_contract(key=key, resources=s.capacity, public_ips=s.public_ips, now=now)
            kopf.info(body, reason=str(Reason.UPDATED), message=f"Deployment {key} resized on node {current.node}")
    except errors.NoCapacity as err:
        message = f"{err.constraint}: {err.message}"
        reason = Reason.RESIZE_BLOCKED if current is not None and current.state != "Deleted" else Reason.UNSCHEDULABLE
        fields = {"reserved": current.resources.as_dict(), "contractId": current.id, "node": current.node} \
            if current is not None and current.state != "Deleted" else {}
        return reporting.waiting(body, patch, reason=reason, message=message, fields=fields)
    except errors.NotFound as err:
        return reporting.waiting(body, patch, reason=Reason.PAYER_NOT_FOUND, message=err.message, synced=False)
    except errors.LedgerError as err:
        return reporting.ledger_failure(body, patch, err, ready_reason=Reason.CREATING)
    policy, _ = await rt.ledger.policies()
    status = dict(body.get("status") or {})
    reporting.apply(body, patch, periodic.deployment_status(
        current, status, body["metadata"].get("generation", 1), conditions.timestamp(now), policy,
        rt.ledger.config.tft_price))  # type: ignore[attr-defined]


@kopf.on.delete(G, V, "deployments")
@reporting.metered("deployment")
async def delete_deployment(body: Any, name: str, namespace: str, patch: kopf.Patch, **_: Any) -> None:
    rt = runtime.get()
    key = f"{namespace}/{name}"
    await reporting.close_on_ledger(
        body, patch, rt.ledger.close_contract(key=key, now=rt.clock.now(), reason="CanceledByUser"),
        message=lambda closed: closed and f"Contract {closed.id} closed with a final bill; "
                                          f"billed total {closed.billed_total} units")


tracking.track("deployments")
