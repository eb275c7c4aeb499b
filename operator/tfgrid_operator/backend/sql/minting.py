"""Minting (Proof-of-Capacity): one receipt per node and period, paid to the farm's payout account."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql.contracts import ContractsLedger
from tfgrid_operator.backend.sql.engine import (
    _res,
    _uptime_state,
)
from tfgrid_operator.domain import minting


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
            receipts, payouts, changed, skipped, total = [], defaultdict(int), [], 0, 0
            for r in nodes:
                if r.id in already:
                    skipped += 1
                    continue
                state = _uptime_state(ups.get(r.id), p)
                policy = policies.get(2 if r.certified else 1, minting.policy_for(r.certified))
                rw = minting.reward(resources=_res(r), certified=r.certified, state=state, period_seconds=p.seconds,
                                    policy=policy, connection_price_musd=r.connection_price)
                receipts.append(dict(node_id=r.id, period=period, uptime_permille=rw.uptime_permille,
                                     amount=rw.tft_units, reason=rw.reason))
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

