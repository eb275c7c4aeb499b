"""Deployment: prove the payer, place on a node and open a contract atomically, resize in place, final bill on delete.

The contract belongs to this object (its uid): a later Deployment of the same name never inherits it. The payer
is proven on every reconcile (design.md "Trust model"): the twin's key in a Secret of this namespace
(``payer.secretRef``), or ``payer.account`` with a grant the twin signed for this namespace, held in a Secret
that ``payer.grantRef`` names — the Secret as the operator's watch of Secrets shows it (kube/secrets.py). A changed
payer re-binds the contract from that second on.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import kopf

from tfgrid_operator import api, conditions, runtime
from tfgrid_operator.backend import errors, records
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain import identity
from tfgrid_operator.handlers import blocked, reporting, tenancy
from tfgrid_operator.kube.client import ApiError
from tfgrid_operator.loop import status as projections

G, V = runtime.GROUP, runtime.VERSION
T = TypeVar("T")
LIVE = ("Created", "GracePeriod")


async def _secret_value(rt: runtime.Runtime, namespace: str, ref: api.SecretRef | api.GrantRef) -> str:
    try:  # as the watch of Secrets shows it (kube/secrets.py): one GET the first time, then its events
        data = await rt.secrets.data(rt.kube, namespace, ref.name)
    except ApiError as err:
        if err.status == 404:
            raise errors.NotFound(f"secret {ref.name!r} does not exist") from None
        raise errors.Unavailable(f"cannot read secret {ref.name!r}: HTTP {err.status}") from None
    value = data.get(ref.key)
    if value is None:
        raise errors.NotFound(f"secret {ref.name!r} has no key {ref.key!r}")
    try:
        return base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise errors.NotAuthorized(f"secret {ref.name!r} key {ref.key!r} is not base64 text") from None


def parse_grant(text: str, *, account: str, namespace: str, where: str) -> records.PayerProof:
    """A grant as `tfgrid-operator grant` prints it: JSON with account, namespace, expires and signature. Its
    signature is checked by the ledger against the account's twin key."""
    try:
        g = json.loads(text)
        fields = (g["account"], g["namespace"], g["expires"], g["signature"])
    except (ValueError, KeyError, TypeError):
        raise errors.NotAuthorized(f"{where} is not a payer grant (tfgrid-operator grant makes one)") from None
    if not (isinstance(fields[0], str) and isinstance(fields[1], str) and isinstance(fields[3], str)
            and isinstance(fields[2], int) and not isinstance(fields[2], bool)):
        raise errors.NotAuthorized(f"{where} is not a payer grant (tfgrid-operator grant makes one)")
    if fields[0] != account:
        raise errors.NotAuthorized(f"{where} grants account {fields[0]!r}, not the payer account {account!r}")
    if fields[1] != namespace:
        raise errors.NotAuthorized(f"{where} is a grant for another namespace")
    return records.PayerProof(kind="grant", namespace=namespace, account=account, expires=fields[2],
                              signature=fields[3][:128])


async def payer_proof(rt: runtime.Runtime, spec: api.DeploymentSpec, namespace: str) -> records.PayerProof:
    """What shows that the payer agreed. The key is read
    only here, only to derive its public key; no message ever carries it. A bare ``payer.account`` proves nothing
    (the ledger refuses it: PayerNotAuthorized)."""
    account = spec.payer.account
    if account:  # a named twin proves itself with the grant it signed for this namespace
        grant_ref = spec.payer.grant_ref
        if grant_ref is None:
            return records.PayerProof(kind="grant", namespace=namespace, account=account)  # only named: refused
        text = await _secret_value(rt, namespace, grant_ref)
        return parse_grant(text, account=account, namespace=namespace,
                           where=f"secret {grant_ref.name!r} key {grant_ref.key!r}")
    ref = spec.payer.secret_ref
    if ref is None:
        return records.PayerProof(kind="grant", namespace=namespace, account="")
    text = await _secret_value(rt, namespace, ref)
    where = f"secret {ref.name!r} key {ref.key!r}"
    try:
        key = identity.KeyPair.from_text(text)
    except (ValueError, identity.BadSignature):
        raise errors.NotAuthorized(f"{where} is not a base64 ed25519 twin key") from None
    return records.PayerProof(kind="key", namespace=namespace, public_key=key.public_key)


def _same_proof(c: records.Contract, proof: records.PayerProof) -> bool:
    """Whether the live contract already rests on this proof (nothing to re-prove on the ledger): the same grant,
    or a key that is its payer account's twin key as the ledger holds it now (read with the contract)."""
    if proof.kind == "grant":
        return c.proof == "grant" and c.payer == proof.account and c.proof_signature == proof.signature
    return c.proof == "key" and bool(proof.public_key) and c.payer_key == proof.public_key


