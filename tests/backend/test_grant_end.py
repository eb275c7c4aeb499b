"""A payer who signed a grant pays up to its end and not a second after (grid-rules.md "Grants"), on SQLite and
PostgreSQL, whichever run bills the time past it: the period's run, a run catching up after the operator was down,
a close by the user, a move. The contract ends at the grant's end (GrantExpired), its final bill up to there, its
reserve paid out; its Deployment is told (the run's changed keys). The conservation audit holds after each."""

from __future__ import annotations

import pytest

import ledger_setup
from ledger_audit import conserved
from tfgrid_operator.backend import errors, records
from tfgrid_operator.domain import billing, identity, money, names, scheduling
from tfgrid_operator.domain.units import Resources

H = 3600
TFT = money.UNITS_PER_TFT
SMALL = Resources(cru=2, mru=4, sru=50)
NODE = Resources(cru=8, mru=32, sru=1000)
FARMER, ALICE, BOB = (identity.KeyPair.generate() for _ in range(3))
A = "team-a"
OWNER = records.Owner(A, "uid-farm")
ENDS = H + 1200  # the grant's end: 20 minutes into the second hour


@pytest.fixture
async def ledger(ledger_url):
    lg = await ledger_setup.short_grace_ledger(ledger_url)  # its nodes count as up: a move finds the other one
    yield lg
    await lg.close()


async def grid(ledger) -> None:
    await ledger_setup.two_nodes_and_twins(ledger, owner=OWNER, farmer=FARMER, resources=NODE,
                                           twins={"alice": ALICE, "bob": BOB}, funded=100 * TFT)


async def open_both(ledger) -> None:
    """team-a/granted, paid by alice's grant until ENDS; team-a/keyed, paid by bob's key: both from 0."""
    grant = names.Grant("alice", A, ENDS).signed(ALICE)
    proofs = {"granted": records.PayerProof(kind="grant", namespace=A, account="alice", expires=ENDS,
                                            signature=grant.signature),
              "keyed": records.PayerProof(kind="key", namespace=A, public_key=BOB.public_key)}
    for name, proof in proofs.items():
        await ledger.open_contract(key=f"{A}/{name}", owner_uid=f"uid-{name}", proof=proof, now=0,
                                   request=scheduling.Request(resources=SMALL))


async def billed_seconds(ledger, name: str) -> int:
    bills = await ledger.bills(key=f"{A}/{name}")
    assert all(b.until <= ENDS or name != "granted" for b in bills), bills
    return sum(b.seconds for b in bills)


async def ended_at_grant_end(ledger) -> None:
    c = await ledger.observe_contract(key=f"{A}/granted")
    assert (c.state, c.deleted_reason, c.deleted_at, c.reserve) == ("Deleted", billing.GRANT_EXPIRED, ENDS, 0), c
    assert await billed_seconds(ledger, "granted") == ENDS
    await conserved(ledger, 200 * TFT)


async def test_the_period_run_bills_a_grant_up_to_its_end(ledger):
    await grid(ledger)
    await open_both(ledger)
    await ledger.bill_period(period=0, now=H)
    report = await ledger.bill_period(period=1, now=2 * H)
    assert f"{A}/granted" in report.changed  # its Deployment hears of it at once
    await ended_at_grant_end(ledger)
    again = await ledger.bill_period(period=2, now=3 * H)
    assert f"{A}/granted" not in again.changed
    await ended_at_grant_end(ledger)
    assert await billed_seconds(ledger, "keyed") == 3 * H  # a key's contract is billed on


async def test_runs_catching_up_after_a_downtime_stop_at_the_grant_end(ledger):
    await grid(ledger)
    await open_both(ledger)
    for period in range(5):  # the operator was down for five hours: every period is billed at its return
        await ledger.bill_period(period=period, now=5 * H + 30)
    await ended_at_grant_end(ledger)
    assert await billed_seconds(ledger, "keyed") == 5 * H


@pytest.mark.parametrize("how", ["close", "move"])
async def test_a_close_or_a_move_after_the_grant_end_bills_up_to_it(ledger, how):
    await grid(ledger)
    await open_both(ledger)
    await ledger.bill_period(period=0, now=H)
    if how == "close":  # the user deletes the Deployment after the grant ended, before any sweep
        await ledger.close_contract(key=f"{A}/granted", owner_uid="uid-granted", now=2 * H + 5,
                                    reason="CanceledByUser")
    else:  # its node died after the grant ended: the move's final bill ends it instead
        node = (await ledger.observe_contract(key=f"{A}/granted")).node
        moved = await ledger.move_contract(key=f"{A}/granted", now=2 * H + 5, request=scheduling.Request(
            resources=SMALL, exclude=frozenset({node})))
        assert not moved.created
    await ended_at_grant_end(ledger)


