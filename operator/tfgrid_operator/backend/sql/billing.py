"""Billing (Proof-of-Utilization): one bill per contract and period, the grace state machine, the payout split."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql.engine import (
    LIVE,
)
from tfgrid_operator.backend.sql.registry import RegistryLedger
from tfgrid_operator.domain import pricing
from tfgrid_operator.domain.units import Resources


class BillingLedger(RegistryLedger):
    def _billing_window(self, period: int) -> tuple[int, int]:
        length = self.config.billing_period_s
        return period * length, (period + 1) * length

    async def _bill_partial(self, conn: AsyncConnection, contract_id: int, now: int) -> None:
        """Bill [max(period start, created), now) of the current period once, keyed (contract, period)."""
        period = now // self.config.billing_period_s
        await self._bill(conn, period=period, now=now, only=contract_id, until=now)

    async def bill_period(self, *, period: int, now: int) -> records.PeriodReport:
        _start, end = self._billing_window(period)
        if now < end:
            raise errors.InvalidRequest(f"billing period {period} ends at {end}; it cannot be billed at {now}")
        async with self._tx() as conn:
            report = await self._bill(conn, period=period, now=now, only=None, until=end)
            await self._advance(conn, "bill", period)
            return report

    async def _bill(self, conn: AsyncConnection, *, period: int, now: int, only: int | None, until: int) -> records.PeriodReport:
        c, b, a, n, f = schema.contracts, schema.bills, schema.accounts, schema.nodes, schema.farms
        start, end = self._billing_window(period)
        until = min(until, end)
        policy, _ = await self._policies(conn)
        price = self.config.tft_price
        where = [c.c.created_at < until, sa.or_(c.c.deleted_at.is_(None), c.c.deleted_at > start),
                 c.c.state.in_(LIVE)]
        if only is not None:
            where.append(c.c.id == only)
        billed_until = dict((await conn.execute(  # per contract, how far this period is billed already
            sa.select(b.c.contract_id, sa.func.max(b.c.until)).where(b.c.period == period).group_by(b.c.contract_id))).all())
        rows = (await conn.execute(
            sa.select(c.c.id, c.c.key, c.c.account_id, c.c.cru, c.c.mru, c.c.sru, c.c.hru, c.c.public_ips, c.c.dedicated,
                      c.c.state, c.c.created_at, c.c.grace_since, c.c.overdraft, n.c.certified,
                      n.c.cru.label("ncru"), n.c.mru.label("nmru"), n.c.sru.label("nsru"), n.c.hru.label("nhru"),
                      f.c.account_id.label("farmer"))
            .join(n, n.c.id == c.c.node_id).join(f, f.c.id == n.c.farm_id).where(*where).order_by(c.c.id))).all()
        balances = {r.id: r.balance for r in (await conn.execute(sa.select(a.c.id, a.c.balance))).all()}
        start_balances = dict(balances)
        foundation = (await conn.execute(sa.select(a.c.id).where(a.c.name == self.config.foundation_account))).scalar_one()
        staking = (await conn.execute(sa.select(a.c.id).where(a.c.name == self.config.staking_pool_account))).scalar_one()
        new_bills: list[dict[str, Any]] = []
        quotes: dict[tuple[Any, ...], pricing.Quote] = {}
        contract_updates: list[dict[str, Any]] = []
        changed: list[str] = []
        skipped = 0
        total = 0

        def priced_for(r: Any, seconds: int) -> pricing.Bill:
            """A few contract shapes are priced once (Quote); each bill only picks its discount."""
            shape = (r.cru, r.mru, r.sru, r.hru, r.public_ips, seconds, r.certified, r.dedicated,
                     (r.ncru, r.nmru, r.nsru, r.nhru) if r.dedicated else None)
            quote = quotes.get(shape)
            if quote is None:
                quote = quotes[shape] = pricing.Quote.of(
                    resources=Resources(r.cru, r.mru, r.sru, r.hru), public_ips=r.public_ips, seconds=seconds,
                    certified=r.certified, dedicated_node=Resources(*shape[8]) if shape[8] else None,
                    policy=policy, price=price)
            return quote.bill(balance=balances[r.account_id])

        for r in rows:
            window_start = max(start, r.created_at, billed_until.get(r.id, start))
            window_end = until
            if r.id in billed_until and window_start >= window_end:
                skipped += 1
                continue
            deleted_at = None
            seconds = max(0, window_end - window_start)
            priced = priced_for(r, seconds)
            owed = priced.amount + r.overdraft
            if r.state == "GracePeriod" and r.grace_since is not None and owed > balances[r.account_id]:
                expiry = r.grace_since + self.config.grace_period_s
                if expiry < window_end:  # §2.4: the grace period ran out unpaid: bill up to its end, then Deleted
                    window_end = deleted_at = max(window_start, expiry)
                    seconds = window_end - window_start
                    priced = priced_for(r, seconds)
                    owed = priced.amount + r.overdraft
            paid = min(owed, balances[r.account_id])
            balances[r.account_id] -= paid
            shares = pricing.split(paid)
            balances[r.farmer] += shares.farmer
            balances[foundation] += shares.foundation
            balances[staking] += shares.staking_pool
            total += priced.amount
            new_bills.append(dict(contract_id=r.id, period=period, until=window_end, seconds=seconds,
                                  amount=priced.amount, paid=paid, discount=str(priced.discount), billed_at=now))
            overdraft = owed - paid
            state, grace_since = r.state, r.grace_since
            if overdraft > 0 and state == "Created":
                state, grace_since = "GracePeriod", window_end  # §2.4: Created → GracePeriod
            elif overdraft == 0 and state == "GracePeriod":
                state, grace_since = "Created", None  # §2.4: funded in time
            update = dict(cid=r.id, overdraft=overdraft, state=state, grace_since=grace_since,
                          deleted_at=None, deleted_reason=None)
            if deleted_at is not None:
                update.update(state="Deleted", deleted_at=deleted_at, deleted_reason="OutOfFunds")
            if (update["overdraft"], update["state"], update["grace_since"]) != (r.overdraft, r.state, r.grace_since):
                contract_updates.append(update)
                if update["state"] != r.state:
                    changed.append(r.key)
        if new_bills:
            await conn.execute(b.insert(), new_bills)
            await conn.execute(
                c.update().where(c.c.id == sa.bindparam("cid")).values(
                    billed_total=c.c.billed_total + sa.bindparam("amount_"), last_billed_at=sa.bindparam("billed_at_"),
                    last_discount=sa.bindparam("discount_")),
                [{"cid": x["contract_id"], "amount_": x["amount"], "billed_at_": x["billed_at"], "discount_": x["discount"]}
                 for x in new_bills])
        if contract_updates:
            await conn.execute(
                c.update().where(c.c.id == sa.bindparam("cid")).values(
                    overdraft=sa.bindparam("overdraft"), state=sa.bindparam("state"),
                    grace_since=sa.bindparam("grace_since"), deleted_at=sa.bindparam("deleted_at"),
                    deleted_reason=sa.bindparam("deleted_reason")),
                contract_updates)
        await self._write_balances(conn, start_balances, balances)
        return records.PeriodReport(period, len(new_bills), total, skipped, tuple(changed))

    async def _write_balances(self, conn: AsyncConnection, before: dict[int, int], after: dict[int, int]) -> None:
        a = schema.accounts
        deltas = [dict(aid=k, delta=after[k] - before.get(k, 0)) for k in after if after[k] != before.get(k, 0)]
        if deltas:
            await conn.execute(a.update().where(a.c.id == sa.bindparam("aid"))
                               .values(balance=a.c.balance + sa.bindparam("delta")), deltas)

