"""Billing (Proof-of-Utilization, version B) on the ledger: load a period's contracts, bill them with the pure
core (domain/billing.py: the grace state machine §2.4, settlement, the reserve and its payout §2.7), and write
what it returns set-based — the bills with compact receipts, every contract's totals, the state changes, the
payouts and one delta per account — in the caller's transaction.

The rules are not here: this module moves rows. Isolation (invariant 6) is the core's: a contract it refuses
keeps its money where it was and carries the reason in ``billing_error`` (its Deployment reports it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql.bulk import fetch_rows, insert_rows, update_rows
from tfgrid_operator.backend.sql.engine import inserted_id
from tfgrid_operator.backend.sql.registry import RegistryLedger
from tfgrid_operator.domain import billing, pricing

# domain.billing.ContractRow, in its order: the contract, its payer, its node's farm's payout account and
# certification, how far it is billed already (schema 8: its latest bill's end, kept on the contract; a window
# starts there at the earliest, and a contract billed to the run's end is skipped) and when its payer's grant ends
_CONTRACTS = (
    "SELECT c.id, c.account_id, f.account_id, c.cru, c.mru, c.sru, c.hru, c.public_ips, c.dedicated, "
    "n.certified, c.state, c.created_at, c.grace_since, c.overdraft, c.reserve, c.cycles, c.billed_total, "
    "c.billing_error, c.billed_until, c.proof_until "
    "FROM contracts c JOIN nodes n ON n.id = c.node_id JOIN farms f ON f.id = n.farm_id "
    "WHERE c.created_at < ? AND (c.deleted_at IS NULL OR c.deleted_at > ?) AND c.state IN ('Created', 'GracePeriod')")
# every billed contract: its totals, its last bill (whose window ends at the run's end, {{until}}, filled in per
# run: a bill ends earlier only where its contract is deleted, which _TRANSITION then records), and no error
_TOTALS = ("billed_total = billed_total + {amount}, last_billed_at = {billed_at}, last_discount = {discount}, "
           "last_bill_amount = {amount}, overdraft = {overdraft}, reserve = {reserve}, cycles = {cycles}, "
           "billing_error = NULL, billed_until = {{until}}")
_TRANSITION = ("state = {state}, grace_since = {grace_since}, deleted_at = {deleted_at}, "
               "deleted_reason = {deleted_reason}, billed_until = COALESCE({deleted_at}, billed_until)")
_SQL_TYPES = dict(amount="bigint", discount="text", overdraft="bigint", reserve="bigint", cycles="int",
                  billed_at="bigint", id="int", state="text", grace_since="bigint", deleted_at="bigint",
                  deleted_reason="text")
_TOTALS_COLUMNS = tuple((name, _SQL_TYPES[name]) for name in billing.UPDATE_FIELDS)
_TRANSITION_COLUMNS = tuple((name, _SQL_TYPES[name]) for name in billing.TRANSITION_FIELDS)


class BillingLedger(RegistryLedger):
    def _billing_window(self, period: int) -> tuple[int, int]:
        length = self.config.billing_period_s
        return period * length, (period + 1) * length

    async def _bill_partial(self, conn: AsyncConnection, contract_ids: Collection[int], now: int) -> None:
        """Bill the contracts up to ``now``: first every ended period the billing loop has not billed yet (so a
        close or move just after an hour's end never skips that hour), then [max(period start, created), now)
        of the current period, each once, keyed (contract, period, until). Only a window that ends at its
        period's end counts as a billing cycle (§2.7). Several contracts (closes that arrived together) are one
        batch, billed in order as the billing loop bills a period's: one read, one write of each kind of row."""
        length = self.config.billing_period_s
        current = now // length
        loop_at = await self._meta(conn, "watermark:bill")
        for period in range(int(loop_at) if loop_at is not None else current, current):
            await self._bill(conn, period=period, now=now, only=contract_ids, until=(period + 1) * length)
        await self._bill(conn, period=current, now=now, only=contract_ids, until=now)

    async def bill_period(self, *, period: int, now: int) -> records.PeriodReport:
        _start, end = self._billing_window(period)
        if now < end:
            raise errors.InvalidRequest(f"billing period {period} ends at {end}; it cannot be billed at {now}")
        async with self._tx() as conn:
            report = await self._bill(conn, period=period, now=now, only=None, until=end)
            await self._advance(conn, "bill", period)
            return report

    async def _bill(self, conn: AsyncConnection, *, period: int, now: int, only: Collection[int] | None,
                    until: int) -> records.PeriodReport:
        """Bill the live contracts of ``period`` (or only these) up to ``until``: load, bill in order, write."""
        start, end = self._billing_window(period)
        until = min(until, end)
        sql, params = _CONTRACTS, [until, start]
        if only is not None:  # ids from the ledger itself, as integers: written into the statement
            sql = sql + f" AND c.id IN ({', '.join(str(int(i)) for i in sorted(only)) or 'NULL'})"
        rows = await fetch_rows(conn, sql, params)  # bill_batch orders them
        if not rows:
            return records.PeriodReport(period, 0, 0, 0, ())
        policy, _ = await self._policies(conn)
        foundation, staking = await self._grid_accounts(conn)
        a = schema.accounts
        balances_of = sa.select(a.c.id, a.c.balance)
        if only is not None:  # a few contracts: their payers, their farmers and the grid's accounts
            balances_of = balances_of.where(a.c.id.in_({r[1] for r in rows} | {r[2] for r in rows} | {foundation, staking}))
        balances = dict((await conn.execute(balances_of)).all())
        run = billing.Run(period=period, start=start, end=end, until=until, now=now,
                          grace_s=self.config.grace_period_s, frequency=self.config.distribution_frequency,
                          foundation=foundation, staking=staking, policy=policy, price=self.config.tft_price)
        q = schema.bill_quotes
        first_quote_id = (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(q.c.id), 0) + 1))).scalar_one()
        batch = billing.bill_batch(rows, balances, run, first_quote_id=first_quote_id)
        await self._write_batch(conn, batch, balances, policy, until)
        return records.PeriodReport(period, len(batch.bills), batch.total, batch.skipped,
                                    await self._keys(conn, batch.changed))

    async def _write_batch(self, conn: AsyncConnection, batch: billing.Batch, before: dict[int, int],
                           policy: pricing.PricingPolicy, until: int) -> None:
        """Write one run's results, each kind of row in one statement; its bills end at ``until`` (or earlier, where
        their contract is deleted)."""
        if batch.bills:
            rates_id = await self._rates_id(conn, policy, self.config.tft_price)
            await conn.execute(schema.bill_quotes.insert(), [q._asdict() | {"rates_id": rates_id} for q in batch.quotes])
            await insert_rows(conn, "bills", billing.BILL_FIELDS, batch.bills)
            totals = _TOTALS.replace("{{until}}", str(int(until)))  # an integer: one value for the whole run
            await update_rows(conn, "contracts", totals, _TOTALS_COLUMNS, batch.updates)
            await update_rows(conn, "contracts", _TRANSITION, _TRANSITION_COLUMNS, batch.transitions)
        await insert_rows(conn, "payouts", billing.PAYOUT_FIELDS, batch.payouts)
        await update_rows(conn, "contracts", "billing_error = {billing_error}", (("billing_error", "text"), ("id", "int")),
                          [(message, cid) for cid, message in batch.refused])
        await self._write_balances(conn, before, batch.balances)

    async def _keys(self, conn: AsyncConnection, ids: list[int]) -> tuple[str, ...]:
        """The Deployment keys of these contracts, in their order (a run's changed contracts: usually few)."""
        c = schema.contracts
        keys: dict[int, str] = {}
        for i in range(0, len(ids), 1000):
            keys.update((await conn.execute(sa.select(c.c.id, c.c.key).where(c.c.id.in_(ids[i:i + 1000])))).all())
        return tuple(keys[cid] for cid in ids)

    async def _rates_id(self, conn: AsyncConnection, policy: pricing.PricingPolicy, price: pricing.TftPrice) -> int:
        """The id of the bill_rates row of these prices, made on first use."""
        r = schema.bill_rates
        values = dict(tft_average_musd=price.average_musd, tft_min_musd=price.min_musd, tft_max_musd=price.max_musd,
                      cu=policy.cu, su=policy.su, nu=policy.nu, ipu=policy.ipu, unique_name=policy.unique_name,
                      dedicated_percent=policy.discount_for_dedication_nodes,
                      certified_percent=policy.certified_factor_percent)
        found = (await conn.execute(sa.select(r.c.id).where(*(getattr(r.c, k) == v for k, v in values.items())))).scalar()
        if found is not None:
            return int(found)
        return inserted_id(await conn.execute(r.insert().values(tft_musd=price.effective(), **values)))

    async def _pay_out(self, conn: AsyncConnection, closed: Mapping[int, int]) -> None:
        """§2.7: a deleted contract's reserve is paid out at once (its final bill came first); ``closed``: contract
        id → when it closed. A payout that would pass MONEY_MAX stays in the reserve, with the reason on the
        contract (invariant 6). Several contracts are paid out in id order, each on the balances the ones before
        it left, written in one statement of each kind."""
        c, n, f, a = schema.contracts, schema.nodes, schema.farms, schema.accounts
        rows = (await conn.execute(sa.select(c.c.id, c.c.reserve, f.c.account_id.label("farmer"))
                                   .join(n, n.c.id == c.c.node_id).join(f, f.c.id == n.c.farm_id)
                                   .where(c.c.id.in_(set(closed))).order_by(c.c.id))).all()
        paid = [r for r in rows if r.reserve != 0]
        done = {r.id for r in rows if r.reserve == 0}  # nothing to pay out: its cycles end
        payouts: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        before: dict[int, int] = {}
        if paid:
            foundation, staking = await self._grid_accounts(conn)
            accounts = {r.farmer for r in paid} | {foundation, staking}
            before = dict((await conn.execute(sa.select(a.c.id, a.c.balance).where(a.c.id.in_(accounts)))).all())
        balances = dict(before)
        for r in paid:
            shares, gains = billing.payout_gains(r.reserve, farmer=r.farmer, foundation=foundation, staking=staking)
            problem = billing.past_bound(balances, gains)
            if problem:
                refused.append(dict(cid=r.id, error=f"payout: {problem}"))
                continue
            payouts.append(dict(contract_id=r.id, at=closed[r.id], reason="Deleted", amount=r.reserve,
                                farmer_account_id=r.farmer, farmer=shares.farmer, foundation=shares.foundation,
                                staking_pool=shares.staking_pool))
            done.add(r.id)
            for aid, gain in gains.items():
                balances[aid] += gain
        if refused:
            await conn.execute(c.update().where(c.c.id == sa.bindparam("cid"))
                               .values(billing_error=sa.bindparam("error")), refused)
        if payouts:
            await conn.execute(schema.payouts.insert(), payouts)
        if done:  # paid out (or nothing to pay): reserve and cycles end; a reserve of 0 stays 0
            await conn.execute(c.update().where(c.c.id.in_(done)).values(reserve=0, cycles=0))
        await self._write_balances(conn, before, balances)

    async def _write_balances(self, conn: AsyncConnection, before: dict[int, int], after: dict[int, int]) -> None:
        a = schema.accounts
        deltas = [dict(aid=k, delta=after[k] - before.get(k, 0)) for k in after if after[k] != before.get(k, 0)]
        if deltas:
            await conn.execute(a.update().where(a.c.id == sa.bindparam("aid"))
                               .values(balance=a.c.balance + sa.bindparam("delta")), deltas)

    async def bills(self, *, key: str, period: int | None = None) -> list[records.Bill]:
        """The bills of a Deployment's contracts (all of them, across moves), oldest first, with receipts."""
        c, b, q, r = schema.contracts, schema.bills, schema.bill_quotes, schema.bill_rates
        query = (sa.select(b, c.c.key, *(col.label(f"q_{col.name}") for col in q.columns),
                           *(col.label(f"rate_{col.name}") for col in r.columns))
                 .join(c, c.c.id == b.c.contract_id).outerjoin(q, q.c.id == b.c.quote_id)
                 .outerjoin(r, r.c.id == sa.func.coalesce(q.c.rates_id, b.c.rates_id)).where(c.c.key == key))
        if period is not None:
            query = query.where(b.c.period == period)
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(b.c.until, b.c.contract_id))).all()
        return [records.Bill(contract_id=x.contract_id, key=x.key, period=x.period, start=x.until - x.seconds,
                             until=x.until, seconds=x.seconds, amount=x.amount, paid=x.paid, discount=x.discount,
                             billed_at=x.billed_at, receipt=_receipt(x)) for x in rows]

    async def payouts(self, *, key: str) -> list[records.Payout]:
        """§2.7: the reserve payouts of a Deployment's contracts, oldest first."""
        c, p, a = schema.contracts, schema.payouts, schema.accounts
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(p, a.c.name.label("farmer_name")).join(c, c.c.id == p.c.contract_id)
                                       .join(a, a.c.id == p.c.farmer_account_id).where(c.c.key == key)
                                       .order_by(p.c.at, p.c.id))).all()
        return [records.Payout(contract_id=x.contract_id, at=x.at, reason=x.reason, amount=x.amount,
                               farmer_account=x.farmer_name, farmer=x.farmer, foundation=x.foundation,
                               staking_pool=x.staking_pool) for x in rows]


