"""The backend contract, once for every engine (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

import ledger_setup
from tfgrid_operator.backend import errors
from tfgrid_operator.backend.sql import engine as engine_module
from tfgrid_operator.domain import identity, money, pricing, scheduling, units
from tfgrid_operator.domain.units import Resources

OWNER = identity.KeyPair.generate()
NODE_KEYS = [identity.KeyPair.generate() for _ in range(16)]  # one key per node: a key is one node's (§1.3)
NODE_KEY = NODE_KEYS[0]  # node n0's
NODE = Resources(cru=8, mru=32, sru=1000, hru=4000)
SMALL = Resources(cru=2, mru=4, sru=50)
H = 3600
ALICE = identity.KeyPair.generate()  # the twin key of the account that pays
OWN = ledger_setup.OWN  # the objects (farms, nodes, deployments) these tests act as


def paid_by(key: identity.KeyPair = ALICE) -> dict:
    return ledger_setup.paid_by(key)


async def attest(ledger, node, resources=NODE, ts=0, key=None):
    key = key or NODE_KEYS[int(node[1:])]
    return await ledger_setup.attest(ledger, node=node, resources=resources, ts=ts, key=key)


async def grid(ledger, nodes=1, ips=2):
    await ledger.ensure_farm(owner=OWN, name="farm1", owner_key=OWNER.public_key, payout_account="farmer", certified=False,
                             dedicated=False, public_ips=ips)
    for i in range(nodes):
        await ledger.ensure_node(owner=OWN, name=f"n{i}", farm="farm1", resources=NODE, country="BE", city="Ghent",
                                 certified=False, public_key=NODE_KEYS[i].public_key, now=0)
        await attest(ledger, f"n{i}")
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)


async def test_accounts_fund_and_errors(ledger):
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)
    assert (await ledger.fund(name="alice", amount=5, now=0)).balance == 5
    with pytest.raises(errors.InvalidRequest):
        await ledger.fund(name="alice", amount=-1, now=0)
    with pytest.raises(errors.NotFound):
        await ledger.fund(name="bob", amount=1, now=0)
    assert (await ledger.get_account(name="alice")).balance == 5


async def test_account_found_by_its_twin_key(ledger):
    twin = identity.KeyPair.generate()
    await ledger.ensure_account(name="bob", public_key=twin.public_key)
    assert (await ledger.account_by_key(public_key=twin.public_key)).name == "bob"
    for unknown in (identity.KeyPair.generate().public_key, ""):
        with pytest.raises(errors.NotFound):
            await ledger.account_by_key(public_key=unknown)


async def test_farm_and_node_are_adopted_not_duplicated(ledger):
    await grid(ledger)
    again = await ledger.ensure_farm(owner=OWN, name="farm1", owner_key=OWNER.public_key, payout_account="farmer",
                                     certified=False, dedicated=False, public_ips=2)
    assert not again.created
    node = await ledger.ensure_node(owner=OWN, name="n0", farm="farm1", resources=NODE, country="BE", city="Ghent",
                                    certified=False, public_key=NODE_KEY.public_key, now=5)
    assert not node.created and len(await ledger.list_farms()) == 1


@pytest.mark.parametrize(("kwargs", "error"), [
    (dict(farm="nope"), errors.NotFound),
    (dict(resources=Resources(0, 1, 1, 1)), errors.InvalidRequest),
    (dict(public_key="not-a-key"), errors.InvalidRequest),
])
async def test_bad_node_requests_change_nothing(ledger, kwargs, error):
    await grid(ledger, nodes=0)
    args = dict(name="bad", owner=OWN, farm="farm1", resources=NODE, country="", city="", certified=False,
                public_key=NODE_KEYS[15].public_key, now=0) | kwargs
    with pytest.raises(error):
        await ledger.ensure_node(**args)
    assert await ledger.observe_node(name="bad") is None


async def test_uptime_reports_verified_and_replay_rejected(ledger):
    await grid(ledger)
    sig = NODE_KEY.sign(identity.UPTIME, {"node": "n0", "ts": 2400, "uptime": 9000})
    assert await ledger.record_uptime(node="n0", ts=2400, uptime=9000, signature=sig, now=2400) == 2400
    # the same report seen again (a watch restart) is counted once, silently, and read without the write lock
    statements: list[str] = []
    listen = lambda _conn, _cursor, statement, *_: statements.append(statement.upper())  # noqa: E731
    sa.event.listen(ledger.engine.sync_engine, "before_cursor_execute", listen)
    try:
        assert await ledger.record_uptime(node="n0", ts=2400, uptime=9000, signature=sig, now=2410) == 2400
        writing = ("UPDATE ", "INSERT ", "DELETE ", "IMMEDIATE", "PG_ADVISORY_XACT_LOCK")
        assert statements and not [s for s in statements if any(w in s for w in writing)]
    finally:
        sa.event.remove(ledger.engine.sync_engine, "before_cursor_execute", listen)
    with pytest.raises(errors.BadSignature):  # the same time, another signer: refused as before
        await ledger.record_uptime(node="n0", ts=2400, uptime=9000, signature=OWNER.sign(
            identity.UPTIME, {"node": "n0", "ts": 2400, "uptime": 9000}), now=2410)
    with pytest.raises(errors.NotFound):
        await ledger.record_uptime(node="n9", ts=2400, uptime=9000, signature=sig, now=2410)
    newer = NODE_KEY.sign(identity.UPTIME, {"node": "n0", "ts": 2450, "uptime": 9050})
    await ledger.record_uptime(node="n0", ts=2450, uptime=9050, signature=newer, now=2450)
    with pytest.raises(errors.Replayed):  # an older, validly signed report replayed later
        await ledger.record_uptime(node="n0", ts=2400, uptime=9000, signature=sig, now=2450)
    forged = OWNER.sign(identity.UPTIME, {"node": "n0", "ts": 4800, "uptime": 11400})
    with pytest.raises(errors.BadSignature):
        await ledger.record_uptime(node="n0", ts=4800, uptime=11400, signature=forged, now=4800)
    late = NODE_KEY.sign(identity.UPTIME, {"node": "n0", "ts": 4800, "uptime": 11400})
    with pytest.raises(errors.Replayed):
        await ledger.record_uptime(node="n0", ts=4800, uptime=11400, signature=late, now=4800 + 61)


async def test_placement_never_overbooks(ledger):
    await grid(ledger, nodes=1)
    req = scheduling.Request(resources=Resources(cru=3, mru=8, sru=200))
    placed = [await ledger.open_contract(key=f"ns/d{i}", **paid_by(), request=req, now=10) for i in range(2)]
    assert {c.node for c in placed} == {"n0"}
    with pytest.raises(errors.NoCapacity) as info:
        await ledger.open_contract(key="ns/d3", **paid_by(), request=req, now=10)
    assert info.value.constraint == "Capacity" and "cru" in info.value.message
    assert await ledger.observe_contract(key="ns/d3") is None


async def test_open_contract_is_idempotent_by_key(ledger):
    await grid(ledger)
    req = scheduling.Request(resources=SMALL)
    first = await ledger.open_contract(key="ns/d", **paid_by(), request=req, now=10)
    second = await ledger.open_contract(key="ns/d", **paid_by(), request=req, now=20)
    assert first.created and not second.created and first.id == second.id


async def test_billing_exact_idempotent_and_split(ledger):
    await grid(ledger)
    await ledger.fund(name="alice", amount=2000 * money.UNITS_PER_TFT, now=0)
    await ledger.open_contract(key="ns/d", **paid_by(), request=scheduling.Request(resources=SMALL, public_ips=1), now=0)
    report = await ledger.bill_period(period=0, now=H)
    # §2.6 worked example at the ledger's clamped TFT price (20 mUSD, §4.3): 152,500 units USD = 0.7625 TFT;
    # monthly 0.7625 × 720 = 549 TFT; 2000 / 549 = 3.64 months → Bronze ×0.7 → 0.53375 TFT.
    expected = pricing.Bill(seconds=H, cost_units_usd=152_500, gross=7_625_000,
                            discount=pricing.DiscountLevel.BRONZE, amount=5_337_500)
    assert (report.rows_written, report.amount) == (1, expected.amount)
    rerun = await ledger.bill_period(period=0, now=H + 5)
    assert (rerun.rows_written, rerun.skipped_existing) == (0, 1)
    alice = await ledger.get_account(name="alice")
    assert alice.balance == 2000 * money.UNITS_PER_TFT - expected.amount
    # §2.7 version B: the payment is reserved on the contract, paid out after 24 cycles or on deletion
    assert (await ledger.get_account(name="ns/farmer")).balance == 0
    assert (await ledger.observe_contract(key="ns/d")).reserve == expected.amount
    with pytest.raises(errors.InvalidRequest):
        await ledger.bill_period(period=5, now=H)


async def test_out_of_funds_grace_then_deleted_and_capacity_released(ledger):
    await grid(ledger)
    await ledger.fund(name="alice", amount=1, now=0)
    await ledger.open_contract(key="ns/d", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)
    await ledger.bill_period(period=0, now=H)
    c = await ledger.observe_contract(key="ns/d")
    assert c.state == "GracePeriod" and c.overdraft > 0
    assert (await ledger.get_account(name="alice")).balance == 0  # never negative
    grace_hours = ledger.config.grace_period_s // H
    for k in range(1, grace_hours + 2):
        await ledger.bill_period(period=k, now=(k + 1) * H)
    c = await ledger.observe_contract(key="ns/d")
    assert (c.state, c.deleted_reason) == ("Deleted", "OutOfFunds")
    summaries = await ledger.node_summaries(now=0)
    assert summaries["n0"].used == Resources()


async def test_top_up_during_grace_recovers(ledger):
    await grid(ledger)
    await ledger.open_contract(key="ns/d", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)
    await ledger.bill_period(period=0, now=H)
    assert (await ledger.observe_contract(key="ns/d")).state == "GracePeriod"
    await ledger.fund(name="alice", amount=100 * money.UNITS_PER_TFT, now=0)
    await ledger.bill_period(period=1, now=2 * H)
    c = await ledger.observe_contract(key="ns/d")
    assert (c.state, c.overdraft) == ("Created", 0)


async def test_resize_bills_old_size_then_new_size_for_the_rest_of_the_period(ledger):
    await grid(ledger)
    await ledger.fund(name="alice", amount=100 * money.UNITS_PER_TFT, now=0)  # 100 TFT: below 1.5 months → no discount
    await ledger.open_contract(key="ns/d", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)
    await ledger.resize_contract(key="ns/d", owner_uid=OWN.uid, resources=Resources(cru=4, mru=8, sru=100), public_ips=0,
                                 now=H // 2)
    await ledger.bill_period(period=0, now=H)
    # §2.6 by hand, no IP: SMALL is CU min(1, 2, 2) = 1, SU 50/200 = 0.25 → 112,500 units USD/h; half an hour
    # → 56,250 → 0.28125 TFT at 20 mUSD. Doubled: CU 2, SU 0.5 → 225,000/h; the second half hour → 0.5625 TFT.
    assert (await ledger.observe_contract(key="ns/d")).billed_total == 2_812_500 + 5_625_000
    rerun = await ledger.bill_period(period=0, now=H + 1)
    assert (rerun.rows_written, rerun.skipped_existing) == (0, 1)


async def test_funded_in_the_window_where_grace_would_expire_pays_the_whole_period(ledger):
    await grid(ledger)
    await ledger.open_contract(key="ns/d", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)
    await ledger.bill_period(period=0, now=H)  # unpaid → GracePeriod from H
    expiring = (H + ledger.config.grace_period_s) // H - 1  # the period that ends exactly at the grace's end (§2.4)
    for k in range(1, expiring):
        await ledger.bill_period(period=k, now=(k + 1) * H)
    await ledger.fund(name="alice", amount=100 * money.UNITS_PER_TFT, now=0)  # funded before the expiring window is billed
    await ledger.bill_period(period=expiring, now=(expiring + 1) * H)
    c = await ledger.observe_contract(key="ns/d")
    assert (c.state, c.overdraft) == ("Created", 0)
    assert c.billed_total == (expiring + 1) * 5_625_000  # every whole hour at 0.5625 TFT, none cut short


async def test_close_contract_final_bill_no_double_charge(ledger):
    await grid(ledger)
    await ledger.fund(name="alice", amount=10**12, now=0)
    await ledger.open_contract(key="ns/d", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)
    closed = await ledger.close_contract(key="ns/d", owner_uid=OWN.uid, now=H // 2, reason="CanceledByUser")
    assert closed.state == "Deleted" and closed.billed_total > 0
    report = await ledger.bill_period(period=0, now=H)
    assert report.rows_written == 0  # the final bill already covered the period's used part
    again = await ledger.close_contract(key="ns/d", owner_uid=OWN.uid, now=H, reason="CanceledByUser")
    assert again.billed_total == closed.billed_total


async def test_closes_that_arrive_together_bill_and_pay_out_as_one_at_a_time(ledger):
    """A namespace deleted whole closes its contracts together: they share one transaction (one billing batch),
    and each contract's final bill, state, debt and payout are what closing them one at a time gives, a payer
    that runs dry in the middle of the batch included (each bill on the balance the ones before it left)."""
    import asyncio

    await grid(ledger, nodes=2)
    twins = {name: identity.KeyPair.generate() for name in ("rich-a", "poor-a", "rich-b", "poor-b")}
    for name, key in twins.items():
        await ledger.ensure_account(name=name, public_key=key.public_key)
        await ledger.fund(name=name, amount=10**12 if name.startswith("rich") else 8_000_000, now=0)
    groups = {g: [f"ns/{g}{i}" for i in range(4)] for g in ("a", "b")}
    for g, keys in groups.items():
        for i, key in enumerate(keys):
            await ledger.open_contract(key=key, **paid_by(twins[f"{'rich' if i % 2 else 'poor'}-{g}"]),
                                       request=scheduling.Request(resources=SMALL), now=0)
    await ledger.bill_period(period=0, now=H)  # a whole cycle each: a reserve to pay out on close
    now = H + H // 2
    batches = ledger._closings.batches
    together = await asyncio.gather(*(ledger.close_contract(key=k, owner_uid=OWN.uid, now=now, reason="CanceledByUser")
                                      for k in groups["a"]))
    assert ledger._closings.batches - batches < len(groups["a"])  # they shared a batch
    alone = [await ledger.close_contract(key=k, owner_uid=OWN.uid, now=now, reason="CanceledByUser")
             for k in groups["b"]]

    def outcome(c):
        return (c.state, c.deleted_reason, c.deleted_at, c.billed_total, c.overdraft, c.reserve)
    assert [outcome(c) for c in together] == [outcome(c) for c in alone]
    assert {c.state for c in together} == {"Deleted"} and any(c.overdraft for c in together)  # a payer ran dry
    for a, b in zip(groups["a"], groups["b"], strict=True):
        assert [(x.amount, x.paid) for x in await ledger.bills(key=a)] == \
            [(x.amount, x.paid) for x in await ledger.bills(key=b)]
        assert [(x.amount, x.farmer) for x in await ledger.payouts(key=a)] == \
            [(x.amount, x.farmer) for x in await ledger.payouts(key=b)]
    assert await ledger.payouts(key=groups["a"][1])  # a reserve was paid out
    for kind in ("rich", "poor"):
        assert (await ledger.get_account(name=f"{kind}-a")).balance == (await ledger.get_account(name=f"{kind}-b")).balance
    again = await ledger.close_contract(key=groups["a"][0], owner_uid=OWN.uid, now=2 * H, reason="CanceledByUser")
    assert outcome(again) == outcome(together[0])  # idempotent


async def test_minting_exact_idempotent_and_paid_to_farm(ledger):
    await grid(ledger, nodes=2)
    period_s = ledger.config.minting_period_s
    for ts in range(2400, period_s + 1, 2400):  # n0 reports every 40 minutes; n1 never
        sig = NODE_KEY.sign(identity.UPTIME, {"node": "n0", "ts": ts, "uptime": ts + 100})
        await ledger.record_uptime(node="n0", ts=ts, uptime=ts + 100, signature=sig, now=ts)
    report = await ledger.mint_period(period=0, now=period_s)
    summaries = await ledger.node_summaries(now=period_s - 1)
    assert summaries["n0"].uptime_s == period_s  # credited 2400 s per report, whole period covered
    assert report.rows_written == 2
    rerun = await ledger.mint_period(period=0, now=period_s + 10)
    assert rerun.rows_written == 0
    assert (await ledger.get_account(name="ns/farmer")).balance == report.amount
    s = await ledger.node_summaries(now=period_s)
    assert s["n1"].last_mint == 0 and s["n1"].last_mint_reason == "NoUptime"
    assert s["n0"].last_mint == report.amount


async def test_node_with_deployments_cannot_close(ledger):
    await grid(ledger)
    await ledger.open_contract(key="ns/d", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)
    with pytest.raises(errors.Conflict, match="ns/d"):
        await ledger.close_node(name="n0", owner=OWN, now=1)
    with pytest.raises(errors.Conflict):
        await ledger.close_farm(name="farm1", owner=OWN)


def signed_vote(prop, farm, approve, seq, key=OWNER):
    """The farm owner's vote bound to the proposal as the ledger opened it (issue 13, invariant 5)."""
    from tfgrid_operator.domain import voting

    digest = voting.proposal_digest(proposal=prop.key, proposal_id=prop.id, action=prop.action,
                                    threshold=prop.threshold, end_ts=prop.end_ts, nonce=prop.nonce)
    return key.sign(identity.VOTE_V2, voting.vote_payload(proposal=prop.key, digest=digest, farm=farm,
                                                          approve=approve, seq=seq))


