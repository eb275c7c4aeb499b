"""The ledger's side of the trust model (design.md "Trust model"), on SQLite and PostgreSQL: records are owned by
the object that made them, payers prove they agreed, grid accounts never pay, amounts are bounded. Each attack
leaves the ledger as it was, and money is conserved (funding + minted = all balances, to the unit)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import sqlalchemy as sa

from ledger_audit import conserved
from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.domain import identity, money, names, scheduling
from tfgrid_operator.domain.units import Resources

H = 3600
NODE = Resources(cru=8, mru=32, sru=1000, hru=4000)
SMALL = Resources(cru=2, mru=4, sru=50)
FARMER, NODE_KEY, ALICE, BOB, MALLORY = (identity.KeyPair.generate() for _ in range(5))
VICTIM = records.Owner("team-a", "uid-farm-a")
ATTACKER = records.Owner("team-b", "uid-farm-b")
NOW = 600


async def victim_grid(ledger) -> dict[str, int]:
    """team-a's farm and node, alice and bob funded (twins), mallory funded in team-b. Returns the funding."""
    await ledger.ensure_farm(name="freefarm", owner=VICTIM, owner_key=FARMER.public_key, payout_account="farmer",
                             certified=False, dedicated=False, public_ips=2)
    await ledger.ensure_node(name="node1", owner=VICTIM, farm="freefarm", resources=NODE, country="BE", city="Ghent",
                             certified=False, public_key=NODE_KEY.public_key, now=0)
    funding = {}
    for name, key in (("alice", ALICE), ("bob", BOB), ("mallory", MALLORY)):
        await ledger.ensure_account(name=name, public_key=key.public_key)
        await ledger.fund(name=name, amount=1000 * money.UNITS_PER_TFT, now=0)
        funding[name] = 1000 * money.UNITS_PER_TFT
    return funding



def grant(account: str, key: identity.KeyPair, namespace: str, expires: int = NOW + 30 * 86400) -> records.PayerProof:
    g = names.Grant(account, namespace, expires).signed(key)
    return records.PayerProof(kind="grant", namespace=namespace, account=account, expires=expires, signature=g.signature)


def key_proof(key: identity.KeyPair, namespace: str) -> records.PayerProof:
    return records.PayerProof(kind="key", namespace=namespace, public_key=key.public_key)


REQ = scheduling.Request(resources=SMALL)


# ---------------------------------------------------------------- tenancy: farms and nodes
async def test_a_farm_name_is_first_come_first_served_and_the_second_claimant_changes_nothing(ledger):
    funded = sum((await victim_grid(ledger)).values())
    before = await ledger.observe_farm(name="freefarm")
    for claimant in (ATTACKER, records.Owner("team-a", "uid-later-object")):  # another namespace; a later object
        with pytest.raises(errors.NameTaken) as err:
            await ledger.ensure_farm(name="freefarm", owner=claimant, owner_key=MALLORY.public_key,
                                     payout_account="mallory-payout", certified=True, dedicated=False, public_ips=9)
        assert err.value.reason == "NameTaken" and "team-a" not in err.value.message  # no other tenant's name leaks
        await ledger.close_farm(name="freefarm", owner=claimant)  # deleting the loser touches nothing
    after = await ledger.observe_farm(name="freefarm")
    assert after == before and after.state == "Active" and after.owner == VICTIM
    assert not [a.name for a in await ledger.list_accounts() if "mallory-payout" in a.name]
    again = await ledger.ensure_farm(name="freefarm", owner=VICTIM, owner_key=FARMER.public_key, payout_account="farmer",
                                     certified=False, dedicated=False, public_ips=2)
    assert not again.created and again.id == before.id  # the owner itself adopts its record
    await conserved(ledger, funded)


async def test_a_node_name_is_first_come_first_served_and_deleting_the_namesake_closes_nothing(ledger):
    funded = sum((await victim_grid(ledger)).values())
    await ledger.ensure_farm(name="evilfarm", owner=ATTACKER, owner_key=MALLORY.public_key, payout_account="evil",
                             certified=False, dedicated=False, public_ips=0)
    before = await ledger.observe_node(name="node1")
    with pytest.raises(errors.NameTaken):
        await ledger.ensure_node(name="node1", owner=ATTACKER, farm="evilfarm", resources=NODE, country="", city="",
                                 certified=True, public_key=MALLORY.public_key, now=1)
    await ledger.close_node(name="node1", owner=ATTACKER, now=2)
    assert await ledger.observe_node(name="node1") == before and before.farm == "freefarm"
    await conserved(ledger, funded)


