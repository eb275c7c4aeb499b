"""A second independent review of issue 13's trust model (after schema 6), on SQLite and PostgreSQL: attacks with
only namespace rights (team-b against team-a), and by a farmer holding its own farm and node keys, that the earlier
tests did not try. Each one failed before its fix. Every money scenario ends with the conservation audit
(funding + minted = balances + reserves; billed = paid + owed, to the unit).

* A self-healing move relocates a contract as it is: a rent reserves (and pays for) its whole new node, never the
  few cores its spec names; a spec grown while the payer owes (the resize was refused) never grows the contract
  through a move, nor adds public IPs to it.
* A council certification certifies the capacity the council saw: held back and applied after the node's agent
  attested a bigger machine, it certifies nothing.
* The payout account NAMESPACE/NAME is injective: namespace "a" naming "b-c" and namespace "a-b" naming "c" (or
  any other pair) never share an account, and none is a name a twin may hold.
* An uptime report past int64 (signed by the farmer's own node key) is refused as a bad request, never a database
  error.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ledger_setup
from ledger_audit import conserved
from tfgrid_operator.backend import errors, records
from tfgrid_operator.backend.sql.engine import payout_account_name
from tfgrid_operator.domain import identity, money, names, pricing, scheduling
from tfgrid_operator.domain.units import Resources

H = 3600
TFT = money.UNITS_PER_TFT
SMALL = Resources(cru=2, mru=4, sru=50)
BIGGER = Resources(cru=6, mru=16, sru=400)
NODE = Resources(cru=8, mru=32, sru=1000)
FARMER, ALICE, MALLORY, COUNCIL = (identity.KeyPair.generate() for _ in range(4))
A, B = "team-a", "team-b"
FARM_OWNER = records.Owner(A, "uid-farm")


@pytest.fixture
async def ledger(ledger_url):
    lg = await ledger_setup.short_grace_ledger(ledger_url)
    yield lg
    await lg.close()


async def grid(ledger, sizes: dict[str, Resources] | None = None) -> None:
    await ledger.ensure_farm(name="farm1", owner=FARM_OWNER, owner_key=FARMER.public_key, payout_account="farmer",
                             certified=False, dedicated=False, public_ips=4)
    for n, size in (sizes or {"n0": NODE, "n1": NODE}).items():
        await ledger.ensure_node(name=n, owner=FARM_OWNER, farm="farm1", resources=size, country="BE", city="Ghent",
                                 certified=False, public_key=identity.KeyPair.generate().public_key, now=0)
    for name, key in (("alice", ALICE), ("mallory", MALLORY)):
        await ledger.ensure_account(name=name, public_key=key.public_key)


def by_key(key: identity.KeyPair, namespace: str) -> records.PayerProof:
    return records.PayerProof(kind="key", namespace=namespace, public_key=key.public_key)


def rent_per_hour(ledger, node: Resources, balance: int) -> int:
    return pricing.Quote.of(resources=node, public_ips=0, seconds=H, certified=False, dedicated_node=node,
                            policy=ledger.config.pricing_policy, price=ledger.config.tft_price).bill(
        balance=balance).amount


# ---------------------------------------------------------------- a move relocates the contract as it is
async def test_a_moved_rent_reserves_and_pays_for_its_whole_new_node(ledger):
    """team-b rents a whole node naming 1 core in its spec; its node goes down and self-healing moves the rent.
    Before the fix the new contract reserved the spec's 1 core: the whole node rented, the price of 1 core."""
    big = Resources(cru=16, mru=64, sru=2000)
    await grid(ledger, {"n0": NODE, "n1": big})
    await ledger.fund(name="mallory", amount=10_000 * TFT, now=0)
    spec = scheduling.Request(resources=Resources(cru=1, mru=1), dedicated=True)
    rent = await ledger.open_contract(key=f"{B}/rent", owner_uid="uid-rent", proof=by_key(MALLORY, B), now=0,
                                      request=scheduling.Request(resources=spec.resources, dedicated=True, node="n0"))
    assert rent.resources == NODE and rent.dedicated
    moved = await ledger.move_contract(key=f"{B}/rent", now=H, request=scheduling.Request(
        resources=spec.resources, dedicated=True, exclude=frozenset({"n0"})))
    assert moved.created and moved.node == "n1" and moved.dedicated
    assert moved.resources == big  # the whole new node, as placement reserves a rent
    await ledger.bill_period(period=0, now=H)
    await ledger.bill_period(period=1, now=2 * H)
    [second] = [b for b in await ledger.bills(key=f"{B}/rent") if b.contract_id == moved.id]
    assert second.amount == rent_per_hour(ledger, big, second.receipt["balance"])  # billed for the node it rents, not for 1 core
    await conserved(ledger, 10_000 * TFT)


async def test_a_move_never_grows_a_contract_its_payer_could_not_grow(ledger):
    """alice is in grace on team-a/web: a resize up is refused (§2.4), and so is one public IP. Her spec says
    the bigger size all the same; her node goes down. Before the fix the move placed the spec's size and IP: the
    contract grew while its payer owed."""
    await grid(ledger)
    await ledger.open_contract(key=f"{A}/web", owner_uid="uid-1", proof=by_key(ALICE, A), now=0,
                               request=scheduling.Request(resources=SMALL, node="n0"))
    await ledger.bill_period(period=0, now=H)
    web = await ledger.observe_contract(key=f"{A}/web")
    assert web.state == "GracePeriod"
    with pytest.raises(errors.Conflict, match="grace period"):
        await ledger.resize_contract(key=f"{A}/web", owner_uid="uid-1", resources=BIGGER, public_ips=1, now=H + 60)
    moved = await ledger.move_contract(key=f"{A}/web", now=H + 120, request=scheduling.Request(
        resources=BIGGER, public_ips=1, exclude=frozenset({"n0"})))
    assert moved.created and moved.node == "n1"
    assert (moved.resources, moved.public_ips) == (SMALL, 0)  # moved as it is; a resize is the handler's, later
    assert moved.state == "GracePeriod" and moved.overdraft >= web.overdraft
    assert (await ledger.get_account(name="alice")).debt == moved.overdraft
    await conserved(ledger, 0)