async def voting_grid(ledger) -> int:
    """The grid with its node's capacity held over minting period 0, minted: farm1 weighs in votes (§5).
    Returns the period's end (votes are cast from then on)."""
    await grid(ledger)
    return (await ledger_setup.held_a_period(ledger, {"n0": NODE_KEY})).end


async def test_dao_vote_close_execute_once(ledger):
    t = await voting_grid(ledger)
    p1 = await ledger.ensure_proposal(key="p1", action={"type": "SetPricingPolicy", "pricing": {"cu": 200_000}},
                                      threshold=1, end_ts=t + 100)
    sig = signed_vote(p1, "farm1", True, 1)
    prop = await ledger.cast_vote(proposal="p1", farm="farm1", approve=True, seq=1, signature=sig, now=t + 5)
    assert prop.votes[0].weight == units.dao_weight(NODE)  # held all of period 0
    with pytest.raises(errors.Replayed):
        await ledger.cast_vote(proposal="p1", farm="farm1", approve=True, seq=1, signature=sig, now=t + 6)
    with pytest.raises(errors.BadSignature):
        await ledger.cast_vote(proposal="p1", farm="farm1", approve=False, seq=1, signature=sig, now=t + 6)
    assert (await ledger.close_proposal(proposal="p1", now=t + 50)).state == "Open"
    assert (await ledger.close_proposal(proposal="p1", now=t + 100)).state == "Executed"
    assert (await ledger.policies())[0].cu == 200_000
    assert (await ledger.close_proposal(proposal="p1", now=t + 200)).executed_at == t + 100
    summary = (await ledger.proposal_summaries())["p1"]
    assert (summary.state, summary.vetoes, [v.farm for v in summary.votes]) == ("Executed", 0, ["farm1"])
    with pytest.raises(errors.Replayed):  # a vote for a closed proposal
        await ledger.cast_vote(proposal="p1", farm="farm1", approve=False, seq=2,
                               signature=signed_vote(p1, "farm1", False, 2), now=t + 201)


