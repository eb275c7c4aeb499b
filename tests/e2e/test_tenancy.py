"""Tenants cannot touch each other (design.md "Trust model"), end to end: the real operator against the strict
API emulator, a victim in namespace team-a and an attacker in team-b with only namespace rights. After every
scenario the ledger conserves money (funding + minted = all balances, to the unit)."""

from __future__ import annotations

import pytest

from e2e.conftest import START, OperatorThread, condition
from e2e.objects import events, twin_account
from e2e.tenants import conserved, create, deployment, farm, get, gone_by_hand, node, patch, reason
from polling import eventually
from tfgrid_operator.domain import identity, money, names
from tfgrid_operator.handlers import tenancy
from tfgrid_operator.handlers.tenancy import CONSENT_ANNOTATION

pytestmark = pytest.mark.e2e

A, B = "team-a", "team-b"
FARMER, MALLORY = identity.KeyPair.generate(), identity.KeyPair.generate()
H = 3600
TFT = money.UNITS_PER_TFT


async def victim(apiserver, ledger, nodes=("node1",)) -> dict[str, identity.KeyPair]:
    keys = {n: identity.KeyPair.generate() for n in nodes}
    await create(apiserver, A, farm("freefarm", FARMER, "farmer"), *(node(n, "freefarm", k) for n, k in keys.items()))
    for n in nodes:
        await reason(apiserver, A, "nodes", n, "Available")
    return keys