async def test_a_move_of_a_healthy_contract_keeps_its_size_too(ledger):
    """A move is no resize (nor a rent): the payer agreed to what the contract holds; the handler resizes afterwards (and the
    ledger checks that resize as any other: room, debt, grace)."""
    await grid(ledger)
    await ledger.fund(name="alice", amount=1000 * TFT, now=0)
    await ledger.open_contract(key=f"{A}/web", owner_uid="uid-1", proof=by_key(ALICE, A), now=0,
                               request=scheduling.Request(resources=SMALL, node="n0"))
    # the spec now also asks to rent a whole node: before the fix the move made it a rent priced on 2 cores
    moved = await ledger.move_contract(key=f"{A}/web", now=H // 2, request=scheduling.Request(
        resources=BIGGER, dedicated=True, exclude=frozenset({"n0"})))
    assert (moved.node, moved.resources, moved.dedicated) == ("n1", SMALL, False)
    grown = await ledger.resize_contract(key=f"{A}/web", owner_uid="uid-1", resources=BIGGER, public_ips=0, now=H)
    assert grown.resources == BIGGER and grown.id == moved.id
    await ledger.bill_period(period=0, now=H)
    await ledger.bill_period(period=1, now=2 * H)
    await conserved(ledger, 1000 * TFT)


# ---------------------------------------------------------------- a certification certifies what the council saw
async def test_a_held_back_certification_never_certifies_a_bigger_machine(ledger):
    """The farmer's node attests its real 8 cores; a council member checks the machine and signs its certification.
    The farmer holds the signed annotation back, has its agent attest a 64-core machine, then applies it. Before
    the fix the ledger certified whatever was attested when the certification arrived."""
    node_key = identity.KeyPair.generate()
    real = Resources(cru=8, mru=32, sru=1000, hru=4000)
    await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=node_key, resources=real)
    await ledger_setup.attest(ledger, node="n0", resources=real, ts=10, key=node_key)
    node_id = (await ledger.observe_node(name="n0")).id
    signed = ledger_setup.certification(node="n0", node_id=node_id, certified=True, ts=20, key=COUNCIL,
                                        resources=real)
    fake = Resources(cru=64, mru=256, sru=8000, hru=32000)
    await ledger_setup.attest(ledger, node="n0", resources=fake, ts=30, key=node_key)
    with pytest.raises(errors.BadSignature, match="capacity"):
        await ledger.certify_node(node="n0", certified=True, ts=20, member_key=COUNCIL.public_key,
                                  signature=signed, resources=real, council=frozenset({COUNCIL.public_key}), now=40)
    assert (await ledger.attestations())["n0"].certified is False
    # back on the machine the council saw, the same certification holds
    await ledger_setup.attest(ledger, node="n0", resources=real, ts=50, key=node_key)
    att = await ledger.certify_node(node="n0", certified=True, ts=20, member_key=COUNCIL.public_key, signature=signed,
                                    resources=real, council=frozenset({COUNCIL.public_key}), now=60)
    assert att.certified and att.resources == real


# ---------------------------------------------------------------- bounds
@pytest.mark.parametrize("uptime", [1 << 63, 1 << 70])
async def test_an_uptime_report_past_int64_is_a_bad_request(ledger, uptime):
    node_key = identity.KeyPair.generate()
    await ledger_setup.farm_and_node(ledger, owner_key=FARMER, node_key=node_key, resources=NODE)
    with pytest.raises(errors.InvalidRequest, match="uptime"):
        await ledger_setup.report_uptime(ledger, node="n0", ts=1000, uptime=uptime, key=node_key)
    assert await ledger_setup.report_uptime(ledger, node="n0", ts=1000, uptime=900, key=node_key) == 900


# ---------------------------------------------------------------- payout accounts are injective
LABEL = st.from_regex(names.DNS_LABEL_PATTERN, fullmatch=True).filter(lambda x: len(x) <= 63)
ACCOUNT = st.from_regex(names.ACCOUNT_PATTERN, fullmatch=True).filter(names.is_account_name)


@given(a=st.tuples(LABEL, ACCOUNT), b=st.tuples(LABEL, ACCOUNT))
def test_the_payout_account_of_a_namespace_and_name_is_theirs_alone(a, b):
    assert (payout_account_name(*a) == payout_account_name(*b)) == (a == b)
    assert not names.is_account_name(payout_account_name(*a))  # never a twin's name


async def test_namespaces_whose_names_run_into_each_other_get_payout_accounts_of_their_own(ledger):
    """namespace "a" naming "b-c" and namespace "a-b" naming "c": joined with a '-' they would meet; with the '/'
    (which neither a namespace nor an account name holds) they never do."""
    for ns, farm, payout in (("a", "fa", "b-c"), ("a-b", "fab", "c"), ("a", "fa2", "b.c")):
        await ledger.ensure_farm(name=farm, owner=records.Owner(ns, f"uid-{farm}"), owner_key=FARMER.public_key,
                                 payout_account=payout, certified=False, dedicated=False, public_ips=0)
    payouts = {f.name: f.payout_account for f in await ledger.list_farms()}
    assert payouts == {"fa": "a/b-c", "fab": "a-b/c", "fa2": "a/b.c"}
    assert len({(await ledger.get_account(name=p)).id for p in payouts.values()}) == 3