async def test_only_the_newest_vote_counts_and_a_vote_binds_to_its_proposal(ledger):
    t = await voting_grid(ledger)
    action = {"type": "SetPricingPolicy", "pricing": {"cu": 1}}
    p1 = await ledger.ensure_proposal(key="ns/p1", action=action, threshold=5, end_ts=t + 1000, nonce="n" * 16)
    await ledger.ensure_proposal(key="ns/p2", action=action, threshold=5, end_ts=t + 1000, nonce="m" * 16)
    yes = signed_vote(p1, "farm1", True, 10)
    await ledger.cast_vote(proposal="ns/p1", farm="farm1", approve=True, seq=10, signature=yes, now=t + 5)
    no = signed_vote(p1, "farm1", False, 11)
    assert not (await ledger.cast_vote(proposal="ns/p1", farm="farm1", approve=False, seq=11, signature=no,
                                       now=t + 6)).votes[0].approve
    with pytest.raises(errors.Superseded):  # the superseded "yes", validly signed, replayed
        await ledger.cast_vote(proposal="ns/p1", farm="farm1", approve=True, seq=10, signature=yes, now=t + 7)
    assert [(v.approve, v.seq) for v in (await ledger.observe_proposal(key="ns/p1")).votes] == [(False, 11)]
    with pytest.raises(errors.BadSignature):  # the same vote on another proposal of the same action
        await ledger.cast_vote(proposal="ns/p2", farm="farm1", approve=False, seq=11, signature=no, now=t + 7)
    import dataclasses

    for field, value in (("threshold", 6), ("end_ts", t + 1001), ("id", p1.id + 100), ("nonce", "x" * 16),
                         ("nonce", "")):
        other = dataclasses.replace(p1, **{field: value})  # what the vote signed differs from what opened
        with pytest.raises(errors.BadSignature):
            await ledger.cast_vote(proposal="ns/p1", farm="farm1", approve=True, seq=12,
                                   signature=signed_vote(other, "farm1", True, 12), now=t + 8)
    withdrawn = await ledger.withdraw_proposal(proposal="ns/p1")
    assert withdrawn.state == "Withdrawn" and await ledger.observe_proposal(key="ns/p1") is None
    assert (await ledger.close_proposal(proposal=withdrawn.key, now=t + 2000)).state == "Withdrawn"  # never executes
    assert await ledger.withdraw_proposal(proposal="ns/none") is None


