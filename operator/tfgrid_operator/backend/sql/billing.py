"""Billing (Proof-of-Utilization, version B): one bill per contract and window with its receipt, the grace
state machine (§2.4), reserves paid out every 24 cycles and on deletion (§2.7), each contract on its own.

Money moves in one direction per step, and every unit is somewhere at every moment (invariant 7):
a bill moves ``paid`` from the payer's balance into the contract's reserve; a payout moves the whole
reserve to the farmer, the foundation and the staking pool (pricing.split). What the payer could not
pay is the contract's overdraft, carried into its next bill (and into the new contract of a move).

Isolation (invariant 6): each contract is priced, checked against MONEY_MAX and applied on its own; one
whose amounts would pass MONEY_MAX (money.MAX_UNITS) is not billed, keeps its money where it was, and carries the reason in
``billing_error`` (its Deployment reports it); the others are billed as usual.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.schema import MONEY_MAX
from tfgrid_operator.backend.sql.engine import LIVE
from tfgrid_operator.backend.sql.registry import RegistryLedger
from tfgrid_operator.domain import money, pricing, units
from tfgrid_operator.domain.units import Resources


class _Overflow(Exception):
    """One contract's amounts would leave the ledger's bounds: it is not billed (invariant 6)."""


@dataclasses.dataclass(slots=True)
class _Accounts:
    """Balances as the run moves them; written back as one delta per account at the end."""

    balances: dict[int, int]
    before: dict[int, int]

    def check(self, gains: dict[int, int]) -> None:
        for aid, amount in gains.items():
            if self.balances[aid] + amount > MONEY_MAX:
                raise _Overflow(f"paying {money.tft(amount)} TFT out would take account {aid} past the ledger's "
                                f"bound of {money.tft(MONEY_MAX)} TFT")

    def move(self, deltas: dict[int, int]) -> None:
        for aid, amount in deltas.items():
            self.balances[aid] += amount


def _payout(reserve: int, farmer: int, foundation: int, staking: int) -> tuple[pricing.Split, dict[int, int]]:
    shares = pricing.split(reserve)
    gains: dict[int, int] = {}
    for aid, share in ((farmer, shares.farmer), (foundation, shares.foundation), (staking, shares.staking_pool)):
        gains[aid] = gains.get(aid, 0) + share
    return shares, gains


class BillingLedger(RegistryLedger):
    def _billing_window(self, period: int) -> tuple[int, int]:
        length = self.config.billing_period_s
        return period * length, (period + 1) * length

    async def _bill_partial(self, conn: AsyncConnection, contract_id: int, now: int) -> None:
        """Bill the contract up to ``now``: first every ended period the billing loop has not billed yet (so a
        close or move just after an hour's end never skips that hour), then [max(period start, created), now)
        of the current period, each once, keyed (contract, period, until). Only a window that ends at its
        period's end counts as a billing cycle (§2.7)."""
        length = self.config.billing_period_s
        current = now // length
        loop_at = await self._meta(conn, "watermark:bill")
        for period in range(int(loop_at) if loop_at is not None else current, current):
            await self._bill(conn, period=period, now=now, only=contract_id, until=(period + 1) * length)
        await self._bill(conn, period=current, now=now, only=contract_id, until=now)

    async def bill_period(self, *, period: int, now: int) -> records.PeriodReport:
        _start, end = self._billing_window(period)
        if now < end:
            raise errors.InvalidRequest(f"billing period {period} ends at {end}; it cannot be billed at {now}")
        async with self._tx() as conn:
            report = await self._bill(conn, period=period, now=now, only=None, until=end)
            await self._advance(conn, "bill", period)
            return report

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
        return int((await conn.execute(r.insert().values(tft_musd=price.effective(), **values))).inserted_primary_key[0])

    async def _grid_accounts(self, conn: AsyncConnection) -> tuple[int, int]:
        a = schema.accounts
        ids = dict((await conn.execute(sa.select(a.c.name, a.c.id).where(
            a.c.name.in_((self.config.foundation_account, self.config.staking_pool_account))))).all())
        return ids[self.config.foundation_account], ids[self.config.staking_pool_account]

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
                      c.c.state, c.c.created_at, c.c.grace_since, c.c.overdraft, c.c.reserve, c.c.cycles,
                      c.c.billed_total, c.c.billing_error, n.c.certified,
                      f.c.account_id.label("farmer"))
            .join(n, n.c.id == c.c.node_id).join(f, f.c.id == n.c.farm_id).where(*where).order_by(c.c.id))).all()
        if not rows:
            return records.PeriodReport(period, 0, 0, 0, ())
        if only is None:
            balances = {r.id: r.balance for r in (await conn.execute(sa.select(a.c.id, a.c.balance))).all()}
        else:
            balances = {r.id: r.balance for r in (await conn.execute(sa.select(a.c.id, a.c.balance).where(
                a.c.id.in_({rows[0].account_id, rows[0].farmer, *await self._grid_accounts(conn)})))).all()}
        accounts = _Accounts(balances, dict(balances))
        foundation, staking = await self._grid_accounts(conn)
        rates_id = await self._rates_id(conn, policy, price)
        new_bills: list[dict[str, Any]] = []
        payouts: list[dict[str, Any]] = []
        quotes: dict[tuple[Any, ...], pricing.Quote] = {}
        contract_updates: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []  # contracts not billed (invariant 6), with the reason
        changed: list[str] = []
        skipped = 0
        total = 0

        def priced_for(r: Any, seconds: int) -> pricing.Bill:
            """A few contract shapes are priced once (Quote); each bill only picks its discount."""
            shape = (r.cru, r.mru, r.sru, r.hru, r.public_ips, seconds, r.certified, r.dedicated)
            quote = quotes.get(shape)
            if quote is None:
                reserved = Resources(r.cru, r.mru, r.sru, r.hru)
                # a rent is priced on what its contract reserved at placement (the whole node as it was then, capped
                # by what the node attested), never on the node's spec now: a farmer raising the spec cannot raise it
                quote = quotes[shape] = pricing.Quote.of(
                    resources=reserved, public_ips=r.public_ips, seconds=seconds, certified=r.certified,
                    dedicated_node=reserved if r.dedicated else None, policy=policy, price=price)
            return quote.bill(balance=accounts.balances[r.account_id])

        for r in rows:
            window_start = max(start, r.created_at, billed_until.get(r.id, start))
            if r.id in billed_until and window_start >= until:
                skipped += 1
                continue
            try:
                bill_row, update, payout, deltas = self._bill_one(
                    r, accounts, priced_for, window_start=window_start, window_end=until, period=period, now=now,
                    cycle=until == end, foundation=foundation, staking=staking)
            except _Overflow as exc:
                message = f"billing period {period}: {exc}"
                if r.billing_error != message:
                    refused.append(dict(cid=r.id, billing_error=message))
                    changed.append(r.key)
                continue
            accounts.move(deltas)
            total += bill_row["amount"]
            new_bills.append({**bill_row, "rates_id": rates_id})
            if payout is not None:
                payouts.append(payout)
            # one UPDATE per billed contract: its totals and its state, reserve and cycles together
            contract_updates.append({**update, "amount_": bill_row["amount"], "billed_at_": now,
                                     "discount_": bill_row["discount"]})
            if update["state"] != r.state or r.billing_error is not None:
                changed.append(r.key)
        if new_bills:  # 100,000 rows a period: plain executemany of tuples, without per-row parameter processing
            columns = list(new_bills[0])
            await _executemany(conn, f"INSERT INTO bills ({', '.join(_q(k) for k in columns)}) VALUES ({{}})",
                               len(columns), [tuple(x[k] for k in columns) for x in new_bills])
            await _executemany(
                conn, "UPDATE contracts SET billed_total = billed_total + {}, last_billed_at = {}, last_discount = {}, "
                "last_bill_amount = {}, overdraft = {}, state = {}, grace_since = {}, deleted_at = {}, "
                "deleted_reason = {}, reserve = {}, cycles = {}, billing_error = {} WHERE id = {}", None,
                [(u["amount_"], u["billed_at_"], u["discount_"], u["amount_"], u["overdraft"], u["state"],
                  u["grace_since"], u["deleted_at"], u["deleted_reason"], u["reserve"], u["cycles"], u["billing_error"],
                  u["cid"]) for u in contract_updates])
        if payouts:
            await conn.execute(schema.payouts.insert(), payouts)
        if refused:
            await conn.execute(c.update().where(c.c.id == sa.bindparam("cid"))
                               .values(billing_error=sa.bindparam("billing_error")), refused)
        await self._write_balances(conn, accounts.before, accounts.balances)
        return records.PeriodReport(period, len(new_bills), total, skipped, tuple(changed))

    def _bill_one(self, r: Any, accounts: _Accounts, priced_for: Any, *, window_start: int, window_end: int,
                  period: int, now: int, cycle: bool, foundation: int,
                  staking: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, dict[int, int]]:
        """One contract's bill, its state change and its payout, computed without touching anything; raises
        _Overflow when any amount would pass MONEY_MAX. The caller applies the returned balance deltas."""
        balance = accounts.balances[r.account_id]
        deleted_at = None
        seconds = max(0, window_end - window_start)
        priced = priced_for(r, seconds)
        owed = priced.amount + r.overdraft
        if r.state == "GracePeriod" and r.grace_since is not None and owed > balance:
            expiry = r.grace_since + self.config.grace_period_s
            if expiry <= window_end:  # §2.4: now − grace_start ≥ 14 days, unpaid: bill up to the expiry, then Deleted
                window_end = deleted_at = max(window_start, expiry)
                seconds = window_end - window_start
                priced = priced_for(r, seconds)
                owed = priced.amount + r.overdraft
        if owed > MONEY_MAX or r.billed_total + priced.amount > MONEY_MAX:
            raise _Overflow(f"the amount due, {money.tft(owed)} TFT, is beyond the ledger's bound of "
                            f"{money.tft(MONEY_MAX)} TFT")
        paid = min(owed, balance)
        reserve = r.reserve + paid
        if reserve > MONEY_MAX:
            raise _Overflow(f"the contract's reserve would pass the ledger's bound of {money.tft(MONEY_MAX)} TFT")
        cycles = r.cycles + 1 if cycle else r.cycles
        deltas = {r.account_id: -paid}
        payout = None
        if deleted_at is not None or cycles >= self.config.distribution_frequency:
            shares, gains = _payout(reserve, r.farmer, foundation, staking)
            accounts.check({aid: amount + deltas.get(aid, 0) for aid, amount in gains.items()})
            for aid, amount in gains.items():
                deltas[aid] = deltas.get(aid, 0) + amount
            if reserve:
                payout = dict(contract_id=r.id, at=window_end, reason="Deleted" if deleted_at is not None else "Cycles",
                              amount=reserve, farmer_account_id=r.farmer, farmer=shares.farmer,
                              foundation=shares.foundation, staking_pool=shares.staking_pool)
            reserve, cycles = 0, 0
        cu_milli, su_milli = _units_milli(r.cru, r.mru, r.sru, r.hru)
        bill_row = dict(
            contract_id=r.id, period=period, until=window_end, seconds=seconds, amount=priced.amount, paid=paid,
            discount=str(priced.discount), billed_at=now, cru=r.cru, mru=r.mru, sru=r.sru, hru=r.hru,
            public_ips=r.public_ips, rented=bool(r.dedicated),
            cu_milli=cu_milli, su_milli=su_milli, cost_usd=priced.cost_units_usd,
            gross=priced.gross, balance=balance, discount_percent=priced.discount_percent,
            discounted=priced.discounted, certified_percent=priced.certified_percent, overdraft_before=r.overdraft,
            cycle=r.cycles + 1 if cycle else None)
        overdraft = owed - paid
        state, grace_since = r.state, r.grace_since
        if overdraft > 0 and state == "Created":
            state, grace_since = "GracePeriod", window_end  # §2.4: Created → GracePeriod
        elif overdraft == 0 and state == "GracePeriod":
            state, grace_since = "Created", None  # §2.4: funded in time
        update = dict(cid=r.id, overdraft=overdraft, state=state, grace_since=grace_since, deleted_at=None,
                      deleted_reason=None, reserve=reserve, cycles=cycles, billing_error=None)
        if deleted_at is not None:
            update.update(state="Deleted", deleted_at=deleted_at, deleted_reason="OutOfFunds")
        return bill_row, update, payout, deltas

    async def _pay_out(self, conn: AsyncConnection, contract_id: int, now: int) -> None:
        """§2.7: a deleted contract's reserve is paid out at once (its final bill came first). A payout that
        would pass MONEY_MAX stays in the reserve, with the reason on the contract (invariant 6)."""
        c, n, f, a = schema.contracts, schema.nodes, schema.farms, schema.accounts
        row = (await conn.execute(sa.select(c.c.reserve, f.c.account_id.label("farmer"))
                                  .join(n, n.c.id == c.c.node_id).join(f, f.c.id == n.c.farm_id)
                                  .where(c.c.id == contract_id))).one()
        if row.reserve == 0:
            await conn.execute(c.update().where(c.c.id == contract_id).values(cycles=0))
            return
        foundation, staking = await self._grid_accounts(conn)
        shares, gains = _payout(row.reserve, row.farmer, foundation, staking)
        balances = dict((await conn.execute(sa.select(a.c.id, a.c.balance).where(a.c.id.in_(set(gains))))).all())
        accounts = _Accounts(balances, dict(balances))
        try:
            accounts.check(gains)
        except _Overflow as exc:
            await conn.execute(c.update().where(c.c.id == contract_id).values(billing_error=f"payout: {exc}"))
            return
        await conn.execute(schema.payouts.insert().values(
            contract_id=contract_id, at=now, reason="Deleted", amount=row.reserve, farmer_account_id=row.farmer,
            farmer=shares.farmer, foundation=shares.foundation, staking_pool=shares.staking_pool))
        await conn.execute(c.update().where(c.c.id == contract_id).values(reserve=0, cycles=0))
        accounts.move(gains)
        await self._write_balances(conn, accounts.before, accounts.balances)

    async def bills(self, *, key: str, period: int | None = None) -> list[records.Bill]:
        """The bills of a Deployment's contracts (all of them, across moves), oldest first, with receipts."""
        c, b, r = schema.contracts, schema.bills, schema.bill_rates
        query = (sa.select(b, c.c.key, *(col.label(f"rate_{col.name}") for col in r.columns))
                 .join(c, c.c.id == b.c.contract_id).outerjoin(r, r.c.id == b.c.rates_id).where(c.c.key == key))
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

    async def _write_balances(self, conn: AsyncConnection, before: dict[int, int], after: dict[int, int]) -> None:
        a = schema.accounts
        deltas = [dict(aid=k, delta=after[k] - before.get(k, 0)) for k in after if after[k] != before.get(k, 0)]
        if deltas:
            await conn.execute(a.update().where(a.c.id == sa.bindparam("aid"))
                               .values(balance=a.c.balance + sa.bindparam("delta")), deltas)


