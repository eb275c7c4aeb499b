"""Minting (Proof-of-Capacity): one receipt per node and period, paid to the farm's payout account.

The capacity minted is the one the node's key attested, time-weighted over the period (``minting.held_over``),
never the Node's current spec; certified only if the council's certification held for the whole period.
Every mint keeps its inputs as a receipt (issue 14): ``mint_receipts`` reads them back.
"""

from __future__ import annotations

import decimal
import json
from collections import defaultdict
from fractions import Fraction
from json.encoder import encode_basestring as _string  # a str as a JSON string
from typing import Any

import sqlalchemy as sa

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql.bulk import fetch_rows, insert_rows
from tfgrid_operator.backend.sql.contracts import ContractsLedger
from tfgrid_operator.domain import minting, money, uptime
from tfgrid_operator.domain.units import Resources

_NODES = ("SELECT n.id, n.name, n.connection_price, f.account_id FROM nodes n JOIN farms f ON f.id = n.farm_id "
          "WHERE n.created_at < ? AND (n.closed_at IS NULL OR n.closed_at > ?)")
_UPTIME = "SELECT node_id, total, last_ts, last_uptime, boot_ts, violation, reports FROM uptime WHERE period = ?"
# a node's attested capacity history (only changes are kept: a few rows per node); later entries hold nothing
_CAPACITY = "SELECT node_id, from_ts, cru, mru, sru, hru, certified FROM capacity WHERE from_ts < ? ORDER BY node_id, id"
_MINT_COLUMNS = ("node_id", "period", "uptime_permille", "amount", "reason", "receipt")


def _exact(x: Fraction) -> str:
    """A Fraction as text that reads back exactly: "7.75" when it is a short decimal, else "31/3"."""
    if x.denominator == 1:
        return str(x.numerator)
    text = f"{float(x):.6g}"
    num, den = decimal.Decimal(text).as_integer_ratio()
    return text if num * x.denominator == x.numerator * den else f"{x.numerator}/{x.denominator}"


def _shared(p: minting.Period, held: minting.FarmingUnits, policy: minting.FarmingPolicy, full: Fraction) -> str:
    """The part of a receipt every node of one capacity and policy shares, as JSON."""
    factor = Fraction(5, 4) if held.certified and policy.id == 1 else Fraction(1)
    return json.dumps({
        "period": p.index, "start": p.start, "end": p.end, "periodSeconds": p.seconds,
        "cu": _exact(held.cu), "su": _exact(held.su), "certified": held.certified, "certifiedFactor": _exact(factor),
        "policy": {"id": policy.id, "cu": policy.cu, "su": policy.su, "nu": policy.nu, "ipv4": policy.ipv4,
                   "minimalUptime": policy.minimal_uptime, "default": policy.default},
        "fullMusd": _exact(full),
    }, sort_keys=True)


def _own(state: uptime.UptimeState, held: minting.FarmingUnits, policy: minting.FarmingPolicy, rw: minting.Reward,
         connection_price: int) -> str:
    """The part of a receipt that is the node's own — its uptime, the SLA's outcome and the reward — as the
    members of a JSON object (written out: json.dumps of a dict per node was a third of a 10,000-node mint)."""
    permille = ((minting.SLA_CERTIFIED_PERMILLE if held.certified else minting.SLA_DIY_PERMILLE)
                if policy.default else policy.minimal_uptime)
    violation = _string(str(state.violation)) if state.violation else "null"
    return (f'"amount": {rw.tft_units}, "reports": {state.reports}, "rewardMusd": {_string(_exact(rw.musd))}, '
            f'"sla": {{"outcome": "{"Paid" if rw.tft_units > 0 else "Unpaid"}", "permille": {permille}, '
            f'"reason": {_string(rw.reason)}}}, "tftConnectionPriceMusd": {connection_price}, '
            f'"uptimePermille": {rw.uptime_permille}, "uptimeSeconds": {state.total}, "violation": {violation}')


class _Receipts:
    """A mint's inputs and outcome as stored (issue 14; cf. minting v3's receipt fields, §3.6): the JSON object
    shared by the run's nodes of one capacity and policy, made once, joined with the node's own (their keys
    are disjoint)."""

    def __init__(self, p: minting.Period) -> None:
        self._p = p
        self._shared: dict[tuple[Any, ...], str] = {}

    def text(self, state: uptime.UptimeState, held: minting.FarmingUnits, policy: minting.FarmingPolicy,
             rw: minting.Reward, connection_price: int) -> str:
        # keyed by integers: a Fraction's hash costs a modular inverse
        key = (held.cu.numerator, held.cu.denominator, held.su.numerator, held.su.denominator, held.certified, policy)
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = _shared(self._p, held, policy, rw.full_musd)[:-1]
        return f"{shared}, {_own(state, held, policy, rw, connection_price)}}}"


