"""Invariant 7, as a property over scenarios on both engines: money is conserved to the unit and no debt is
forgiven or charged twice, whatever mix of funding, opening, billing, resizing, moving, grace, closing and
re-creating (a new object of the same name: the old contract is closed as an orphan).

* Conservation: money into twins' accounts = Σ balances (twins, farmers, foundation, staking pool)
  + Σ contract reserves.
* Tracing: per contract, Σ bills' paid = its reserve + Σ its payouts (nothing appears or vanishes between).
* Debt: per deployment (its contracts across moves), Σ bills' amount = Σ paid + Σ debt paid later at funding
  + Σ overdraft left on its contracts: every unit billed is either paid or still owed, once.
* Debt follows the payer: a funding pays what its payer owes on closed contracts first, exactly that much;
  a payer that owes opens nothing (PayerInDebt), and one that opened something owed nothing.
"""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger_audit import conserved
from tfgrid_operator import backend
from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.domain import identity, scheduling
from tfgrid_operator.domain.units import Resources

H = 3600
SIZES = (Resources(cru=2, mru=4, sru=50), Resources(cru=1, mru=2, sru=25, hru=100), Resources(cru=4, mru=8, sru=100))
OWNER = identity.KeyPair.generate()
PAYERS = [identity.KeyPair.generate() for _ in range(2)]  # the twins' keys: each Deployment proves its payer with one
_runs = itertools.count()
_clock = {"now": 10 * H}

# (operation, deployment or payer or seconds, size or payer or amount); two deployments, two payers
step = st.one_of(
    st.tuples(st.just("fund"), st.integers(0, 1), st.integers(0, 30_000_000)),
    st.tuples(st.just("open"), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.just("resize"), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.just("move"), st.integers(0, 1), st.just(0)),
    st.tuples(st.just("close"), st.integers(0, 1), st.just(0)),
    st.tuples(st.just("recreate"), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.just("wait"), st.integers(1, 2 * H), st.just(0)),
)
# the two settlement bugs of issue 13: a move in grace charged the overdraft twice; an unpaid final bill was forgiven
MOVE_IN_GRACE = [("open", 0, 0), ("wait", H, 0), ("fund", 0, 30_000_000), ("move", 0, 0), ("wait", H, 0)]
MOVE_UNPAID = [("fund", 0, 6_000_000), ("open", 0, 0), ("wait", H, 0), ("wait", H // 2, 0), ("move", 0, 0),
               ("fund", 0, 30_000_000), ("wait", H, 0)]
# the gap issue 13 left: a deployment in grace deleted, or re-created, left its debt on a closed contract nobody
# collected, and its payer opened a new one; now the payer owes it, pays it first, and opens nothing before
CLOSED_IN_GRACE = [("open", 0, 0), ("wait", H, 0), ("close", 0, 0), ("open", 0, 1), ("fund", 0, 1_000_000),
                   ("open", 0, 1), ("fund", 0, 30_000_000), ("open", 0, 1), ("wait", H, 0)]
RECREATED_IN_GRACE = [("fund", 0, 1_000_000), ("open", 0, 0), ("wait", H, 0), ("recreate", 0, 2),
                      ("fund", 0, 30_000_000), ("recreate", 0, 2), ("wait", H, 0)]


@pytest.fixture
async def ledger(ledger_url):
    """Grace 3 h so scenarios reach expiry; nodes never count as down, so moves have somewhere to go."""
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig(
        minting_epoch=0, grace_period_s=3 * H, node_down_after_s=10**9))
    yield lg
    await lg.close()


async def _setup(ledger, run: int, base: int) -> None:
    """Two farms of one node each (the second certified), new for every run so its nodes count as up (§1.3)."""
    for i in range(2):
        own = records.Owner(f"ns{run}", f"farm-uid-{run}-{i}")
        await ledger.ensure_farm(owner=own, name=f"farm{run}-{i}", owner_key=OWNER.public_key, payout_account=f"farmer{i}",
                                 certified=bool(i), dedicated=False, public_ips=4)
        await ledger.ensure_node(owner=own, name=f"n{run}-{i}", farm=f"farm{run}-{i}",
                                 resources=Resources(cru=64, mru=256, sru=8000), country="BE", city="Ghent",
                                 certified=bool(i), public_key=identity.KeyPair.generate().public_key, now=base)
    for p in range(2):
        await ledger.ensure_account(name=f"payer{p}", public_key=PAYERS[p].public_key)