_SHARED = ("cru", "mru", "sru", "hru", "public_ips", "rented", "cu_milli", "su_milli", "cost_usd", "gross",
           "discount_percent", "discounted", "certified_percent")


def _receipt(x: Any) -> dict[str, object]:
    """A bill's receipt: every input and each rounding step of §2.6, the debt it carried and what the payer's
    balance paid. The shared steps come from its bill_quotes row (schema 6) or its own columns (4-5); empty for
    bills made before receipts were kept."""
    if x.q_id is not None:
        s = {name: getattr(x, f"q_{name}") for name in _SHARED}
    elif x.gross is not None:
        s = {name: getattr(x, name) for name in _SHARED}
    else:
        return {}
    owed = x.amount + x.overdraft_before
    return {
        "resources": {"cru": s["cru"], "mru": s["mru"], "sru": s["sru"], "hru": s["hru"]},
        "publicIPs": s["public_ips"], "rented": bool(s["rented"]), "cu": _milli(s["cu_milli"]), "su": _milli(s["su_milli"]),
        "prices": {"cu": x.rate_cu, "su": x.rate_su, "nu": x.rate_nu, "ipu": x.rate_ipu,
                   "uniqueName": x.rate_unique_name, "dedicatedPercent": x.rate_dedicated_percent},
        "tftPrice": {"averageMusd": x.rate_tft_average_musd, "minMusd": x.rate_tft_min_musd,
                     "maxMusd": x.rate_tft_max_musd, "usedMusd": x.rate_tft_musd,
                     "clamped": x.rate_tft_musd != x.rate_tft_average_musd},
        "costUnitsUsd": s["cost_usd"], "gross": s["gross"], "balance": x.balance, "discount": x.discount,
        "discountPercent": s["discount_percent"], "discounted": s["discounted"],
        "certifiedPercent": s["certified_percent"], "amount": x.amount, "overdraftBefore": x.overdraft_before,
        "owed": owed, "paid": x.paid, "overdraftAfter": owed - x.paid, "cycle": x.cycle,
    }


def _milli(value: int) -> str:
    whole, frac = divmod(value, 1000)
    return f"{whole}.{frac:03d}".rstrip("0").rstrip(".")