def _q(name: str) -> str:
    return f'"{name}"'  # quoted: "until" and friends are words in some SQL dialects


async def _executemany(conn: AsyncConnection, sql: str, values: int | None, rows: list[tuple[Any, ...]]) -> None:
    """One statement for many rows, straight to the driver. ``sql`` has ``{}`` for each parameter, or one ``{}``
    for ``values`` comma-separated parameters; they become the dialect's placeholders (? or $n)."""
    count = values if values is not None else sql.count("{}")
    dollar = conn.dialect.paramstyle == "numeric_dollar"
    marks = [f"${i + 1}" if dollar else "?" for i in range(count)]
    text = sql.format(", ".join(marks)) if values is not None else sql.format(*marks)
    await conn.exec_driver_sql(text, rows)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4096)
def _units_milli(cru: int, mru: int, sru: int, hru: int) -> tuple[int, int]:
    """A contract's billing CU and SU in thousandths, for its receipts (a grid has few shapes: cached)."""
    res = Resources(cru, mru, sru, hru)
    return money.round_half_up(units.billing_cu(res) * 1000), money.round_half_up(units.billing_su(res) * 1000)


def _receipt(x: Any) -> dict[str, object]:
    """A bill's receipt from its row: every input and each rounding step of §2.6, the debt it carried and what
    the payer's balance paid. Empty for bills made before receipts were kept."""
    if x.gross is None:
        return {}
    owed = x.amount + x.overdraft_before
    return {
        "resources": {"cru": x.cru, "mru": x.mru, "sru": x.sru, "hru": x.hru}, "publicIPs": x.public_ips,
        "rented": x.rented, "cu": _milli(x.cu_milli), "su": _milli(x.su_milli),
        "prices": {"cu": x.rate_cu, "su": x.rate_su, "nu": x.rate_nu, "ipu": x.rate_ipu,
                   "uniqueName": x.rate_unique_name, "dedicatedPercent": x.rate_dedicated_percent},
        "tftPrice": {"averageMusd": x.rate_tft_average_musd, "minMusd": x.rate_tft_min_musd,
                     "maxMusd": x.rate_tft_max_musd, "usedMusd": x.rate_tft_musd,
                     "clamped": x.rate_tft_musd != x.rate_tft_average_musd},
        "costUnitsUsd": x.cost_usd, "gross": x.gross, "balance": x.balance, "discount": x.discount,
        "discountPercent": x.discount_percent, "discounted": x.discounted, "certifiedPercent": x.certified_percent,
        "amount": x.amount, "overdraftBefore": x.overdraft_before, "owed": owed, "paid": x.paid,
        "overdraftAfter": owed - x.paid, "cycle": x.cycle,
    }


def _milli(value: int) -> str:
    whole, frac = divmod(value, 1000)
    return f"{whole}.{frac:03d}".rstrip("0").rstrip(".")