async def test_unsupported_url_is_a_clear_error():
    from tfgrid_operator import backend

    with pytest.raises(errors.InvalidRequest, match="unsupported ledger URL"):
        await backend.open_backend("mysql://x")


async def test_unreachable_postgres_is_unavailable():
    from tfgrid_operator import backend

    with pytest.raises(errors.Unavailable):
        await backend.open_backend("postgresql://postgres@127.0.0.1:1/none")


async def test_narrowed_selection_chooses_what_the_domain_chooses_over_every_node(ledger):
    """The database pre-selects the least-loaded matching nodes; the choice must equal select_node over all."""
    import random

    rng = random.Random(11)
    for i in range(3):
        await ledger.ensure_farm(owner=OWN, name=f"f{i}", owner_key=OWNER.public_key, payout_account=f"p{i}", certified=False,
                                 dedicated=False, public_ips=rng.randint(0, 3))
    for i in range(14):
        await ledger.ensure_node(owner=OWN, name=f"m{i:02}", farm=f"f{i % 3}", country=rng.choice(["BE", "NL"]), city="",
                                 resources=Resources(cru=rng.choice([4, 8, 16]), mru=rng.choice([16, 32, 64]),
                                                     sru=rng.choice([500, 1000]), hru=rng.choice([0, 2000])),
                                 certified=rng.random() < 0.3, public_key=NODE_KEYS[i].public_key, now=0)
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)
    placed = 0
    for i in range(40):
        request = scheduling.Request(
            resources=Resources(cru=rng.randint(0, 6), mru=rng.randint(0, 24), sru=rng.choice([0, 50, 400]),
                                hru=rng.choice([0, 0, 500])),
            public_ips=rng.choice([0, 0, 1]), farm=rng.choice([None, None, "f1"]),
            country=rng.choice([None, "be", "NL"]), certified_only=rng.random() < 0.2, dedicated=rng.random() < 0.1)
        async with ledger._tx() as conn:
            narrowed = await ledger._select(conn, request, 0)
            everything = scheduling.select_node(request, await ledger._candidates(conn, 0))
        assert narrowed == everything, (i, request)
        if isinstance(everything, scheduling.Placement):
            await ledger.open_contract(key=f"ns/r{i}", **paid_by(), request=request, now=0)
            placed += 1
    assert placed >= 15, placed  # the comparison ran on real choices, not only on Unschedulable


