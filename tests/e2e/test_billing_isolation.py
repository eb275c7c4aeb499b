"""Invariant 6 end to end, in two namespaces: a contract whose bill would pass the ledger's bound is not billed and
says so on its own Deployment (status.billingError, a Warning Event); the other tenant's contract is billed as usual
and money is conserved. The bound cannot be reached through the CRDs (money.MAX_POLICY_PRICE); the test writes an
out-of-bound price into the ledger directly, as a damaged or hand-edited ledger could hold."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from e2e.conftest import START
from e2e.objects import API, create, events, farm, node, paid_by, ready, twin_account
from e2e.tenants import conserved, get, reason
from e2e.tenants import create as create_in
from polling import eventually
from tfgrid_operator.backend import schema
from tfgrid_operator.backend.sql.engine import WRITE
from tfgrid_operator.domain import money

pytestmark = pytest.mark.e2e
A, B = "team-a", "team-b"
H = 3600
TFT = money.UNITS_PER_TFT


def deployment(name: str, payer: str, cru: int, mru: int) -> dict:
    return {"apiVersion": API, "kind": "Deployment", "metadata": {"name": name},
            "spec": {"resources": {"cru": cru, "mru": mru, "sru": 50}, "publicIPs": 0, "payer": paid_by(payer)}}


async def test_a_contract_past_the_bound_is_reported_on_its_deployment_and_the_others_are_billed(
        apiserver, operator, ledger, grid_clock):
    for ns in (A, B):
        resp = await apiserver.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                                 "metadata": {"name": ns}})
        assert resp.status in (201, 409), await resp.text()
    await create(apiserver, farm(), node("n1"))
    await ready(apiserver, "nodes", "n1")
    for account, ns in (("alice", A), ("bob", B)):
        await twin_account(ledger, apiserver, account, namespace=ns)
        await ledger.fund(name=account, amount=100 * TFT, now=grid_clock.now())
    await create_in(apiserver, A, deployment("web", "alice", cru=2, mru=4))  # CU 1, SU 0.25
    await create_in(apiserver, B, deployment("store", "bob", cru=0, mru=0))  # CU 0, SU 0.25
    await reason(apiserver, A, "deployments", "web", "Available")
    await reason(apiserver, B, "deployments", "store", "Available")
    # a CU price no proposal could set: 10^17 units USD an hour. Written as the ledger writes (its write lock taken at
    # BEGIN): a read snapshot upgraded to a write fails at once on SQLite when the running operator wrote since
    async with ledger.engine.execution_options(**{WRITE: True}).begin() as conn:
        m = schema.meta
        policy = json.loads((await conn.execute(sa.select(m.c.value).where(m.c.key == "pricing_policy"))).scalar_one())
        await conn.execute(m.update().where(m.c.key == "pricing_policy").values(value=json.dumps({**policy, "cu": 10**17})))
    grid_clock.set(START + H)
    # store: SU 0.25 × 50,000 = 12,500 units USD → × 50 (20 mUSD) = 625,000; 100 TFT is 2.2 months → Default ×0.8
    await eventually(lambda: get(apiserver, B, "deployments", "store")["status"].get("billedTotal") == 500_000,
                     what="store billed")
    web = await eventually(lambda: (get(apiserver, A, "deployments", "web")["status"].get("billingError")
                                    and get(apiserver, A, "deployments", "web")), what="web reports its billing error")
    assert "bound" in web["status"]["billingError"] and web["status"]["billedTotal"] == 0
    store = get(apiserver, B, "deployments", "store")["status"]
    assert "billingError" not in store and store["lastBill"]["amount"] == 500_000 and store["reserve"] == 500_000
    await eventually(lambda: [e for e in events(apiserver, "Billed", "web") if e["type"] == "Warning"],
                     what="a Warning Event on web")
    assert (await ledger.get_account(name="alice")).balance == 100 * TFT  # nothing taken from web's payer
    await conserved(ledger, 200 * TFT)
