"""Debt follows the payer (issue 13, invariant 7), on SQLite and PostgreSQL: a Deployment in its grace period that is
deleted, re-created, orphaned, moved off a dead node, or whose grant is revoked or ends, closes with its debt on
record; that debt is its payer's. A funding pays it first, split as the bills would have been paid out (§2.7:
50 % farmer, 40 % foundation, 10 % staking pool, to the unit), and until it is paid the payer opens and grows
nothing. Tenants are team-a (the payer's) and team-b (an attacker with only namespace rights, and its own twin).
Every scenario ends with the conservation audit: funding + minted = balances + reserves; billed = paid + owed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import ledger_setup
from ledger_audit import conserved
from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.domain import billing, identity, money, names, pricing, scheduling
from tfgrid_operator.domain.units import Resources

H = 3600
TFT = money.UNITS_PER_TFT
SMALL = Resources(cru=2, mru=4, sru=50)
BIGGER = Resources(cru=3, mru=4, sru=50)
NODE = Resources(cru=8, mru=32, sru=1000)
FARMER, ALICE, MALLORY = (identity.KeyPair.generate() for _ in range(3))
A, B = "team-a", "team-b"
FARM_OWNER = records.Owner(A, "uid-farm")


@pytest.fixture
async def ledger(ledger_url):
    lg = await ledger_setup.short_grace_ledger(ledger_url)
    yield lg
    await lg.close()


async def grid(ledger) -> None:
    await ledger_setup.two_nodes_and_twins(ledger, owner=FARM_OWNER, farmer=FARMER, resources=NODE, public_ips=2,
                                           twins={"alice": ALICE, "mallory": MALLORY})


def by_key(key: identity.KeyPair, namespace: str = A) -> records.PayerProof:
    return records.PayerProof(kind="key", namespace=namespace, public_key=key.public_key)


def by_grant(namespace: str, expires: int = 30 * 86400) -> records.PayerProof:
    g = names.Grant("alice", namespace, expires).signed(ALICE)
    return records.PayerProof(kind="grant", namespace=namespace, account="alice", expires=expires, signature=g.signature)


async def open_(ledger, key: str, uid: str, proof: records.PayerProof, now: int, resources: Resources = SMALL,
                **placement) -> records.Contract:
    return await ledger.open_contract(key=key, owner_uid=uid, proof=proof, now=now,
                                      request=scheduling.Request(resources=resources, **placement))


async def balances(ledger) -> dict[str, int]:
    return {a.name: a.balance for a in await ledger.list_accounts()}


async def in_grace(ledger, proof: records.PayerProof, key: str = f"{A}/web") -> records.Contract:
    """alice's deployment, unpaid for its first hour: in grace from H (§2.4)."""
    await open_(ledger, key, "uid-1", proof, 0, node="n0")
    await ledger.bill_period(period=0, now=H)
    c = await ledger.observe_contract(key=key)
    assert c.state == "GracePeriod" and c.overdraft > 0
    return c


async def close_in_grace(ledger, path: str) -> records.Contract:
    """alice's deployment in grace ends by ``path``; returns its closed contract (its debt on it)."""
    key, now = f"{A}/web", H + H // 2
    if path in ("GrantRevoked", "GrantExpired"):
        proof = by_grant(A, expires=now if path == "GrantExpired" else 30 * 86400)
    else:
        proof = by_key(ALICE)
    await in_grace(ledger, proof, key)
    if path == "CanceledByUser" or path == "GrantExpired":  # deleted; or its grant ended (the loop's sweep)
        closed = await ledger.close_contract(key=key, owner_uid="uid-1", now=now, reason=path)
    elif path == "Orphaned":  # the finalizer removed by hand, a new object of the same name created
        with pytest.raises(errors.PayerInDebt):  # the orphan's final bill is alice's debt before the new one opens
            await open_(ledger, key, "uid-2", proof, now)
        closed = (await ledger.contract_summaries())[key]
    elif path == "GrantRevoked":
        [closed] = await ledger.revoke_grant(account="alice", signature=proof.signature, now=now)
    elif path == "OutOfFunds":  # its grace ran out unpaid (§2.4)
        for k in range(1, 5):
            await ledger.bill_period(period=k, now=(k + 1) * H)
        closed = await ledger.observe_contract(key=key)
    else:  # Moved: its node died after the grace ran out; the move's final bill deletes it instead
        closed = await ledger.move_contract(key=key, now=4 * H + 10, request=scheduling.Request(
            resources=SMALL, exclude=frozenset({"n0"})))
        assert not closed.created
    assert closed.state == "Deleted" and closed.overdraft > 0, closed
    return closed