def _beside(read: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """A ledger read run beside the handler's own calls instead of after them (issue 17: after a restart every
    Deployment resumes at once, each read waits its turn for a connection, and the pricing policy's read, made after
    the contract's, added ~0.14 s to each). Its failure, if the handler ends before it awaits it, is not logged as an
    exception never retrieved: kopf retries the handler, which reads it again."""
    task = asyncio.ensure_future(read)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


def _held(current: records.Contract | None) -> dict[str, Any]:
    """The status fields of the live contract a Deployment keeps while it waits (a resize without room, a payer
    that owes): what it still reserves, where."""
    if current is None or current.state not in LIVE:
        return {}
    return {"reserved": current.resources.as_dict(), "contractId": current.id, "node": current.node}


@reporting.reconciler("deployments", "deployment")
async def reconcile_deployment(body: Any, spec: Any, name: str, namespace: str, patch: kopf.Patch, memo: kopf.Memo,
                               **_: Any) -> None:
    rt = runtime.get(memo)
    key, uid = f"{namespace}/{name}", tenancy.owner(body).uid
    s = reporting.parse_spec(rt, api.DeploymentSpec, body, spec, patch)
    if s is None:
        return
    now = rt.clock.now()
    policies = _beside(rt.ledger.policies())
    current: records.Contract | None = None
    try:
        current = await rt.ledger.observe_contract(key=key)
        if current is not None and current.owner_uid not in ("", uid):
            current = None  # an earlier object's contract: never this one's (the ledger closes it if still live)
        live = current is not None and current.state in LIVE
        if current is None:
            proof = await payer_proof(rt, s, namespace)
            # placed: routine, and said by status (node, contractId) in the same write; no Event (issue 17: a write
            # per object that no person needs)
            current = await rt.ledger.open_contract(key=key, owner_uid=uid, proof=proof, request=s.request(), now=now)
        elif live:
            proof = await payer_proof(rt, s, namespace)
            if not _same_proof(current, proof):
                before = current.payer
                try:
                    current = await rt.ledger.authorize_contract(key=key, owner_uid=uid, proof=proof, now=now)
                except errors.Conflict as err:
                    raise errors.NotAuthorized(err.message) from None
                if current.payer != before:
                    kopf.info(body, reason=str(Reason.UPDATED),
                              message=f"Deployment {key}: contract {current.id} now paid by {current.payer!r} "
                                      f"(billed to {before!r} up to now)")
            if current.state in LIVE and (current.resources != s.capacity or current.public_ips != s.public_ips) \
                    and not current.dedicated:  # (a payer change's final bill may have ended it: its grant's end)
                current = await rt.ledger.resize_contract(key=key, owner_uid=uid, resources=s.capacity,
                                                          public_ips=s.public_ips, now=now)
                if current.state in LIVE:
                    kopf.info(body, reason=str(Reason.UPDATED), message=f"Deployment {key} resized on node {current.node}")
    except errors.NoCapacity as err:
        message = f"{err.constraint}: {err.message}"
        reason = Reason.RESIZE_BLOCKED if current is not None and current.state in LIVE else Reason.UNSCHEDULABLE
        reporting.waiting(rt, body, patch, reason=reason, message=message, fields=_held(current))
    except errors.PayerInDebt as err:  # invariant 7: it opens (or grows) once a funding paid what its payer owes
        reporting.waiting(rt, body, patch, reason=Reason.PAYER_IN_DEBT, message=err.message,
                          fields=_held(current), synced=False)
    except errors.NotAuthorized as err:
        reporting.waiting(rt, body, patch, reason=Reason.PAYER_NOT_AUTHORIZED, message=err.message, synced=False)
    except errors.NotFound as err:
        reporting.waiting(rt, body, patch, reason=Reason.PAYER_NOT_FOUND, message=err.message, synced=False)
    except errors.LedgerError as err:
        reporting.ledger_failure(rt, body, patch, err, ready_reason=Reason.CREATING)
    policy = (await policies)[0]
    status = dict(body.get("status") or {})
    reporting.apply(rt, body, patch, projections.deployment_status(
        current, status, body["metadata"].get("generation", 1), conditions.timestamp(now), policy,
        rt.ledger.config.tft_price))


@kopf.on.delete(G, V, "deployments")
@reporting.metered("deployment")
async def delete_deployment(body: Any, name: str, namespace: str, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime.get(memo)
    key = f"{namespace}/{name}"
    uid = tenancy.owner(body).uid

    def closed_event(closed: records.Contract | None) -> str | None:
        if closed is None or closed.owner_uid not in ("", uid):
            return None
        return f"Contract {closed.id} closed with a final bill; billed total {closed.billed_total} units"

    closed = await reporting.close_on_ledger(
        rt, body, patch, rt.ledger.close_contract(key=key, owner_uid=uid, now=rt.clock.now(), reason="CanceledByUser"),
        message=closed_event)
    if closed is None or closed.state not in LIVE:  # its node's delete may wait for nothing else
        blocked.gone(rt, blocked.dependent("deployments", key))