async def test_a_grant_ending_at_the_period_end_bills_the_whole_period(ledger):
    await grid(ledger)
    grant = names.Grant("alice", A, 2 * H).signed(ALICE)
    await ledger.open_contract(key=f"{A}/granted", owner_uid="uid-granted", now=0, request=scheduling.Request(
        resources=SMALL), proof=records.PayerProof(kind="grant", namespace=A, account="alice", expires=2 * H,
                                                   signature=grant.signature))
    await ledger.bill_period(period=0, now=H)
    await ledger.bill_period(period=1, now=2 * H)
    c = await ledger.observe_contract(key=f"{A}/granted")
    assert (c.state, c.deleted_reason, c.deleted_at) == ("Deleted", billing.GRANT_EXPIRED, 2 * H)
    assert sum(b.seconds for b in await ledger.bills(key=f"{A}/granted")) == 2 * H


async def test_the_sweeps_close_bills_up_to_the_grant_end_not_its_own_time(ledger):
    await grid(ledger)
    await open_both(ledger)
    await ledger.bill_period(period=0, now=H)
    await ledger.close_contract(key=f"{A}/granted", owner_uid="uid-granted", now=H + 1800, reason="GrantExpired")
    await ended_at_grant_end(ledger)


async def test_a_grant_renewed_before_the_sweeps_close_keeps_its_contract(ledger):
    """The sweep read the contract with its ended grant; a renewed grant reached the ledger before its close."""
    await grid(ledger)
    await open_both(ledger)
    renewed = names.Grant("alice", A, 30 * 86400).signed(ALICE)
    await ledger.authorize_contract(key=f"{A}/granted", owner_uid="uid-granted", now=H, proof=records.PayerProof(
        kind="grant", namespace=A, account="alice", expires=30 * 86400, signature=renewed.signature))
    await ledger.close_contract(key=f"{A}/granted", owner_uid="uid-granted", now=H + 1800, reason="GrantExpired")
    c = await ledger.observe_contract(key=f"{A}/granted")
    assert (c.state, c.proof_until) == ("Created", 30 * 86400)
    for period in (0, 1):
        await ledger.bill_period(period=period, now=2 * H)
    assert await billed_seconds_all(ledger, "granted") == 2 * H  # billed on, under the renewed grant


async def billed_seconds_all(ledger, name: str) -> int:
    return sum(b.seconds for b in await ledger.bills(key=f"{A}/{name}"))


@pytest.mark.parametrize("change", ["payer", "size"])
async def test_a_payer_change_or_resize_after_the_grant_end_finds_it_ended(ledger, change):
    """The change's final bill for the old terms stops at the grant's end and ends the contract there: bob never
    takes over a contract that ended before he was named, and an ended contract is not resized."""
    await grid(ledger)
    await open_both(ledger)
    await ledger.bill_period(period=0, now=H)
    if change == "payer":
        out = await ledger.authorize_contract(key=f"{A}/granted", owner_uid="uid-granted", now=H + 2400,
                                              proof=records.PayerProof(kind="key", namespace=A,
                                                                       public_key=BOB.public_key))
        assert out.payer == "alice"
    else:
        out = await ledger.resize_contract(key=f"{A}/granted", owner_uid="uid-granted", now=H + 2400,
                                           resources=Resources(cru=1, mru=2, sru=50), public_ips=0)
        assert out.resources == SMALL
    assert out.state == "Deleted"
    await ended_at_grant_end(ledger)


async def test_another_namespace_cannot_move_a_grant_end(ledger):
    """team-b, with only its own rights, tries to keep team-a's granted contract running past its grant: it shows a
    long grant alice signed for team-b, and its own object's uid with bob's key. Both are refused; the contract ends
    at its own grant's end, billed to it and not a second past."""
    await grid(ledger)
    await open_both(ledger)
    for_b = names.Grant("alice", "team-b", 30 * 86400).signed(ALICE)
    with pytest.raises(errors.NotAuthorized, match="another namespace"):
        await ledger.authorize_contract(key=f"{A}/granted", owner_uid="uid-granted", now=H, proof=records.PayerProof(
            kind="grant", namespace="team-b", account="alice", expires=30 * 86400, signature=for_b.signature))
    with pytest.raises(errors.NotFound):  # another object (team-b's uid) never re-binds team-a's contract
        await ledger.authorize_contract(key=f"{A}/granted", owner_uid="uid-of-team-b", now=H, proof=records.PayerProof(
            kind="key", namespace=A, public_key=BOB.public_key))
    for period in (0, 1):
        await ledger.bill_period(period=period, now=2 * H)
    await ended_at_grant_end(ledger)