async def test_a_node_joins_a_farm_of_another_namespace_only_with_the_farm_owners_signed_consent(ledger):
    await victim_grid(ledger)
    key = identity.KeyPair.generate()
    args = dict(name="intruder", owner=ATTACKER, farm="freefarm", resources=NODE, country="", city="",
                certified=False, public_key=key.public_key, now=1)
    payload = names.consent_payload(farm="freefarm", namespace="team-b", node="intruder", node_key=key.public_key)
    wrong = [
        "",  # none
        MALLORY.sign(names.FARM_CONSENT, payload),  # signed by someone else
        FARMER.sign(names.FARM_CONSENT, {**payload, "node": "other"}),  # for another node
        FARMER.sign(names.FARM_CONSENT, {**payload, "nodeKey": MALLORY.public_key}),  # for another node key
        FARMER.sign(names.FARM_CONSENT, {**payload, "namespace": "team-c"}),  # for another namespace
        FARMER.sign(identity.VOTE, payload),  # a signature made for another purpose
    ]
    for consent in wrong:
        with pytest.raises(errors.NotAuthorized):
            await ledger.ensure_node(**args, farm_consent=consent)
        assert await ledger.observe_node(name="intruder") is None
    node = await ledger.ensure_node(**args, farm_consent=FARMER.sign(names.FARM_CONSENT, payload))
    assert node.created and node.farm == "freefarm" and node.owner == ATTACKER


# ---------------------------------------------------------------- payers
async def test_only_a_proven_twin_pays(ledger):
    funded = sum((await victim_grid(ledger)).values())
    ns = "team-b"
    attacks = {
        "bare account": records.PayerProof(kind="grant", namespace=ns, account="alice"),
        "grant for another namespace": grant("alice", ALICE, "team-a"),
        "another namespace's grant replayed here": records.PayerProof(
            kind="grant", namespace=ns, account="alice", expires=NOW + 86400,
            signature=names.Grant("alice", "team-a", NOW + 86400).signed(ALICE).signature),
        "grant signed by another key": grant("alice", MALLORY, ns),
        "expired grant": grant("alice", ALICE, ns, expires=NOW),
        "grant beyond a year": grant("alice", ALICE, ns, expires=NOW + names.MAX_GRANT_S + 1),
        "proof made for another namespace": key_proof(ALICE, "team-a"),
        "the foundation": records.PayerProof(kind="grant", namespace=ns, account="foundation"),
        "the staking pool": grant("staking-pool", MALLORY, ns),
        "a farm's payout account": grant("team-a/farmer", MALLORY, ns),
    }
    for i, (what, proof) in enumerate(attacks.items()):
        with pytest.raises(errors.NotAuthorized):
            await ledger.open_contract(key=f"{ns}/d{i}", owner_uid=f"u{i}", proof=proof, request=REQ, now=NOW)
        assert await ledger.observe_contract(key=f"{ns}/d{i}") is None, what
    with pytest.raises(errors.NotFound):  # a key no twin registered
        await ledger.open_contract(key=f"{ns}/x", owner_uid="ux", proof=key_proof(identity.KeyPair.generate(), ns),
                                   request=REQ, now=NOW)
    ok = await ledger.open_contract(key=f"{ns}/ok", owner_uid="uok", proof=grant("mallory", MALLORY, ns), request=REQ,
                                    now=NOW)
    assert ok.payer == "mallory" and ok.proof == "grant" and ok.proof_until == NOW + 30 * 86400 and ok.proof_signature
    by_key = await ledger.open_contract(key="team-a/k", owner_uid="uk", proof=key_proof(ALICE, "team-a"), request=REQ,
                                        now=NOW)
    assert by_key.payer == "alice" and by_key.proof == "key" and by_key.proof_until is None
    await conserved(ledger, funded)


async def test_grid_and_payout_accounts_can_never_get_a_twin_key(ledger):
    await victim_grid(ledger)
    for name in ("foundation", "staking-pool"):
        with pytest.raises(errors.Conflict):
            await ledger.ensure_account(name=name, public_key=identity.KeyPair.generate().public_key)
    with pytest.raises(errors.InvalidRequest):  # a farm's payout account has a name no twin can have
        await ledger.ensure_account(name="team-a/farmer", public_key=identity.KeyPair.generate().public_key)
    # a farm naming a twin's account as its payout gets an account of its own, in its namespace: the twin still pays
    f2 = await ledger.ensure_farm(name="f2", owner=ATTACKER, owner_key=MALLORY.public_key, payout_account="alice",
                                  certified=False, dedicated=False, public_ips=0)
    assert f2.payout_account == "team-b/alice"
    assert {a.name: a.role for a in await ledger.list_accounts()}["alice"] == "twin"
    await ledger.open_contract(key="team-a/d", owner_uid="u", proof=key_proof(ALICE, "team-a"), request=REQ, now=NOW)


async def test_accounts_are_named_as_the_crd_names_them_and_a_twin_key_is_one_accounts(ledger):
    for bad in ("", "Alice", "a" * 65, "-a", "a b", "bob/../x", "ZbJLcI6ozuzaMiu3y+OAsNZOprSGYJ0FMcx4zoyrygw="):
        with pytest.raises(errors.InvalidRequest):
            await ledger.ensure_account(name=bad)
    with pytest.raises(errors.InvalidRequest):
        await ledger.ensure_account(name="carol", public_key="not-a-key")
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)
    with pytest.raises(errors.Conflict):  # §1.1: one twin per key
        await ledger.ensure_account(name="mallory", public_key=ALICE.public_key)
    with pytest.raises(errors.Conflict):  # and a twin's key is set once
        await ledger.ensure_account(name="alice", public_key=BOB.public_key)
    assert {a.name for a in await ledger.list_accounts()} == {"alice", "foundation", "staking-pool"}
    assert (await ledger.account_by_key(public_key=ALICE.public_key)).name == "alice"