async def _check(ledger, funded: int) -> None:
    await conserved(ledger, funded)


async def _closed_debt(ledger, payer: str) -> int:
    """What ``payer`` owes on its closed contracts (a funding pays this first)."""
    c, a = schema.contracts, schema.accounts
    async with ledger.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(c.c.overdraft), 0))
                                       .join(a, a.c.id == c.c.account_id)
                                       .where(a.c.name == payer, c.c.state == "Deleted"))).scalar_one())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=20))
@example(steps=MOVE_IN_GRACE)
@example(steps=MOVE_UNPAID)
@example(steps=CLOSED_IN_GRACE)
@example(steps=RECREATED_IN_GRACE)
async def test_money_is_conserved_and_debt_counted_once(ledger, steps):
    run = next(_runs)
    now = _clock["now"]  # every run starts where the last one on this ledger ended
    billed = await ledger.watermark(name="bill", default=now // H)  # the first period not yet billed
    await _setup(ledger, run, now)
    async with ledger.engine.connect() as conn:  # what earlier runs put in
        funded = int((await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(schema.accounts.c.balance), 0)
                                                   + sa.select(sa.func.coalesce(sa.func.sum(schema.contracts.c.reserve),
                                                                                0)).scalar_subquery()))).scalar())
    generation = [0, 0]  # the object (uid) of each deployment: "recreate" makes a new one of the same name
    for op, x, y in steps:
        key = f"ns{run}/d{x}"
        uid = f"uid-{key}-{generation[x]}" if op != "wait" else ""
        try:
            if op == "fund":
                owed = await _closed_debt(ledger, f"payer{x}")
                account = await ledger.fund(name=f"payer{x}", amount=y, now=now)
                funded += y
                assert account.collected == min(y, owed)  # its closed contracts' debt first, exactly that
            elif op in ("open", "recreate"):
                if op == "recreate":
                    generation[x] += 1
                    uid = f"uid-{key}-{generation[x]}"
                proof = records.PayerProof(kind="key", namespace=f"ns{run}", public_key=PAYERS[x].public_key)
                try:
                    opened = await ledger.open_contract(key=key, owner_uid=uid, proof=proof, now=now,
                                                        request=scheduling.Request(resources=SIZES[y], public_ips=y % 2))
                except errors.PayerInDebt:
                    assert (await ledger.get_account(name=f"payer{x}")).debt > 0
                    raise
                if opened.created:  # it owed nothing when it opened (an orphan's final bill comes first)
                    assert (await ledger.get_account(name=f"payer{x}")).debt == 0
            elif op == "resize":
                await ledger.resize_contract(key=key, owner_uid=uid, resources=SIZES[y], public_ips=0, now=now)
            elif op == "move":
                current = await ledger.observe_contract(key=key)
                if current is not None:  # to the run's other node (self-healing excludes the one that is down)
                    await ledger.move_contract(key=key, now=now, request=scheduling.Request(
                        resources=current.resources, exclude=frozenset({current.node})))
            elif op == "close":
                await ledger.close_contract(key=key, owner_uid=uid, now=now, reason="CanceledByUser")
            else:
                now += x
                while (billed + 1) * H <= now:
                    await ledger.bill_period(period=billed, now=now)
                    billed += 1
        except (errors.NotFound, errors.Conflict, errors.NoCapacity, errors.InvalidRequest, errors.PayerInDebt):
            pass  # refused requests change nothing; the check below covers them too
        await _check(ledger, funded)
    for d in range(2):  # deletion ends every scenario (and keeps the next runs' bills few)
        key = f"ns{run}/d{d}"
        await ledger.close_contract(key=key, owner_uid=f"uid-{key}-{generation[d]}", now=now, reason="CanceledByUser")
    await _check(ledger, funded)
    _clock["now"] = now + 1