async def test_a_pool_held_too_long_is_unavailable_not_a_crash(ledger_url, monkeypatch):
    """A burst of reconciles waits for a pooled connection; past the pool timeout it is a LedgerError the handler
    reports and retries, not an unhandled exception."""
    import contextlib

    from tfgrid_operator import backend
    from tfgrid_operator.backend.sql import engine as sql

    monkeypatch.setattr(sql, "POOL_SIZE", 1)
    monkeypatch.setattr(sql, "POOL_TIMEOUT_S", 0.2)
    lg = await backend.open_backend(ledger_url)
    try:
        # the pool's only connection (PostgreSQL: one more as overflow)
        async with lg._read(), lg._read() if not lg.is_sqlite else contextlib.nullcontext():
            with pytest.raises(errors.Unavailable, match=r"QueuePool limit|timed out|Timeout"):
                await lg.observe_contract(key="ns/x")
        assert await lg.observe_contract(key="ns/x") is None  # released: it works again
    finally:
        await lg.close()



async def test_concurrent_placements_are_batched_and_each_answered_on_its_own(ledger):
    """Placements that arrive together share write transactions; each caller still gets its own contract or
    its own error, no node is overbooked, and a key already placed is adopted, not placed twice."""
    import asyncio

    await grid(ledger, nodes=3)
    small = scheduling.Request(resources=Resources(cru=2, mru=4, sru=50))
    first = await ledger.open_contract(key="ns/d0", **paid_by(), request=small, now=10)
    batches = ledger._placements.batches
    calls = [ledger.open_contract(key=f"ns/d{i}", **paid_by(), request=small, now=10) for i in range(14)]
    calls.append(ledger.open_contract(key="ns/nobody", **paid_by(identity.KeyPair.generate()), request=small, now=10))
    calls.append(ledger.open_contract(key="ns/huge", **paid_by(),
                                      request=scheduling.Request(resources=Resources(cru=9)), now=10))
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert ledger._placements.batches - batches < len(calls)
    placed = answers[:14]
    assert placed[0].id == first.id and not placed[0].created  # adopted
    assert all(a.created for a in placed[1:12]) and len({a.id for a in placed[:12]}) == 12
    assert all(isinstance(a, errors.NoCapacity) and a.constraint == "Capacity" for a in placed[12:])  # 3 × 4 fit
    assert isinstance(answers[14], errors.NotFound) and "no twin account" in answers[14].message
    assert isinstance(answers[15], errors.NoCapacity)
    per_node = {}
    for a in placed[:12]:
        per_node[a.node] = per_node.get(a.node, 0) + a.resources.cru
    assert per_node == {"n0": 8, "n1": 8, "n2": 8}  # spread, and never above the node's 8 cores