async def test_a_second_claimant_of_a_farm_or_node_name_gets_name_taken_and_changes_nothing(apiserver, operator,
                                                                                           ledger):
    await victim(apiserver, ledger)
    farm_before, node_before = await ledger.observe_farm(name="freefarm"), await ledger.observe_node(name="node1")
    # the attacker's own farm is fine; its namesakes of the victim's farm and node are not
    await create(apiserver, B, farm("evilfarm", MALLORY, "evil-payout"))
    await reason(apiserver, B, "farms", "evilfarm", "Available")
    await create(apiserver, B, farm("freefarm", MALLORY, "mallory-payout", public_ips=64),
                 node("node1", "evilfarm", identity.KeyPair.generate(), cru=1024))
    for plural, name in (("farms", "freefarm"), ("nodes", "node1")):
        taken = await reason(apiserver, B, plural, name, "NameTaken")
        assert condition(taken)["status"] == "False" and "first come, first served" in condition(taken)["message"]
        assert "farmId" not in taken["status"] and "nodeId" not in taken["status"]  # nothing of the victim's shows
        assert A not in str(taken["status"])  # nor the victim's namespace
    assert events(apiserver, "NameTaken")
    # the attacker writes its loser's status as the victim's record: the operator writes its own report back
    await patch(apiserver, B, "farms", "freefarm", {"status": {"farmId": farm_before.id, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Available", "message": "registered",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}, "/status")
    await eventually(lambda: condition(get(apiserver, B, "farms", "freefarm"))["reason"] == "NameTaken"
                     and "farmId" not in get(apiserver, B, "farms", "freefarm")["status"], what="status written back")
    # the attacker deletes its namesakes: the victim's records stay, untouched
    for plural, name in (("nodes", "node1"), ("farms", "freefarm")):
        resp = await apiserver.delete(f"/apis/grid.threefold.io/v1alpha1/namespaces/{B}/{plural}/{name}")
        assert resp.status in (200, 202)
        await eventually(lambda p=plural, n=name: get(apiserver, B, p, n) is None, what=f"{B}/{name} deleted")
    assert await ledger.observe_farm(name="freefarm") == farm_before and farm_before.payout_account == "team-a/farmer"
    assert await ledger.observe_node(name="node1") == node_before and node_before.state == "Active"
    assert condition(get(apiserver, A, "nodes", "node1"))["reason"] == "Available"
    assert get(apiserver, A, "farms", "freefarm")["status"]["farmId"] == farm_before.id
    await conserved(ledger, 0)


async def test_a_node_joins_another_namespaces_farm_only_with_the_farm_owners_signed_consent(apiserver, operator,
                                                                                            ledger):
    await victim(apiserver, ledger)
    key = identity.KeyPair.generate()
    await create(apiserver, B, node("sneaky", "freefarm", key))
    waiting = await reason(apiserver, B, "nodes", "sneaky", "FarmConsentMissing")
    assert "has not signed consent" in condition(waiting)["message"]
    forged = MALLORY.sign(names.FARM_CONSENT, names.consent_payload(farm="freefarm", namespace=B, node="sneaky",
                                                                   node_key=key.public_key))
    await patch(apiserver, B, "nodes", "sneaky", {"metadata": {"annotations": {CONSENT_ANNOTATION: forged}}})
    assert await ledger.observe_node(name="sneaky") is None
    # the farm's owner agrees (tfgrid-operator farm-consent): the loop retries and the node joins
    consent = FARMER.sign(names.FARM_CONSENT, names.consent_payload(farm="freefarm", namespace=B, node="sneaky",
                                                                    node_key=key.public_key))
    await patch(apiserver, B, "nodes", "sneaky", {"metadata": {"annotations": {CONSENT_ANNOTATION: consent}}})
    await reason(apiserver, B, "nodes", "sneaky", "Available")
    joined = await ledger.observe_node(name="sneaky")
    assert joined.farm == "freefarm" and joined.owner.namespace == B
    await conserved(ledger, 0)


async def test_only_the_payers_key_spends_its_money(apiserver, operator, ledger, grid_clock):
    await victim(apiserver, ledger, nodes=("node1", "node2"))
    funded = 0
    for account, ns in (("alice", A), ("mallory", B), ("mallory2", B)):
        await twin_account(ledger, apiserver, account, namespace=ns)
        await ledger.fund(name=account, amount=100 * TFT, now=grid_clock.now())
        funded += 100 * TFT
    await create(apiserver, A, deployment("web", "alice"))
    await reason(apiserver, A, "deployments", "web", "Available")
    # the attacker names the Secret alice's grant is in, which the operator read for web and keeps from its watch of
    # Secrets: what it reads is team-b's Secret of that name, which does not exist
    await create(apiserver, B, deployment("theirs", {"account": "alice", "grantRef": {"name": "alice-grant"}}))
    d = await reason(apiserver, B, "deployments", "theirs", "PayerNotFound")
    assert condition(d)["message"] == "secret 'alice-grant' does not exist" and "contractId" not in d["status"]
    assert (await apiserver.delete(f"/apis/grid.threefold.io/v1alpha1/namespaces/{B}/deployments/theirs")).status == 200
    # the attacker names alice, the foundation, the staking pool, the farm's payout: nothing is opened
    alices_grant = apiserver.read("secrets", A, "alice-grant")
    resp = await apiserver.post(f"/api/v1/namespaces/{B}/secrets", json={  # a copy of alice's grant, leaked
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-grant"}, "data": alices_grant["data"]})
    assert resp.status == 201
    forged = names.Grant("alice", B, START + 86400).signed(MALLORY)  # a grant for team-b, signed by the wrong key
    resp = await apiserver.post(f"/api/v1/namespaces/{B}/secrets", json=tenancy.grant_secret(forged, "forged"))
    assert resp.status == 201
    attacks = {
        "bare": {"account": "alice"},
        "copied": {"account": "alice", "grantRef": {"name": "alice-grant"}},
        "forged": {"account": "alice", "grantRef": {"name": "forged"}},
        "foundation": {"account": "foundation"},
        "staking": {"account": "staking-pool", "grantRef": {"name": "forged"}},
        "payout": {"account": "farmer"},  # the farm's payout name: no twin has it
    }
    for name, payer in attacks.items():
        await create(apiserver, B, deployment(name, payer))
    for name in attacks:
        d = await reason(apiserver, B, "deployments", name, "PayerNotFound" if name == "payout" else "PayerNotAuthorized")
        assert "contractId" not in d["status"]
        assert await ledger.observe_contract(key=f"{B}/{name}") is None
    # the farm's payout account itself ("team-a/farmer") is no name a payer may have: refused at admission
    refused = await apiserver.post(f"/apis/grid.threefold.io/v1alpha1/namespaces/{B}/deployments",
                                   json=deployment("payout2", {"account": "team-a/farmer"}))
    assert refused.status == 422, await refused.text()
    # the attacker's own, proven deployment; then it writes its status as it likes: the operator writes it back
    await create(apiserver, B, deployment("mine", "mallory"))
    mine = await reason(apiserver, B, "deployments", "mine", "Available")
    victim_contract = get(apiserver, A, "deployments", "web")["status"]["contractId"]
    forged_ready = dict(condition(mine), reason="InvalidSpec", status="False")
    await patch(apiserver, B, "deployments", "mine", {"status": {
        "contractId": victim_contract, "billedTotal": 0, "node": "elsewhere", "conditions": [forged_ready]}}, "/status")
    contract = await ledger.observe_contract(key=f"{B}/mine")
    await eventually(lambda: get(apiserver, B, "deployments", "mine")["status"]["contractId"] == contract.id
                     and condition(get(apiserver, B, "deployments", "mine"))["reason"] == "Available"
                     and get(apiserver, B, "deployments", "mine")["status"]["node"] == contract.node,
                     what="user-written status overwritten")
    # changing the payer re-proves and re-binds from that second on; an unproven change is refused, visibly
    grid_clock.set(START + H // 2)
    await patch(apiserver, B, "deployments", "mine", {"spec": {"payer": {"account": "mallory2", "grantRef": {
        "name": "mallory2-grant", "key": "grant"}}}})
    await eventually(lambda: ledger.observe_contract(key=f"{B}/mine"), what="contract readable")
    await eventually(lambda: _payer_is(ledger, f"{B}/mine", "mallory2"), what="re-bound to mallory2")
    await patch(apiserver, B, "deployments", "mine", {"spec": {"payer": {"account": "alice"}}})
    await reason(apiserver, B, "deployments", "mine", "PayerNotAuthorized")
    assert (await ledger.observe_contract(key=f"{B}/mine")).payer == "mallory2"
    grid_clock.set(START + 2 * H)
    # both ended hours billed (each period is its own transaction: reading balances and bills between the two
    # would see one hour in the balance and two in the bills)
    await eventually(lambda: _billed_through(ledger, (START + 2 * H) // H), what="both hours billed")
    await eventually(lambda: _billed_to(ledger, "mallory", "mallory2"), what="both payers billed")
    assert sum(c.reserve for c in (await ledger.contract_summaries()).values()) > 0  # §2.7: held for the payouts
    assert (await ledger.get_account(name="alice")).balance < 100 * TFT  # alice paid for web, and only web
    alice = (await ledger.get_account(name="alice")).balance
    paid = sum(b.paid for b in await ledger.bills(key=f"{A}/web"))  # across moves: the nodes stopped reporting
    assert alice == 100 * TFT - paid
    await conserved(ledger, funded)


async def _payer_is(ledger, key: str, payer: str) -> bool:
    c = await ledger.observe_contract(key=key)
    return c is not None and c.payer == payer


async def _billed_through(ledger, period: int) -> bool:
    """Every billing period before ``period`` is billed (the bill loop's watermark is the next one to bill)."""
    return await ledger.watermark(name="bill", default=0) >= period


async def _billed_to(ledger, *accounts: str) -> bool:
    balances = [(await ledger.get_account(name=a)).balance for a in accounts]
    return all(b < 100 * TFT for b in balances)


async def test_contracts_whose_object_is_gone_are_closed_with_a_final_bill_and_never_inherited(
        apiserver, operator, ledger, grid_clock):
    await victim(apiserver, ledger, nodes=("node1", "node2"))
    await twin_account(ledger, apiserver, "alice", namespace=A)
    await ledger.fund(name="alice", amount=100 * TFT, now=grid_clock.now())
    await create(apiserver, A, deployment("web", "alice"), deployment("db", "alice"))
    for name in ("web", "db"):
        await reason(apiserver, A, "deployments", name, "Available")
    first_web = await ledger.observe_contract(key=f"{A}/web")
    # a finalizer removed by hand while the operator runs: the object vanishes without our delete handler
    grid_clock.set(START + H // 4)
    await gone_by_hand(apiserver, A, "deployments", "web")
    closed = await eventually(lambda: _closed(ledger, f"{A}/web"), what="web's orphan closed")
    assert closed.deleted_reason == "Orphaned" and closed.deleted_at == START + H // 4 and closed.billed_total > 0
    # deleted while the operator was down: closed when it resumes
    await operator.stop()
    grid_clock.set(START + H // 2)
    await gone_by_hand(apiserver, A, "deployments", "db")
    restarted = OperatorThread(operator.ledger_url, grid_clock)
    restarted.start()
    try:
        closed = await eventually(lambda: _closed(ledger, f"{A}/db"), what="db's orphan closed on resume")
        assert closed.deleted_reason == "Orphaned" and closed.deleted_at == START + H // 2
        # a new object of the same name gets a contract of its own
        await create(apiserver, A, deployment("web", "alice"))
        await reason(apiserver, A, "deployments", "web", "Available")
        second_web = await ledger.observe_contract(key=f"{A}/web")
        assert second_web.id != first_web.id and second_web.created_at == START + H // 2
        assert get(apiserver, A, "deployments", "web")["status"]["contractId"] == second_web.id
        assert get(apiserver, A, "deployments", "web")["status"]["billedTotal"] == 0
    finally:
        await restarted.stop()
    await conserved(ledger, 100 * TFT)


async def _closed(ledger, key: str):
    c = await ledger.observe_contract(key=key)
    return c if c is not None and c.state == "Deleted" else None


async def test_a_grant_ends_its_contracts_unless_renewed_in_time(apiserver, operator, ledger, grid_clock):
    """A grant is bounded: when it ends, its contracts are closed with a final bill (GrantExpired). A tenant who
    applies a renewed grant in its last day keeps them: the operator reads the grant again then."""
    await victim(apiserver, ledger, nodes=("node1", "node2"))
    carol = identity.KeyPair.generate()
    await ledger.ensure_account(name="carol", public_key=carol.public_key)
    await ledger.fund(name="carol", amount=100 * TFT, now=grid_clock.now())
    for secret in ("short-grant", "renewed-grant"):
        grant = names.Grant("carol", A, START + 3 * H).signed(carol)
        assert (await apiserver.post(f"/api/v1/namespaces/{A}/secrets",
                                     json=tenancy.grant_secret(grant, secret))).status == 201
    payer = {"account": "carol", "grantRef": {"name": "short-grant"}}
    await create(apiserver, A, deployment("short", payer), deployment("kept", {**payer, "grantRef": {
        "name": "renewed-grant", "key": "grant"}}))
    for name in ("short", "kept"):
        await reason(apiserver, A, "deployments", name, "Available")
    assert (await ledger.observe_contract(key=f"{A}/short")).proof_until == START + 3 * H
    renewed = tenancy.grant_secret(names.Grant("carol", A, START + 60 * 86400).signed(carol), "renewed-grant")
    resp = await apiserver.patch(f"/api/v1/namespaces/{A}/secrets/renewed-grant", json={"data": renewed["data"]},
                                 headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status == 200, await resp.text()
    grid_clock.set(START + 2 * H)  # within the grant's last day, an hour after the last look at it
    await eventually(lambda: _until(ledger, f"{A}/kept", START + 60 * 86400), what="the renewed grant read")
    grid_clock.set(START + 3 * H)
    closed = await eventually(lambda: _closed(ledger, f"{A}/short"), what="the unrenewed contract closed")
    assert closed.deleted_reason == "GrantExpired" and closed.deleted_at == START + 3 * H and closed.billed_total > 0
    assert max(b.until for b in await ledger.bills(key=f"{A}/short")) == START + 3 * H  # not a second past it
    assert (await ledger.observe_contract(key=f"{A}/kept")).state == "Created"
    await eventually(lambda: (condition(get(apiserver, A, "deployments", "short"))["status"],
                              condition(get(apiserver, A, "deployments", "short"))["reason"]) == ("False", "GrantExpired"),
                     what="short's status says its grant ended")
    # carol withdraws the renewed grant (ledger revoke-grant): kept closes now, the tenant cannot bring it back
    grid_clock.set(START + 4 * H)
    closed = await ledger.revoke_grant(account="carol", signature=names.Grant(
        "carol", A, START + 60 * 86400).signed(carol).signature, now=START + 4 * H)
    assert [(c.key, c.deleted_reason) for c in closed] == [(f"{A}/kept", "GrantRevoked")]
    await eventually(lambda: get(apiserver, A, "deployments", "kept")["status"].get("contractState") == "Deleted"
                     and condition(get(apiserver, A, "deployments", "kept"))["status"] == "False",
                     what="kept's status says it was revoked")
    await conserved(ledger, 100 * TFT)


async def _until(ledger, key: str, until: int) -> bool:
    c = await ledger.observe_contract(key=key)
    return c is not None and c.proof_until == until