async def test_a_changed_payer_is_billed_up_to_the_change_and_the_new_one_from_then_on(ledger):
    funded = sum((await victim_grid(ledger)).values())
    ns, key = "team-a", "team-a/web"
    opened = await ledger.open_contract(key=key, owner_uid="u1", proof=key_proof(ALICE, ns), request=REQ, now=0)
    await ledger.bill_period(period=0, now=H)
    alice_after_one_hour = (await ledger.get_account(name="alice")).balance
    with pytest.raises(errors.NotAuthorized):  # re-binding needs a proof too
        await ledger.authorize_contract(key=key, owner_uid="u1", proof=grant("bob", MALLORY, ns), now=H + H // 2)
    with pytest.raises(errors.NotFound):  # and the object that owns the contract
        await ledger.authorize_contract(key=key, owner_uid="u-other", proof=key_proof(BOB, ns), now=H + H // 2)
    moved = await ledger.authorize_contract(key=key, owner_uid="u1", proof=key_proof(BOB, ns), now=H + H // 2)
    assert moved.id == opened.id and moved.payer == "bob"
    await ledger.bill_period(period=1, now=2 * H)
    alice, bob = (await ledger.get_account(name="alice")).balance, (await ledger.get_account(name="bob")).balance
    half = alice_after_one_hour - alice  # alice paid the half hour before the change
    assert half > 0 and 1000 * money.UNITS_PER_TFT - bob > 0
    assert abs((1000 * money.UNITS_PER_TFT - bob) - half) <= 1  # bob the half hour after (rounding: one unit)
    await conserved(ledger, funded)


async def test_a_payer_in_grace_is_not_replaced_before_it_pays(ledger):
    await victim_grid(ledger)
    poor = identity.KeyPair.generate()
    await ledger.ensure_account(name="poor", public_key=poor.public_key)
    await ledger.fund(name="poor", amount=1, now=0)
    await ledger.open_contract(key="team-a/d", owner_uid="u1", proof=key_proof(poor, "team-a"), request=REQ, now=0)
    await ledger.bill_period(period=0, now=H)
    assert (await ledger.observe_contract(key="team-a/d")).state == "GracePeriod"
    with pytest.raises(errors.Conflict):
        await ledger.authorize_contract(key="team-a/d", owner_uid="u1", proof=key_proof(ALICE, "team-a"), now=H + 1)
    assert (await ledger.observe_contract(key="team-a/d")).payer == "poor"


async def test_a_new_object_of_the_same_name_never_inherits_a_contract(ledger):
    funded = sum((await victim_grid(ledger)).values())
    key = "team-a/web"
    old = await ledger.open_contract(key=key, owner_uid="old-uid", proof=key_proof(ALICE, "team-a"), request=REQ, now=0)
    with pytest.raises(errors.NotFound):
        await ledger.resize_contract(key=key, owner_uid="new-uid", resources=SMALL, public_ips=0, now=H // 2)
    untouched = await ledger.close_contract(key=key, owner_uid="new-uid", now=H // 2, reason="CanceledByUser")
    assert (untouched.id, untouched.state) == (old.id, "Created")
    new = await ledger.open_contract(key=key, owner_uid="new-uid", proof=key_proof(BOB, "team-a"), request=REQ,
                                     now=H // 2)
    assert new.created and new.id != old.id and new.payer == "bob" and new.owner_uid == "new-uid"
    async with ledger.engine.connect() as conn:
        c = schema.contracts
        row = (await conn.execute(sa.select(c).where(c.c.id == old.id))).one()
    assert (row.state, row.deleted_reason, row.deleted_at) == ("Deleted", "Orphaned", H // 2)
    assert row.reserve == 0  # paid out as at any close (§2.7), not left on a contract no one closes again
    assert row.billed_total > 0  # its final bill, paid by alice
    assert (await ledger.get_account(name="alice")).balance == 1000 * money.UNITS_PER_TFT - row.billed_total
    await conserved(ledger, funded)


# ---------------------------------------------------------------- bounds
async def test_funding_is_bounded_and_a_refused_funding_changes_nothing(ledger):
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)
    await ledger.ensure_account(name="bob", public_key=BOB.public_key)
    for amount in (money.MAX_UNITS + 1, 2**63, 2**70):
        with pytest.raises(errors.InvalidRequest):
            await ledger.fund(name="alice", amount=amount, now=0)
    assert (await ledger.fund(name="alice", amount=money.MAX_UNITS - 5, now=0)).balance == money.MAX_UNITS - 5
    with pytest.raises(errors.InvalidRequest):  # the ledger's total is bounded, not only each account
        await ledger.fund(name="bob", amount=6, now=0)
    assert (await ledger.fund(name="bob", amount=5, now=0)).balance == 5
    await conserved(ledger, money.MAX_UNITS)


async def test_the_database_itself_refuses_a_balance_or_overdraft_past_the_bound(ledger):
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)
    a = schema.accounts
    for value in (money.MAX_UNITS + 1, -1):
        with pytest.raises(sa.exc.IntegrityError):
            async with ledger.engine.begin() as conn:
                await conn.execute(a.update().where(a.c.name == "alice").values(balance=value))
    assert (await ledger.get_account(name="alice")).balance == 0


async def test_a_version_2_ledger_gets_owners_roles_and_unique_twin_keys(ledger_url):
    from backend.test_ledger_contract import drop_version_3
    from tfgrid_operator import backend
    from tfgrid_operator.backend import config

    cfg = config.LedgerConfig(billing_period_s=H)
    lg = await backend.open_backend(ledger_url, cfg)
    await victim_grid(lg)
    await lg.open_contract(key="team-a/web", owner_uid="u1", proof=key_proof(ALICE, "team-a"), request=REQ, now=0)
    async with lg.engine.begin() as conn:
        await drop_version_3(conn)
        await conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="2"))
    await lg.close()
    lg = await backend.open_backend(ledger_url, cfg)
    try:
        roles = {a.name: a.role for a in await lg.list_accounts()}
        assert roles == {"alice": "twin", "bob": "twin", "mallory": "twin", "team-a/farmer": "payout", "foundation": "grid",
                         "staking-pool": "grid"}
        farm = await lg.observe_farm(name="freefarm")
        assert farm.owner == records.Owner("", "")  # made before ownership: adopted by the first object to claim it
        adopted = await lg.ensure_farm(name="freefarm", owner=VICTIM, owner_key=FARMER.public_key,
                                       payout_account="farmer", certified=False, dedicated=False, public_ips=2)
        assert adopted.owner == VICTIM
        with pytest.raises(errors.NameTaken):
            await lg.ensure_farm(name="freefarm", owner=ATTACKER, owner_key=MALLORY.public_key, payout_account="farmer",
                                 certified=False, dedicated=False, public_ips=2)
        with pytest.raises(errors.Conflict):
            await lg.ensure_account(name="carol", public_key=ALICE.public_key)
        async with lg.engine.connect() as conn:
            version = (await conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")))
            assert version.scalar() == str(schema.SCHEMA_VERSION)
    finally:
        await lg.close()


async def test_an_amount_past_the_bound_inside_a_ledger_call_is_refused_and_rolled_back(ledger):
    """A bill that would push a balance past the bound fails its transaction with a clear InvalidRequest (the
    database CHECK), never a wrapped int64 or a stored float; the transaction changes nothing."""
    await victim_grid(ledger)
    a = schema.accounts
    async with ledger.engine.begin() as conn:  # the farmer at the bound (as if paid there over the years)
        await conn.execute(a.update().where(a.c.name != "team-a/farmer").values(balance=0))
        await conn.execute(a.update().where(a.c.name == "team-a/farmer").values(balance=money.MAX_UNITS))
    with pytest.raises(errors.InvalidRequest) as err:  # one more unit credited, inside a ledger transaction
        async with ledger._tx() as conn:
            await conn.execute(a.update().where(a.c.name == "team-a/farmer").values(balance=a.c.balance + 1))
    assert "outside [0, " in err.value.message
    assert (await ledger.get_account(name="team-a/farmer")).balance == money.MAX_UNITS


async def test_a_revoked_grant_closes_its_contracts_now_and_is_never_accepted_again(ledger):
    funded = sum((await victim_grid(ledger)).values())
    ns = "team-b"
    revoked, kept = grant("alice", ALICE, ns), grant("alice", ALICE, ns, expires=NOW + 60 * 86400)
    for name, proof in (("d1", revoked), ("d2", revoked), ("d3", kept)):
        await ledger.open_contract(key=f"{ns}/{name}", owner_uid=f"u-{name}", proof=proof, request=REQ, now=NOW)
    with pytest.raises(errors.NotFound):
        await ledger.revoke_grant(account="nobody", signature=revoked.signature, now=NOW + 60)
    closed = await ledger.revoke_grant(account="alice", signature=revoked.signature, now=NOW + 60)
    assert [(c.key, c.state, c.deleted_reason, c.deleted_at) for c in closed] == [
        (f"{ns}/d1", "Deleted", "GrantRevoked", NOW + 60), (f"{ns}/d2", "Deleted", "GrantRevoked", NOW + 60)]
    assert all(c.billed_total > 0 for c in closed)  # their final bills
    assert (await ledger.observe_contract(key=f"{ns}/d3")).state == "Created"  # another grant of the same twin
    assert await ledger.revoke_grant(account="alice", signature=revoked.signature, now=NOW + 90) == []  # idempotent
    with pytest.raises(errors.NotAuthorized, match="revoked"):  # the same grant opens nothing again
        await ledger.open_contract(key=f"{ns}/d4", owner_uid="u-d4", proof=revoked, request=REQ, now=NOW + 120)
    assert await ledger.observe_contract(key=f"{ns}/d4") is None
    await conserved(ledger, funded)


# ---------------------------------------------------------------- issue 13's last gaps
async def test_a_council_signature_opens_one_proposal_once(ledger):
    """The nonce of a council signature opens one proposal, ever: withdrawn (deleted) and created again, under the
    same name or another, the same signature opens nothing; a new signature (nonce) opens a new proposal."""
    action = {"type": "SetPricingPolicy", "pricing": {"cu": 1}}
    first = await ledger.ensure_proposal(key="team-a/p", action=action, threshold=5, end_ts=10**6, nonce="a" * 32,
                                         council_key=FARMER.public_key, signed_digest="d" * 64)
    assert first.created and first.nonce == "a" * 32
    assert (await ledger.ensure_proposal(key="team-a/p", action=action, threshold=5, end_ts=2 * 10**6,
                                         nonce="a" * 32)).id == first.id  # idempotent: the same open proposal
    await ledger.withdraw_proposal(proposal="team-a/p")
    for key in ("team-a/p", "team-b/p"):  # re-created, or copied into another namespace: never opened again
        with pytest.raises(errors.Replayed, match="opens one proposal, once"):
            await ledger.ensure_proposal(key=key, action=action, threshold=5, end_ts=3 * 10**6, nonce="a" * 32)
        assert await ledger.observe_proposal(key=key) is None
    again = await ledger.ensure_proposal(key="team-a/p", action=action, threshold=5, end_ts=3 * 10**6, nonce="b" * 32)
    assert again.created and again.id != first.id and again.state == "Open"
    assert len(await ledger.proposal_summaries()) == 2  # the withdrawn one and the new one


async def test_a_farms_payout_account_squats_no_name(ledger):
    """A Farm's payoutAccount names an account within its namespace: it never takes a name a twin registers
    later, and a farm of another namespace naming the same payout is paid into an account of its own."""
    funded = sum((await victim_grid(ledger)).values())  # team-a's freefarm pays out to "farmer"
    evil = await ledger.ensure_farm(name="evilfarm", owner=ATTACKER, owner_key=MALLORY.public_key,
                                    payout_account="carol", certified=False, dedicated=False, public_ips=0)
    same = await ledger.ensure_farm(name="evilfarm2", owner=records.Owner("team-b", "uid-2"), owner_key=MALLORY.public_key,
                                    payout_account="farmer", certified=False, dedicated=False, public_ips=0)
    assert (evil.payout_account, same.payout_account) == ("team-b/carol", "team-b/farmer")
    assert (await ledger.observe_farm(name="freefarm")).payout_account == "team-a/farmer"
    carol = identity.KeyPair.generate()  # the name the farm named is still free for the twin who comes later
    assert (await ledger.ensure_account(name="carol", public_key=carol.public_key)).role == "twin"
    await ledger.fund(name="carol", amount=10 * money.UNITS_PER_TFT, now=0)
    funded += 10 * money.UNITS_PER_TFT
    paid = await ledger.open_contract(key="team-c/d", owner_uid="uc", proof=key_proof(carol, "team-c"), request=REQ,
                                      now=NOW)
    assert paid.payer == "carol"
    with pytest.raises(errors.InvalidRequest):  # no farm names another namespace's payout account
        await ledger.ensure_farm(name="evilfarm3", owner=ATTACKER, owner_key=MALLORY.public_key,
                                 payout_account="team-a/farmer", certified=False, dedicated=False, public_ips=0)
    with pytest.raises(errors.NotAuthorized):  # and a payout account never pays, whatever proof is shown
        await ledger.open_contract(key="team-b/x", owner_uid="ux", proof=grant("team-b/carol", MALLORY, "team-b"),
                                   request=REQ, now=NOW)
    await conserved(ledger, funded)


async def test_where_a_deployment_moved_from_is_the_ledgers_word(ledger):
    """movedFrom comes from the contracts' history (the Deleted(Moved) predecessor of the same object), so the
    operator writes it from the ledger; a later object of the same name never inherits it."""
    funded = sum((await victim_grid(ledger)).values())
    await ledger.ensure_node(name="node2", owner=VICTIM, farm="freefarm", resources=NODE, country="BE", city="Ghent",
                             certified=False, public_key=identity.KeyPair.generate().public_key, now=NOW)
    opened = await ledger.open_contract(key="team-a/web", owner_uid="u1", proof=key_proof(ALICE, "team-a"),
                                        request=scheduling.Request(resources=SMALL, node="node1"), now=NOW)
    assert opened.moved_from is None
    moved = await ledger.move_contract(key="team-a/web", now=NOW + 60, request=scheduling.Request(
        resources=SMALL, exclude=frozenset({"node1"})))
    assert (moved.node, moved.moved_from) == ("node2", "node1")
    assert (await ledger.contract_summaries())["team-a/web"].moved_from == "node1"
    assert (await ledger.observe_contract(key="team-a/web")).moved_from == "node1"
    later = await ledger.open_contract(key="team-a/web", owner_uid="u2", proof=key_proof(ALICE, "team-a"),
                                       request=REQ, now=NOW + 120)
    assert later.created and later.moved_from is None  # another object: the orphaned one's history is not its
    await conserved(ledger, funded)


async def test_the_sweeps_reads_of_live_contracts_agree_with_every_contracts_summary(ledger):
    """live_contracts (what the loop's sweep reads each tick): the live contracts, of some keys only or those whose
    grant ends by a time only, each as contract_summaries has it."""
    await victim_grid(ledger)
    ns = "team-b"
    short = grant("mallory", MALLORY, ns, expires=NOW + 2 * 86400)
    for name, proof in (("g1", grant("mallory", MALLORY, ns)), ("g2", short), ("k1", key_proof(ALICE, ns)),
                        ("gone", short)):
        await ledger.open_contract(key=f"{ns}/{name}", owner_uid=f"u-{name}", proof=proof, request=REQ, now=NOW)
    await ledger.close_contract(key=f"{ns}/gone", owner_uid="u-gone", now=NOW + H, reason="CanceledByUser")
    summaries = await ledger.contract_summaries()
    live = {k: c for k, c in summaries.items() if c.state in ("Created", "GracePeriod")}

    def same(found: dict) -> dict:
        return {k: dataclasses.replace(c, moved_from=None) for k, c in found.items()}

    assert set(live) == {f"{ns}/g1", f"{ns}/g2", f"{ns}/k1"}
    assert await ledger.live_contracts() == same(live)
    assert await ledger.live_contracts(keys={f"{ns}/g2", f"{ns}/gone", "nope/x"}) == same({f"{ns}/g2": live[f"{ns}/g2"]})
    assert await ledger.live_contracts(keys=set()) == {}
    assert await ledger.live_contracts(proof_until_before=NOW + 3 * 86400) == same({f"{ns}/g2": live[f"{ns}/g2"]})
    assert set(await ledger.live_contracts(proof_until_before=NOW + 31 * 86400)) == {f"{ns}/g1", f"{ns}/g2"}
    assert await ledger.live_contracts(proof_until_before=NOW) == {}


async def test_registering_a_node_again_as_it_is_writes_nothing_and_any_change_goes_through_every_check(ledger):
    """Every Node's resume asks the ledger to register it again: one that is registered as it is gets its record
    without a write transaction; a change of any registered field, another owner, or a withdrawn consent takes the
    checked path (and a stranger is still refused)."""
    await victim_grid(ledger)
    statements: list[str] = []
    listen = lambda _conn, _cursor, statement, *_: statements.append(statement.upper())  # noqa: E731
    sa.event.listen(ledger.engine.sync_engine, "before_cursor_execute", listen)
    args = dict(name="node1", owner=VICTIM, farm="freefarm", resources=NODE, country="BE", city="Ghent",
                certified=False, public_key=NODE_KEY.public_key, now=5)
    try:
        before = await ledger.observe_node(name="node1")
        again = await ledger.ensure_node(**args)
        assert again == before and not again.created
        writing = ("UPDATE ", "INSERT ", "DELETE ", "IMMEDIATE", "PG_ADVISORY_XACT_LOCK")  # a write, or the write lock
        assert statements and not [s for s in statements if any(w in s for w in writing)]
        statements.clear()
        moved = await ledger.ensure_node(**{**args, "city": "Brussels"})
        assert moved.city == "Brussels" and [s for s in statements if s.startswith("UPDATE NODES")]
        with pytest.raises(errors.NameTaken):
            await ledger.ensure_node(**{**args, "owner": ATTACKER})
        with pytest.raises(errors.Conflict):  # a node's farm cannot change, even when it is asked as it was before
            await ledger.ensure_farm(name="otherfarm", owner=VICTIM, owner_key=FARMER.public_key,
                                     payout_account="farmer", certified=False, dedicated=False, public_ips=0)
            await ledger.ensure_node(**{**args, "city": "Brussels", "farm": "otherfarm"})
    finally:
        sa.event.remove(ledger.engine.sync_engine, "before_cursor_execute", listen)


async def test_registering_a_farm_again_as_it_is_writes_nothing_and_any_change_goes_through_every_check(ledger):
    """As for nodes: every Farm's resume asks the ledger to register it again (at a restart 50 farms each waited
    ~11 s for the write lock behind everything else): one registered as it is is answered from a read."""
    await victim_grid(ledger)
    statements: list[str] = []
    listen = lambda _conn, _cursor, statement, *_: statements.append(statement.upper())  # noqa: E731
    sa.event.listen(ledger.engine.sync_engine, "before_cursor_execute", listen)
    args = dict(name="freefarm", owner=VICTIM, owner_key=FARMER.public_key, payout_account="farmer", certified=False,
                dedicated=False, public_ips=2)
    try:
        before = await ledger.observe_farm(name="freefarm")
        again = await ledger.ensure_farm(**args)
        assert again == before and not again.created
        writing = ("UPDATE ", "INSERT ", "DELETE ", "IMMEDIATE", "PG_ADVISORY_XACT_LOCK")
        assert statements and not [s for s in statements if any(w in s for w in writing)]
        for change in ({"public_ips": 3}, {"certified": True}, {"dedicated": True}, {"payout_account": "other"},
                       {"owner_key": ALICE.public_key}):
            statements.clear()
            changed = await ledger.ensure_farm(**{**args, **change})
            assert [s for s in statements if s.startswith("UPDATE FARMS")], change
            assert changed == await ledger.observe_farm(name="freefarm")
        with pytest.raises(errors.NameTaken):
            await ledger.ensure_farm(**{**args, "owner": ATTACKER})
        assert (await ledger.observe_farm(name="freefarm")).owner == VICTIM
    finally:
        sa.event.remove(ledger.engine.sync_engine, "before_cursor_execute", listen)


async def test_concurrent_registrations_share_one_write_and_each_is_checked_against_the_ones_before_it(ledger):
    """Nodes registered at once (a burst of Node objects, every Node resuming after a restart) are one batch: one
    read, one write transaction, one insert for all the new ones. Inside the batch each is checked as if the earlier
    ones had committed: a second object's claim on a name one of them just took, or on its key, is refused alone."""
    await victim_grid(ledger)
    keys = [identity.KeyPair.generate() for _ in range(6)]
    statements: list[str] = []
    listen = lambda _conn, _cursor, statement, *_: statements.append(statement.upper())  # noqa: E731
    sa.event.listen(ledger.engine.sync_engine, "before_cursor_execute", listen)

    def node(name: str, key: identity.KeyPair, owner: records.Owner = VICTIM, **more: object):
        return ledger.ensure_node(**{**dict(name=name, owner=owner, farm="freefarm", resources=NODE, country="BE",
                                            city="Ghent", certified=False, public_key=key.public_key, now=7), **more})
    try:
        batches = ledger._registrations.batches
        answers = await asyncio.gather(
            node("n1", keys[0]), node("n2", keys[1]), node("n3", keys[2]),
            node("n1", keys[3], ATTACKER),  # n1 is taken by the first, in this very batch
            node("n4", keys[1]),  # n2's key
            node("n5", keys[4], ATTACKER),  # freefarm is team-a's, and its owner signed no consent
            node("node1", keys[5], city="Brussels"),  # the registered node changes its key and city
            node("n6", NODE_KEY),  # node1's old key: free again once node1 let go of it earlier in the batch
            return_exceptions=True)
        assert ledger._registrations.batches == batches + 1
        assert [type(a).__name__ for a in answers] == ["Node", "Node", "Node", "NameTaken", "NameTaken",
                                                       "NotAuthorized", "Node", "Node"]
        assert [a.created for a in answers if isinstance(a, records.Node)] == [True, True, True, False, True]
        assert len([s for s in statements if s.startswith("INSERT INTO NODES")]) == 1
        assert sum(s.startswith("BEGIN IMMEDIATE") or "PG_ADVISORY_XACT_LOCK" in s for s in statements) <= 1
        for a in answers:
            if isinstance(a, records.Node):
                assert await ledger.observe_node(name=a.name) == dataclasses.replace(a, created=False)
        assert (await ledger.observe_node(name="n1")).owner == VICTIM
        assert (await ledger.observe_node(name="node1")).public_key == keys[5].public_key
        assert await ledger.observe_node(name="n4") is None and await ledger.observe_node(name="n5") is None
        statements.clear()
        again = await asyncio.gather(node("n1", keys[0]), node("n2", keys[1]), node("n6", NODE_KEY))
        assert not any(a.created for a in again)
        writing = ("UPDATE ", "INSERT ", "DELETE ", "IMMEDIATE", "PG_ADVISORY_XACT_LOCK")
        assert statements and not [s for s in statements if any(w in s for w in writing)]
    finally:
        sa.event.remove(ledger.engine.sync_engine, "before_cursor_execute", listen)


async def test_the_same_node_twice_in_one_batch_is_created_once_and_a_shared_key_stays_refused(ledger):
    """(Review of the registration batch.) The second registration of a node in one batch finds the first one's, as
    it would have found a committed row. On a ledger migrated with two nodes on one key (schema 6 then leaves out
    one_node_per_key and the code refuses the key), one sharer moving to another key leaves the key the other's:
    a new node of another namespace never gets it."""
    await victim_grid(ledger)  # node1 holds NODE_KEY
    await ledger.ensure_farm(name="evilfarm", owner=ATTACKER, owner_key=FARMER.public_key, payout_account="evil",
                             certified=False, dedicated=False, public_ips=0)

    def node(name: str, key: identity.KeyPair, owner: records.Owner = VICTIM, farm: str = "freefarm"):
        return ledger.ensure_node(name=name, owner=owner, farm=farm, resources=NODE, country="BE", city="Ghent",
                                  certified=False, public_key=key.public_key, now=7)
    k, kb, k2 = (identity.KeyPair.generate() for _ in range(3))
    first, second = await asyncio.gather(node("dup", k), node("dup", k))
    assert (first.created, second.created) == (True, False) and first.id == second.id
    await node("nb", kb)
    async with ledger._tx() as conn:  # the state a migrated ledger may be in
        await conn.execute(sa.text("DROP INDEX one_node_per_key"))
        await conn.execute(schema.nodes.update().where(schema.nodes.c.name == "nb").values(
            public_key=NODE_KEY.public_key))
    moved, evil = await asyncio.gather(node("nb", k2), node("evil", NODE_KEY, ATTACKER, "evilfarm"),
                                       return_exceptions=True)
    assert isinstance(moved, records.Node) and isinstance(evil, errors.NameTaken)


async def test_a_node_cannot_shrink_below_what_its_live_contracts_reserve(ledger):
    """Registering node1 again smaller than its deployments reserve is refused and changes nothing; once the
    contract is closed, it may shrink (what a node carries is summed over its live contracts only)."""
    await victim_grid(ledger)
    args = dict(name="node1", owner=VICTIM, farm="freefarm", country="BE", city="Ghent", certified=False,
                public_key=NODE_KEY.public_key, now=NOW)
    await ledger.open_contract(key="team-a/big", owner_uid="ub", proof=key_proof(ALICE, "team-a"),
                               request=scheduling.Request(resources=Resources(cru=6, mru=8, sru=100)), now=NOW)
    smaller = Resources(cru=4, mru=32, sru=1000, hru=4000)
    with pytest.raises(errors.Conflict, match="cannot shrink"):
        await ledger.ensure_node(**args, resources=smaller)
    assert (await ledger.observe_node(name="node1")).resources == NODE
    await ledger.close_contract(key="team-a/big", owner_uid="ub", now=NOW + 60, reason="CanceledByUser")
    assert (await ledger.ensure_node(**args, resources=smaller)).resources == smaller


async def test_a_registration_the_database_refuses_fails_alone_and_not_the_batch_it_came_in(ledger):
    """The batch's transaction is the database's to refuse (PostgreSQL refuses a city longer than its column; SQLite
    keeps it): then each node is written in a transaction of its own, and only the refused one fails."""
    await victim_grid(ledger)
    keys = [identity.KeyPair.generate() for _ in range(3)]
    args = dict(owner=VICTIM, farm="freefarm", resources=NODE, country="BE", certified=False, now=7)
    answers = await asyncio.gather(
        ledger.ensure_node(name="m1", city="Ghent", public_key=keys[0].public_key, **args),
        ledger.ensure_node(name="m2", city="G" * 100, public_key=keys[1].public_key, **args),
        ledger.ensure_node(name="m3", city="Ghent", public_key=keys[2].public_key, **args),
        return_exceptions=True)
    assert isinstance(answers[0], records.Node) and isinstance(answers[2], records.Node)
    assert await ledger.observe_node(name="m1") is not None and await ledger.observe_node(name="m3") is not None
    if ledger.is_sqlite:
        assert isinstance(answers[1], records.Node)
    else:
        assert isinstance(answers[1], errors.LedgerError) and await ledger.observe_node(name="m2") is None


async def test_a_placement_batch_checks_every_payer_on_two_reads_and_answers_each_deployment_alone(ledger):
    """Deployments placed together (one batch) showing many payers' proofs, good and bad: each gets its own answer,
    exactly as alone (test_only_a_proven_twin_pays), and the accounts and revoked grants are read once for the batch,
    however many payers it shows."""
    funded = sum((await victim_grid(ledger)).values())
    ns = "team-b"
    revoked = grant("bob", BOB, ns)
    await ledger.open_contract(key=f"{ns}/first", owner_uid="u-first", proof=revoked, request=REQ, now=NOW)
    await ledger.revoke_grant(account="bob", signature=revoked.signature, now=NOW)
    shown = {
        "alice": (grant("alice", ALICE, ns), None),
        "alice-again": (grant("alice", ALICE, ns), None),  # the same proof twice: checked once, both open
        "mallory-by-key": (key_proof(MALLORY, ns), None),
        "bob-revoked": (revoked, errors.NotAuthorized),
        "bob-signed-by-mallory": (grant("bob", MALLORY, ns), errors.NotAuthorized),
        "bare": (records.PayerProof(kind="grant", namespace=ns, account="alice"), errors.NotAuthorized),
        "other-namespace": (grant("alice", ALICE, "team-a"), errors.NotAuthorized),
        "no-such-account": (grant("nobody", ALICE, ns), errors.NotFound),
        "unknown-key": (key_proof(identity.KeyPair.generate(), ns), errors.NotFound),
        "payout-account": (grant("team-a/farmer", MALLORY, ns), errors.NotAuthorized),
    }
    statements: list[str] = []
    listen = lambda _conn, _cursor, statement, *_: statements.append(" ".join(statement.upper().split()))  # noqa: E731
    sa.event.listen(ledger.engine.sync_engine, "before_cursor_execute", listen)
    batches = ledger._placements.batches
    try:
        answers = await asyncio.gather(*(ledger.open_contract(key=f"{ns}/{name}", owner_uid=f"u-{name}", proof=proof,
                                                              request=REQ, now=NOW + 60)
                                         for name, (proof, _) in shown.items()), return_exceptions=True)
    finally:
        sa.event.remove(ledger.engine.sync_engine, "before_cursor_execute", listen)
    assert ledger._placements.batches == batches + 1  # all of them in one batch
    for (name, (_, refused)), answer in zip(shown.items(), answers, strict=True):
        if refused is None:
            assert isinstance(answer, records.Contract) and answer.state == "Created", name
        else:
            assert type(answer) is refused, (name, answer)
            assert await ledger.observe_contract(key=f"{ns}/{name}") is None, name
    assert answers[2].payer == "mallory" and answers[2].proof == "key" and answers[0].payer == "alice"
    assert len([s for s in statements if " FROM ACCOUNTS WHERE" in s and "ACCOUNTS.NAME IN" in s]) == 1
    assert len([s for s in statements if " FROM REVOKED_GRANTS" in s]) == 1
    await conserved(ledger, funded)
