"""Invariant 7, as a property over scenarios on both engines: money is conserved to the unit and no debt is
forgiven or charged twice, whatever mix of funding, opening, billing, resizing, moving, grace and closing.

* Conservation: money into twins' accounts = Σ balances (twins, farmers, foundation, staking pool)
  + Σ contract reserves.
* Tracing: per contract, Σ bills' paid = its reserve + Σ its payouts (nothing appears or vanishes between).
* Debt: per deployment (its contracts across moves), Σ bills' amount = Σ paid + Σ overdraft left on its
  contracts: every unit billed is either paid or still owed, once.
"""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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
    st.tuples(st.just("wait"), st.integers(1, 2 * H), st.just(0)),
)
# the two settlement bugs of issue 13: a move in grace charged the overdraft twice; an unpaid final bill was forgiven
MOVE_IN_GRACE = [("open", 0, 0), ("wait", H, 0), ("fund", 0, 30_000_000), ("move", 0, 0), ("wait", H, 0)]
MOVE_UNPAID = [("fund", 0, 6_000_000), ("open", 0, 0), ("wait", H, 0), ("wait", H // 2, 0), ("move", 0, 0),
               ("fund", 0, 30_000_000), ("wait", H, 0)]


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
    c, b, p, a = schema.contracts, schema.bills, schema.payouts, schema.accounts
    async with ledger.engine.connect() as conn:
        balances = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(a.c.balance), 0)))).scalar()
        reserves = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(c.c.reserve), 0)))).scalar()
        assert int(balances) + int(reserves) == funded
        paid = dict((await conn.execute(sa.select(b.c.contract_id, sa.func.sum(b.c.paid)).group_by(b.c.contract_id))).all())
        out = dict((await conn.execute(sa.select(p.c.contract_id, sa.func.sum(p.c.amount)).group_by(p.c.contract_id))).all())
        for row in (await conn.execute(sa.select(c.c.id, c.c.reserve))).all():
            assert int(paid.get(row.id, 0)) == row.reserve + int(out.get(row.id, 0)), row.id
        per_key = (await conn.execute(
            sa.select(c.c.key, sa.func.sum(b.c.amount), sa.func.sum(b.c.paid))
            .join(b, b.c.contract_id == c.c.id).group_by(c.c.key))).all()
        owed = dict((await conn.execute(sa.select(c.c.key, sa.func.sum(c.c.overdraft)).group_by(c.c.key))).all())
        for key, amount, settled in per_key:
            assert int(amount) == int(settled) + int(owed[key]), key
        assert (await conn.execute(sa.select(sa.func.count()).where(a.c.balance < 0))).scalar() == 0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=20))
@example(steps=MOVE_IN_GRACE)
@example(steps=MOVE_UNPAID)
async def test_money_is_conserved_and_debt_counted_once(ledger, steps):
    run = next(_runs)
    now = _clock["now"]  # every run starts where the last one on this ledger ended
    billed = await ledger.watermark(name="bill", default=now // H)  # the first period not yet billed
    await _setup(ledger, run, now)
    async with ledger.engine.connect() as conn:  # what earlier runs put in
        funded = int((await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(schema.accounts.c.balance), 0)
                                                   + sa.select(sa.func.coalesce(sa.func.sum(schema.contracts.c.reserve),
                                                                                0)).scalar_subquery()))).scalar())
    for op, x, y in steps:
        key = f"ns{run}/d{x}"
        try:
            if op == "fund":
                await ledger.fund(name=f"payer{x}", amount=y)
                funded += y
            elif op == "open":
                proof = records.PayerProof(kind="key", namespace=f"ns{run}", public_key=PAYERS[x].public_key)
                await ledger.open_contract(key=key, owner_uid=f"uid-{key}", proof=proof, now=now,
                                           request=scheduling.Request(resources=SIZES[y], public_ips=y % 2))
            elif op == "resize":
                await ledger.resize_contract(key=key, owner_uid=f"uid-{key}", resources=SIZES[y], public_ips=0, now=now)
            elif op == "move":
                current = await ledger.observe_contract(key=key)
                if current is not None:  # to the run's other node (self-healing excludes the one that is down)
                    await ledger.move_contract(key=key, now=now, request=scheduling.Request(
                        resources=current.resources, exclude=frozenset({current.node})))
            elif op == "close":
                await ledger.close_contract(key=key, owner_uid=f"uid-{key}", now=now, reason="CanceledByUser")
            else:
                now += x
                while (billed + 1) * H <= now:
                    await ledger.bill_period(period=billed, now=now)
                    billed += 1
        except (errors.NotFound, errors.Conflict, errors.NoCapacity, errors.InvalidRequest):
            pass  # refused requests change nothing; the check below covers them too
        await _check(ledger, funded)
    for d in range(2):  # deletion ends every scenario (and keeps the next runs' bills few)
        key = f"ns{run}/d{d}"
        await ledger.close_contract(key=key, owner_uid=f"uid-{key}", now=now, reason="CanceledByUser")
    await _check(ledger, funded)
    _clock["now"] = now + 1