VERSION_3 = {"accounts": ("role",), "farms": ("owner_ns", "owner_uid"), "nodes": ("owner_ns", "owner_uid"),
             "contracts": ("owner_uid", "proof", "proof_until", "proof_signature")}


async def drop_version_3(conn, but: str = "") -> None:
    """Make a ledger look like version 2 again: without the columns (and the index) version 3 added."""
    import sqlalchemy as sa

    await conn.execute(sa.text("DROP INDEX one_account_per_key"))
    for table, columns in VERSION_3.items():
        for column in columns if table != but else ():
            await conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))


async def test_a_version_1_ledger_is_migrated_with_totals_computed_from_its_bills(ledger_url):
    """Version 2 keeps each contract's billing totals on the contract. A version-1 ledger (totals only in the
    bills) gets the columns and the totals its bills add up to, once, when the operator opens it."""
    import dataclasses

    import sqlalchemy as sa

    from tfgrid_operator import backend
    from tfgrid_operator.backend import config, schema

    cfg = config.LedgerConfig(billing_period_s=H)
    lg = await backend.open_backend(ledger_url, cfg)
    await grid(lg)
    await lg.fund(name="alice", amount=10**12, now=0)
    request = scheduling.Request(resources=SMALL)
    first = await lg.open_contract(key="ns/a", **paid_by(), request=request, now=0)
    await lg.open_contract(key="ns/b", **paid_by(), request=request, now=H // 2)
    for period in range(3):
        await lg.bill_period(period=period, now=(period + 1) * H)
    before = await lg.contract_summaries()
    async with lg.engine.begin() as conn:  # what a version-1 ledger looked like
        for column in ("billed_total", "last_billed_at", "last_discount", *VERSION_3["contracts"]):
            await conn.execute(sa.text(f"ALTER TABLE contracts DROP COLUMN {column}"))
        await drop_version_3(conn, but="contracts")
        await conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="1"))
    await lg.close()
    lg = await backend.open_backend(ledger_url, cfg)
    try:
        after = await lg.contract_summaries()
        unowned = {k: dataclasses.replace(c, owner_uid="") for k, c in before.items()}  # version 1 named no owner
        assert after == unowned and after["ns/a"].billed_total > after["ns/b"].billed_total > 0
        assert after["ns/a"].id == first.id
        async with lg.engine.connect() as conn:
            version = sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            assert (await conn.execute(version)).scalar() == str(schema.SCHEMA_VERSION)
        await lg.bill_period(period=3, now=4 * H)  # and billing keeps adding to the migrated totals
        async with lg.engine.connect() as conn:
            b = schema.bills
            latest = (await conn.execute(sa.select(b.c.amount).where(b.c.contract_id == first.id, b.c.period == 3))).scalar()
        assert (await lg.contract_summaries())["ns/a"].billed_total == before["ns/a"].billed_total + latest > 0
    finally:
        await lg.close()


async def test_concurrent_reads_share_one_query_and_each_gets_its_own_answer(ledger):
    import asyncio

    await grid(ledger, nodes=2)
    request = scheduling.Request(resources=SMALL)
    placed = {k: await ledger.open_contract(key=k, **paid_by(), request=request, now=0) for k in ("ns/a", "ns/b")}
    batches = ledger._observations.batches
    keys = ["ns/a", "ns/b", "ns/none", "ns/a"] * 5
    found = await asyncio.gather(*(ledger.observe_contract(key=k) for k in keys), ledger.policies(), ledger.policies())
    assert [c.id if c else None for c in found[:20]] == [placed[k].id if k in placed else None for k in keys]
    assert found[20] == found[21] and found[20][0].cu == 100_000
    assert ledger._observations.batches - batches < len(keys)