def _uptime_state(row: Any | None, period: minting.Period) -> uptime.UptimeState:
    """A node's uptime fold for one period from its ``_UPTIME`` row (empty when no row)."""
    if row is None:
        return uptime.UptimeState(period_start=period.start)
    _node, total, last_ts, last_uptime, boot_ts, violation, reports = row
    return uptime.UptimeState(period_start=period.start, total=total, last_ts=last_ts, last_uptime=last_uptime,
                              boot_ts=boot_ts, violation=uptime.Violation(violation) if violation else None,
                              reports=reports)


class MintingLedger(ContractsLedger):
    # ------------------------------------------------------------------ minting
    async def mint_period(self, *, period: int, now: int) -> records.PeriodReport:
        cfg = self.config
        p = minting.period_by_index(period, epoch=cfg.minting_epoch, length=cfg.minting_period_s)
        if now < p.end:
            raise errors.InvalidRequest(f"minting period {period} ends at {p.end}; it cannot be minted at {now}")
        a = schema.accounts
        async with self._tx() as conn:
            _, policies = await self._policies(conn)
            already = {r[0] for r in await fetch_rows(conn, "SELECT node_id FROM mints WHERE period = ?", [period])}
            nodes = sorted(await fetch_rows(conn, _NODES, [p.end, p.start]), key=lambda r: r[0])
            ups = {r[0]: r for r in await fetch_rows(conn, _UPTIME, [period])}
            held_by: dict[int, list[minting.Held]] = defaultdict(list)
            for node_id, from_ts, cru, mru, sru, hru, certified in await fetch_rows(conn, _CAPACITY, [p.end]):
                held_by[node_id].append(minting.Held(from_ts, Resources(cru, mru, sru, hru), bool(certified)))
            balances = dict((await conn.execute(sa.select(a.c.id, a.c.balance))).all())
            rows: list[tuple[Any, ...]] = []
            payouts: defaultdict[int, int] = defaultdict(int)
            changed, skipped, total = [], 0, 0
            receipts = _Receipts(p)
            for node_id, name, connection_price, payout in nodes:
                if node_id in already:
                    skipped += 1
                    continue
                state = _uptime_state(ups.get(node_id), p)
                held = minting.held_over(held_by.get(node_id, ()), p)
                policy = policies.get(2 if held.certified else 1, minting.policy_for(held.certified))
                rw = minting.reward(resources=held, certified=held.certified, state=state, period_seconds=p.seconds,
                                    policy=policy, connection_price_musd=connection_price)
                if rw.reason == "Rewarded" and held.cu == held.su == 0:
                    rw = minting.Reward(rw.uptime_permille, rw.full_musd, rw.musd, 0, "NotAttested")
                if balances.get(payout, 0) + payouts[payout] + rw.tft_units > money.MAX_UNITS:
                    # invariant 6: a reward past the ledger's bound is this node's problem, never every node's
                    rw = minting.Reward(rw.uptime_permille, rw.full_musd, rw.musd, 0, "Bounded")
                rows.append((node_id, period, rw.uptime_permille, rw.tft_units, rw.reason,
                             receipts.text(state, held, policy, rw, connection_price)))
                payouts[payout] += rw.tft_units
                total += rw.tft_units
                changed.append(name)
            await insert_rows(conn, "mints", _MINT_COLUMNS, rows)
            paid_out = [dict(aid=k, delta=v) for k, v in payouts.items() if v]
            if paid_out:
                await conn.execute(a.update().where(a.c.id == sa.bindparam("aid"))
                                   .values(balance=a.c.balance + sa.bindparam("delta")), paid_out)
            await self._advance(conn, "mint", period)
            return records.PeriodReport(period, len(rows), total, skipped, tuple(changed))

    async def mint_receipts(self, *, node: str, limit: int = 100) -> list[records.MintReceipt]:
        """A node's mints, newest first, each with the inputs it was computed from (issue 14)."""
        n, m = schema.nodes, schema.mints
        async with self._read() as conn:
            row = (await conn.execute(sa.select(n.c.id).where(n.c.name == node))).first()
            if row is None:
                raise errors.NotFound(f"node {node!r} is not on the ledger")
            rows = (await conn.execute(sa.select(m).where(m.c.node_id == row.id).order_by(m.c.period.desc())
                                       .limit(limit))).all()
        return [records.MintReceipt(node=node, period=r.period, amount=r.amount, reason=r.reason,
                                    uptime_permille=r.uptime_permille,
                                    inputs=json.loads(r.receipt) if r.receipt else {}) for r in rows]

    async def last_receipts(self) -> dict[str, records.MintReceipt]:
        """Each node's latest mint with its inputs (the Node status points to it), by node name."""
        n, m = schema.nodes, schema.mints
        newest = sa.select(m.c.node_id, sa.func.max(m.c.period).label("p")).group_by(m.c.node_id).subquery()
        async with self._read() as conn:
            rows = (await conn.execute(
                sa.select(m, n.c.name).join(n, n.c.id == m.c.node_id)
                .join(newest, sa.and_(newest.c.node_id == m.c.node_id, newest.c.p == m.c.period)))).all()
        return {r.name: records.MintReceipt(node=r.name, period=r.period, amount=r.amount, reason=r.reason,
                                            uptime_permille=r.uptime_permille,
                                            inputs=json.loads(r.receipt) if r.receipt else {}) for r in rows}