PATHS = ["CanceledByUser", "Orphaned", "GrantRevoked", "GrantExpired", "OutOfFunds", "Moved"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_deployment_closed_in_grace_leaves_its_debt_to_its_payer_who_pays_it_first(ledger, path):
    await grid(ledger)
    await ledger.fund(name="mallory", amount=100 * TFT, now=0)
    funded = 100 * TFT
    closed = await close_in_grace(ledger, path)
    owed = closed.overdraft
    alice = await ledger.get_account(name="alice")
    assert (alice.balance, alice.debt) == (0, owed)
    # alice opens nothing while she owes: here, in another namespace (through a grant), under another name
    for key, proof in ((f"{A}/web", by_key(ALICE)), (f"{A}/db", by_key(ALICE)), (f"{B}/x", by_grant(B))):
        with pytest.raises(errors.PayerInDebt, match="owes"):
            await open_(ledger, key, "uid-9", proof, 2 * H)
    assert (await ledger.observe_contract(key=f"{A}/db")) is None
    # another tenant's twin is not held by alice's debt
    assert (await open_(ledger, f"{B}/mine", "uid-b", by_key(MALLORY, B), 2 * H)).created
    # a funding smaller than the debt: all of it pays the debt, to the farmer / foundation / staking pool
    before = await balances(ledger)
    part = owed // 3
    paid = await ledger.fund(name="alice", amount=part, now=5 * H)
    funded += part
    assert (paid.balance, paid.debt, paid.collected) == (0, owed - part, part)
    share = billing.split(part)
    after = await balances(ledger)
    assert after[f"{A}/farmer"] - before[f"{A}/farmer"] == share.farmer
    assert after["foundation"] - before["foundation"] == share.foundation
    assert after["staking-pool"] - before["staking-pool"] == share.staking_pool
    with pytest.raises(errors.PayerInDebt):
        await open_(ledger, f"{A}/db", "uid-9", by_key(ALICE), 5 * H)
    await conserved(ledger, funded)
    # the rest of the debt is paid by the next funding, the remainder is alice's: nothing forgiven, nothing twice
    paid = await ledger.fund(name="alice", amount=100 * TFT, now=6 * H)
    funded += 100 * TFT
    assert (paid.balance, paid.debt, paid.collected) == (100 * TFT - (owed - part), 0, owed - part)
    again = await ledger.fund(name="alice", amount=1, now=6 * H)
    funded += 1
    assert (again.collected, again.balance) == (0, paid.balance + 1)
    debts = [p for p in await ledger.payouts(key=closed.key) if p.reason == "Debt"]
    assert [p.amount for p in debts] == [part, owed - part] and {p.contract_id for p in debts} == {closed.id}
    assert all(p.farmer + p.foundation + p.staking_pool == p.amount for p in debts)
    async with ledger.engine.connect() as conn:
        c = schema.contracts
        assert (await conn.execute(sa.select(c.c.overdraft).where(c.c.id == closed.id))).scalar_one() == 0
    # paid: alice opens again (the new object of the re-created name, too)
    reopened = await open_(ledger, f"{A}/web", "uid-3", by_key(ALICE), 6 * H)
    assert reopened.created and reopened.id != closed.id and reopened.overdraft == 0
    await conserved(ledger, funded)


async def test_a_payer_that_owes_grows_nothing_and_takes_over_nothing(ledger):
    """alice's second contract is in grace: she may shrink her healthy one, never grow it, and no Deployment may
    re-bind to her; the attacker's twin in team-b, in debt too, cannot make alice's contract its own either."""
    await grid(ledger)
    healthy = await open_(ledger, f"{A}/api", "uid-api", by_key(ALICE), 0, node="n1")
    await open_(ledger, f"{A}/web", "uid-1", by_key(ALICE), 0, node="n0")
    hourly = pricing.Quote.of(resources=SMALL, public_ips=0, seconds=H, certified=False, dedicated_node=None,
                              policy=ledger.config.pricing_policy, price=ledger.config.tft_price).bill(balance=0)
    await ledger.fund(name="alice", amount=hourly.amount, now=0)  # an hour of api, billed first; none of web
    funded = hourly.amount
    await ledger.bill_period(period=0, now=H)
    api, web = await ledger.observe_contract(key=f"{A}/api"), await ledger.observe_contract(key=f"{A}/web")
    assert (api.state, web.state) == ("Created", "GracePeriod") and healthy.id == api.id
    with pytest.raises(errors.PayerInDebt):
        await ledger.resize_contract(key=f"{A}/api", owner_uid="uid-api", resources=BIGGER, public_ips=0, now=H + 60)
    with pytest.raises(errors.PayerInDebt):  # a public IP is growth too
        await ledger.resize_contract(key=f"{A}/api", owner_uid="uid-api", resources=SMALL, public_ips=1, now=H + 60)
    smaller = await ledger.resize_contract(key=f"{A}/api", owner_uid="uid-api", resources=Resources(cru=1, mru=2,
                                                                                                     sru=50),
                                           public_ips=0, now=H + 120)
    assert smaller.resources.cru == 1
    # no deployment is re-bound to alice while she owes: not mallory's, with the grant alice gave team-b
    await ledger.fund(name="mallory", amount=100 * TFT, now=0)
    funded += 100 * TFT
    await open_(ledger, f"{B}/mine", "uid-b", by_key(MALLORY, B), H)
    with pytest.raises(errors.PayerInDebt):
        await ledger.authorize_contract(key=f"{B}/mine", owner_uid="uid-b", proof=by_grant(B), now=H + 180)
    assert (await ledger.observe_contract(key=f"{B}/mine")).payer == "mallory"
    await conserved(ledger, funded)


async def test_moving_a_contract_in_grace_carries_its_debt_once(ledger):
    """Self-healing is no escape: the new contract carries the debt (§2.7 a move), the old one owes nothing, the
    payer still owes it once, and paying it lets the payer open again."""
    await grid(ledger)
    await in_grace(ledger, by_key(ALICE))
    moved = await ledger.move_contract(key=f"{A}/web", now=H + 60, request=scheduling.Request(
        resources=SMALL, exclude=frozenset({"n0"})))
    assert moved.created and moved.state == "GracePeriod" and moved.moved_from == "n0"
    assert (await ledger.get_account(name="alice")).debt == moved.overdraft > 0
    with pytest.raises(errors.PayerInDebt):
        await open_(ledger, f"{A}/db", "uid-db", by_key(ALICE), H + 120)
    # a funding pays a live contract's debt at its next bill (§2.4): then alice opens again
    await ledger.fund(name="alice", amount=100 * TFT, now=H + 180)
    await ledger.bill_period(period=1, now=2 * H)
    assert (await ledger.observe_contract(key=f"{A}/web")).state == "Created"
    assert (await ledger.get_account(name="alice")).debt == 0
    assert (await open_(ledger, f"{A}/db", "uid-db", by_key(ALICE), 2 * H)).created
    await conserved(ledger, 100 * TFT)


async def test_a_version_5_ledger_makes_old_closed_debts_the_payers(ledger_url):
    """Debts closed before version 6 were on record but collected by nobody: after the upgrade they are their
    payers' to pay, first, like any other (nothing forgiven)."""
    from backend.test_upgrade import back_to_version_5

    lg = await ledger_setup.short_grace_ledger(ledger_url)
    await grid(lg)
    closed = await close_in_grace(lg, "CanceledByUser")
    async with lg.engine.begin() as conn:
        await back_to_version_5(conn)
    await lg.close()
    lg = await ledger_setup.short_grace_ledger(ledger_url)
    try:
        assert (await lg.get_account(name="alice")).debt == closed.overdraft
        with pytest.raises(errors.PayerInDebt):
            await open_(lg, f"{A}/db", "uid-db", by_key(ALICE), 2 * H)
        assert (await lg.fund(name="alice", amount=closed.overdraft, now=2 * H)).collected == closed.overdraft
        assert (await open_(lg, f"{A}/db", "uid-db", by_key(ALICE), 2 * H)).created
        await conserved(lg, closed.overdraft)
    finally:
        await lg.close()
