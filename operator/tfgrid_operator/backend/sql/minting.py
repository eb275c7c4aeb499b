"""Minting (Proof-of-Capacity): one receipt per node and period, paid to the farm's payout account.

The capacity minted is the one the node's key attested, time-weighted over the period (``minting.held_over``),
never the Node's current spec; certified only if the council's certification held for the whole period.
Every mint keeps its inputs as a receipt (issue 14): ``mint_receipts`` reads them back.
"""

from __future__ import annotations

import json
from collections import defaultdict
from fractions import Fraction
from typing import Any

import sqlalchemy as sa

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql import capacity
from tfgrid_operator.backend.sql.contracts import ContractsLedger
from tfgrid_operator.backend.sql.engine import _uptime_state
from tfgrid_operator.domain import minting, money, uptime


def _exact(x: Fraction) -> str:
    """A Fraction as text that reads back exactly: "7.75" when it is a short decimal, else "31/3"."""
    return str(x.numerator) if x.denominator == 1 else (
        f"{float(x):.6g}" if Fraction(f"{float(x):.6g}") == x else f"{x.numerator}/{x.denominator}")


def receipt(*, p: minting.Period, state: uptime.UptimeState, held: minting.FarmingUnits, policy: minting.FarmingPolicy,
            rw: minting.Reward, connection_price: int) -> dict[str, Any]:
    """A mint's inputs and outcome (issue 14; cf. minting v3's receipt fields, §3.6)."""
    factor = Fraction(5, 4) if held.certified and policy.id == 1 else Fraction(1)
    return {
        "period": p.index, "start": p.start, "end": p.end, "periodSeconds": p.seconds,
        "uptimeSeconds": state.total, "uptimePermille": rw.uptime_permille, "reports": state.reports,
        "violation": str(state.violation) if state.violation else None,
        "cu": _exact(held.cu), "su": _exact(held.su), "certified": held.certified, "certifiedFactor": _exact(factor),
        "policy": {"id": policy.id, "cu": policy.cu, "su": policy.su, "nu": policy.nu, "ipv4": policy.ipv4,
                   "minimalUptime": policy.minimal_uptime, "default": policy.default},
        "sla": {"outcome": "Paid" if rw.tft_units > 0 else "Unpaid", "reason": rw.reason,
                "permille": (minting.SLA_CERTIFIED_PERMILLE if held.certified else minting.SLA_DIY_PERMILLE)
                if policy.default else policy.minimal_uptime},
        "fullMusd": _exact(rw.full_musd), "rewardMusd": _exact(rw.musd),
        "tftConnectionPriceMusd": connection_price, "amount": rw.tft_units,
    }


class MintingLedger(ContractsLedger):
    # ------------------------------------------------------------------ minting
    async def mint_period(self, *, period: int, now: int) -> records.PeriodReport:
        cfg = self.config
        p = minting.period_by_index(period, epoch=cfg.minting_epoch, length=cfg.minting_period_s)
        if now < p.end:
            raise errors.InvalidRequest(f"minting period {period} ends at {p.end}; it cannot be minted at {now}")
        n, f, u, m, a = schema.nodes, schema.farms, schema.uptime, schema.mints, schema.accounts
        async with self._tx() as conn:
            _, policies = await self._policies(conn)
            already = set((await conn.execute(sa.select(m.c.node_id).where(m.c.period == period))).scalars())
            nodes = (await conn.execute(
                sa.select(n, f.c.account_id.label("payout")).join(f, f.c.id == n.c.farm_id)
                .where(n.c.created_at < p.end, sa.or_(n.c.closed_at.is_(None), n.c.closed_at > p.start))
                .order_by(n.c.id))).all()
            ups = {r.node_id: r for r in (await conn.execute(sa.select(u).where(u.c.period == period))).all()}
            held_by = await capacity.histories(conn, (r.id for r in nodes if r.id not in already))
            balances = dict((await conn.execute(sa.select(a.c.id, a.c.balance))).all())
            receipts, payouts, changed, skipped, total = [], defaultdict(int), [], 0, 0
            for r in nodes:
                if r.id in already:
                    skipped += 1
                    continue
                state = _uptime_state(ups.get(r.id), p)
                held = minting.held_over(held_by.get(r.id, []), p)
                policy = policies.get(2 if held.certified else 1, minting.policy_for(held.certified))
                rw = minting.reward(resources=held, certified=held.certified, state=state, period_seconds=p.seconds,
                                    policy=policy, connection_price_musd=r.connection_price)
                if rw.reason == "Rewarded" and held.cu == held.su == 0:
                    rw = minting.Reward(rw.uptime_permille, rw.full_musd, rw.musd, 0, "NotAttested")
                if balances.get(r.payout, 0) + payouts[r.payout] + rw.tft_units > money.MAX_UNITS:
                    # invariant 6: a reward past the ledger's bound is this node's problem, never every node's
                    rw = minting.Reward(rw.uptime_permille, rw.full_musd, rw.musd, 0, "Bounded")
                receipts.append(dict(node_id=r.id, period=period, uptime_permille=rw.uptime_permille,
                                     amount=rw.tft_units, reason=rw.reason, receipt=json.dumps(receipt(
                                         p=p, state=state, held=held, policy=policy, rw=rw,
                                         connection_price=r.connection_price), sort_keys=True)))
                payouts[r.payout] += rw.tft_units
                total += rw.tft_units
                changed.append(r.name)
            if receipts:
                await conn.execute(m.insert(), receipts)
            paid_out = [dict(aid=k, delta=v) for k, v in payouts.items() if v]
            if paid_out:
                await conn.execute(a.update().where(a.c.id == sa.bindparam("aid"))
                                   .values(balance=a.c.balance + sa.bindparam("delta")), paid_out)
            await self._advance(conn, "mint", period)
            return records.PeriodReport(period, len(receipts), total, skipped, tuple(changed))


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