async def test_concurrent_farm_lookups_share_one_read_and_each_gets_its_own_farm(ledger):
    """Every Node's reconcile reads its farm (a thousand at once after a restart): lookups that arrive together are
    one query, each answered with its farm, or None for a name no farm has."""
    import asyncio

    await grid(ledger, nodes=1)
    await ledger.ensure_farm(owner=OWN, name="farm2", owner_key=OWNER.public_key, payout_account="farmer2",
                             certified=True, dedicated=False, public_ips=3)
    statements: list[str] = []
    listen = lambda _conn, _cursor, statement, *_: statements.append(statement.upper())  # noqa: E731
    sa.event.listen(ledger.engine.sync_engine, "before_cursor_execute", listen)
    try:
        found = await asyncio.gather(*(ledger.observe_farm(name=n) for n in ["farm1", "nope", "farm2", "farm1"]))
    finally:
        sa.event.remove(ledger.engine.sync_engine, "before_cursor_execute", listen)
    assert [f and (f.name, f.payout_account, f.certified, f.public_ips) for f in found] == [
        ("farm1", "ns/farmer", False, found[0].public_ips), None, ("farm2", "ns/farmer2", True, 3),
        ("farm1", "ns/farmer", False, found[0].public_ips)]
    assert len([s for s in statements if "FROM FARMS" in s]) == 1
    assert await ledger.observe_farm(name="farm2") == found[2]  # alone, the same answer


async def test_every_contracts_summary_remakes_only_the_records_whose_rows_changed(ledger):
    """contract_summaries (read every tick) keeps the records it made: an unchanged row gives the same record, a
    changed one (billed, resized, moved, closed, reopened by another object) a new one, equal to what a read with
    nothing kept makes."""
    await grid(ledger, nodes=2)
    await ledger.fund(name="alice", amount=10**12, now=0)
    for name in ("a", "b", "c", "d"):
        await ledger.open_contract(key=f"ns/{name}", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)

    async def read_and_check(before: dict, changed: set[str]) -> dict:
        after = await ledger.contract_summaries()
        for key, c in after.items():
            assert c == await ledger.observe_contract(key=key)  # as a read that keeps nothing makes it
            assert (c is before.get(key)) == (key not in changed), key
        return after

    first = await ledger.contract_summaries()
    seen = await read_and_check(first, set())
    await ledger.bill_period(period=0, now=H)
    seen = await read_and_check(seen, {"ns/a", "ns/b", "ns/c", "ns/d"})
    await ledger.resize_contract(key="ns/b", owner_uid=OWN.uid, resources=Resources(cru=4, mru=8, sru=100),
                                 public_ips=0, now=H + 60)
    seen = await read_and_check(seen, {"ns/b"})
    node = seen["ns/c"].node
    moved = await ledger.move_contract(key="ns/c", now=H + 120, request=scheduling.Request(
        resources=SMALL, exclude=frozenset({node})))
    seen = await read_and_check(seen, {"ns/c"})
    assert (seen["ns/c"].id, seen["ns/c"].moved_from) == (moved.id, node)
    await ledger.close_contract(key="ns/d", owner_uid=OWN.uid, now=H + 180, reason="CanceledByUser")
    seen = await read_and_check(seen, {"ns/d"})
    assert seen["ns/d"].state == "Deleted"
    later = await ledger.open_contract(key="ns/d", owner_uid="another-object", proof=paid_by()["proof"],
                                       request=scheduling.Request(resources=SMALL), now=H + 240)
    seen = await read_and_check(seen, {"ns/d"})
    assert (seen["ns/d"].id, seen["ns/d"].owner_uid) == (later.id, "another-object")
    assert len(ledger._summaries_kept) == 6  # every contract read: the four, c's successor and d's


async def test_the_sweeps_read_of_live_contracts_and_every_contracts_summary_share_the_records_of_unchanged_rows(ledger):
    """At a restart the loop's first tick reads every live contract (the sweep) and then every contract (the status
    pass): a row read by one and unchanged is one record, made once; a changed row is made again; a moved contract's
    summary keeps where it moved from (the sweep's own record of that row has none)."""
    await grid(ledger, nodes=2)
    await ledger.fund(name="alice", amount=10**12, now=0)
    for name in ("a", "b", "c"):
        await ledger.open_contract(key=f"ns/{name}", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)
    live = await ledger.live_contracts()  # the restart's sweep, first: nothing kept yet
    summaries = await ledger.contract_summaries()
    assert all(summaries[k] is live[k] for k in live) and set(summaries) == set(live)
    for key, c in summaries.items():
        assert c == await ledger.observe_contract(key=key)  # as a read that keeps nothing makes it
    await ledger.bill_period(period=0, now=H)  # every row changes
    live_after = await ledger.live_contracts()
    for k in live:
        assert live_after[k] is not live[k] and live_after[k] == await ledger.observe_contract(key=k)
    summaries = await ledger.contract_summaries()
    assert all(summaries[k] is live_after[k] for k in live_after)
    node = summaries["ns/c"].node
    moved = await ledger.move_contract(key="ns/c", now=H + 60, request=scheduling.Request(
        resources=SMALL, exclude=frozenset({node})))
    summaries = await ledger.contract_summaries()
    assert (summaries["ns/c"].id, summaries["ns/c"].moved_from) == (moved.id, node)
    swept = await ledger.live_contracts()
    assert swept["ns/c"] == dataclasses.replace(summaries["ns/c"], moved_from=None)
    assert swept["ns/a"] is summaries["ns/a"]
    again = await ledger.contract_summaries()
    assert again["ns/c"] is summaries["ns/c"] and again["ns/c"].moved_from == node  # the sweep's never replaced it
    await ledger.bill_period(period=1, now=2 * H)  # the moved contract's row changes: the sweep's record of it is kept
    assert (await ledger.live_contracts())["ns/c"].moved_from is None
    billed = await ledger.contract_summaries()
    assert billed["ns/c"].moved_from == node and billed["ns/c"] == await ledger.observe_contract(key="ns/c")


async def test_the_reads_of_every_contract_let_other_tasks_run_while_they_make_records(ledger, monkeypatch):
    """The status pass's read of every contract and the sweep's of every live one make their records
    RECORDS_PER_TURN at a time, with a turn of the event loop between (after a billing period every row changed:
    10,000 records held the loop 0.26 s in one piece), and read what they read in one piece all the same."""
    import asyncio

    from tfgrid_operator.backend.sql import contracts as module

    await grid(ledger, nodes=2)
    await ledger.fund(name="alice", amount=10**12, now=0)
    for i in range(5):
        await ledger.open_contract(key=f"ns/d{i}", **paid_by(), request=scheduling.Request(resources=SMALL), now=0)
    whole = await ledger.contract_summaries()
    await ledger.bill_period(period=0, now=H)  # every row changes: every record is made again
    monkeypatch.setattr(module, "RECORDS_PER_TURN", 2)
    made: list[int] = []
    original = ledger._kept_record

    def counting(entry, r, values, moved):
        made.append(r.id)
        return original(entry, r, values, moved)

    async def other(seen: list[int], done: asyncio.Event) -> None:  # kopf's handlers, say: records made so far
        while not done.is_set():
            seen.append(len(made))
            await asyncio.sleep(0)

    monkeypatch.setattr(ledger, "_kept_record", counting)
    for read in (ledger.contract_summaries, ledger.live_contracts):
        made.clear()
        seen: list[int] = []
        done = asyncio.Event()
        task = asyncio.create_task(other(seen, done))
        found = await read()
        done.set()
        await task
        assert {2, 4} <= set(seen)  # between the slices: no database wait happens while records are made
        assert set(found) == set(whole)
        for key, c in found.items():
            assert c == await ledger.observe_contract(key=key)  # as a read that keeps nothing and never yields


@pytest.mark.parametrize("proof_signature", ["", "s" * 88], ids=["key", "grant"])
async def test_an_hours_update_of_every_contract_fits_on_its_page(ledger, proof_signature):
    """PostgreSQL: every contract's row is rewritten once an hour with its totals, and the first bill grows it (its
    last bill's columns were NULL). The contracts table leaves room on each page for that new version of every row
    (schema.CONTRACTS_FILLFACTOR), so the update is HOT (no index entry written, no page added): the table does not
    grow over the first two hours. Rows as open_contract writes them (a Kubernetes uid; a grant's signature or none)."""
    import uuid

    from tfgrid_operator.backend import schema

    if ledger.is_sqlite:
        pytest.skip("a PostgreSQL storage parameter")
    await grid(ledger)
    await ledger.fund(name="alice", amount=10**15, now=0)
    async with ledger.engine.begin() as conn:
        alice = (await conn.execute(sa.select(schema.accounts.c.id).where(schema.accounts.c.name == "alice"))).scalar()
        node = (await conn.execute(sa.select(schema.nodes.c.id))).scalar()
        await conn.execute(schema.contracts.insert(), [
            dict(key=f"ns/d{i}", account_id=alice, node_id=node, cru=1 + i % 4, mru=2 + i % 8, sru=25 + i % 100, hru=0,
                 public_ips=0, dedicated=False, state="Created", created_at=0, overdraft=0, owner_uid=str(uuid.uuid4()),
                 proof="grant" if proof_signature else "key", proof_signature=proof_signature)
            for i in range(3000)])

    async def pages() -> int:
        async with ledger.engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT pg_relation_size('contracts') / 8192"))).scalar()
    loaded = await pages()
    for period in range(2):
        assert (await ledger.bill_period(period=period, now=(period + 1) * H)).rows_written == 3000
    assert await pages() == loaded


async def test_a_write_behind_one_that_never_ends_fails_as_unavailable_and_changes_nothing(ledger, monkeypatch):
    """The ledger's write lock of this process is waited for LOCK_TIMEOUT_S at most (a write ahead that hangs never
    holds the others for good); the write refused changes nothing, and once the lock is free writes go on."""
    monkeypatch.setattr(engine_module, "LOCK_TIMEOUT_S", 0.2)
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)
    await ledger._lock.acquire()  # a write ahead of it that does not end
    try:
        with pytest.raises(errors.Unavailable, match=r"its write lock was not free within 0\.2 s"):
            await ledger.fund(name="alice", amount=5, now=0)
    finally:
        ledger._lock.release()
    assert (await ledger.get_account(name="alice")).balance == 0
    await ledger.fund(name="alice", amount=5, now=0)
    assert (await ledger.get_account(name="alice")).balance == 5
