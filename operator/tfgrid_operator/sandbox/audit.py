"""An audit of the ledger from its raw rows, independent of the code that wrote them.

The operator writes the ledger and the objects' status; comparing those two only checks the operator
against itself. This reads the tables with plain SQL of its own and checks that money was conserved:
what the sandbox funded plus what minting created equals what the accounts hold (plus what contracts
hold in reserve, on a ledger whose contracts carry a ``reserve`` column). Per payer, the balance is
what it was funded minus what its bills took (and what a funding paid of its debt on closed contracts); the
farms, the foundation and the staking pool together hold what was minted plus what the payers paid, less what
is still held in reserve (§2.7: a bill's payment is split among them, nothing is burned under billing version B).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Audit:
    balances: dict[str, int]  # account → balance, in TFT units
    funded: int
    minted: int
    billed: int  # Σ bills.amount: what was due
    paid: int  # Σ bills.paid + Σ debts paid at funding: what was taken from payers
    reserves: int
    mint_periods: int  # distinct minting periods with receipts
    bill_periods: int  # distinct billing periods with bills
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def engine_for(url: str) -> AsyncEngine:
    """An engine of the audit's own (no pool kept): the same URLs the ledger takes."""
    if url.startswith("sqlite:") and not url.startswith("sqlite+"):
        url = "sqlite+aiosqlite:" + url[len("sqlite:"):]
    elif url.startswith(("postgresql:", "postgres:")):
        url = "postgresql+asyncpg:" + url.split(":", 1)[1]
    return create_async_engine(url, poolclass=NullPool)


async def _rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(sa.text(sql))).all())


async def _has_column(engine: AsyncEngine, table: str, column: str) -> bool:
    async with engine.connect() as conn:
        cols = await conn.run_sync(lambda sync: [c["name"] for c in sa.inspect(sync).get_columns(table)])
    return column in cols


async def totals(engine: AsyncEngine) -> tuple[int, int, dict[str, int]]:
    """(minted, billed, balances by account): one point of the month's picture."""
    minted = (await _rows(engine, "SELECT COALESCE(SUM(amount), 0) FROM mints"))[0][0]
    billed = (await _rows(engine, "SELECT COALESCE(SUM(amount), 0) FROM bills"))[0][0]
    balances = {r[0]: int(r[1]) for r in await _rows(engine, "SELECT name, balance FROM accounts ORDER BY name")}
    return int(minted), int(billed), balances


async def last_mints(engine: AsyncEngine) -> dict[str, tuple[int, int, int, str]]:
    """node → (period, uptime ‰, amount, reason) of its latest settled minting period."""
    rows = await _rows(engine, "SELECT n.name, m.period, m.uptime_permille, m.amount, m.reason FROM mints m "
                               "JOIN nodes n ON n.id = m.node_id ORDER BY m.period")
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), str(r[4])) for r in rows}


async def audit(engine: AsyncEngine, funded: dict[str, int]) -> Audit:
    """Check the ledger's money against ``funded`` (account → what was put in from outside)."""
    minted, billed, balances = await totals(engine)
    paid = int((await _rows(engine, "SELECT COALESCE(SUM(paid), 0) FROM bills"))[0][0])
    has_reserve = await _has_column(engine, "contracts", "reserve")
    reserves = int((await _rows(engine, "SELECT COALESCE(SUM(reserve), 0) FROM contracts"))[0][0]) if has_reserve else 0
    paid_by = {r[0]: int(r[1]) for r in await _rows(
        engine, "SELECT a.name, COALESCE(SUM(b.paid), 0) FROM bills b JOIN contracts c ON c.id = b.contract_id "
                "JOIN accounts a ON a.id = c.account_id GROUP BY a.name")}
    # what payers owed on closed contracts and paid from a later funding (payouts of reason Debt, schema 6)
    debts_paid = {r[0]: int(r[1]) for r in await _rows(
        engine, "SELECT a.name, COALESCE(SUM(p.amount), 0) FROM payouts p JOIN contracts c ON c.id = p.contract_id "
                "JOIN accounts a ON a.id = c.account_id WHERE p.reason = 'Debt' GROUP BY a.name")} if has_reserve else {}
    for name, amount in debts_paid.items():
        paid_by[name] = paid_by.get(name, 0) + amount
    paid += sum(debts_paid.values())
    periods = await _rows(engine, "SELECT (SELECT COUNT(DISTINCT period) FROM mints), (SELECT COUNT(DISTINCT period) FROM bills)")
    total_funded = sum(funded.values())
    held = sum(balances.values())
    checks = [Check("conservation", total_funded + minted == held + reserves,
                    f"funded {total_funded} + minted {minted} = {total_funded + minted}; "
                    f"balances {held} + reserves {reserves} = {held + reserves}")]
    payers = sorted(set(paid_by) | set(funded))
    for name in payers:
        expected = funded.get(name, 0) - paid_by.get(name, 0)
        got = balances.get(name)
        checks.append(Check(f"payer {name}", got == expected,
                            f"funded {funded.get(name, 0)} - paid {paid_by.get(name, 0)} = {expected}; balance {got}"))
    receivers = sum(v for k, v in balances.items() if k not in payers)
    checks.append(Check("payouts", receivers == minted + paid - reserves,
                        f"farms, foundation and staking pool hold {receivers}; minted {minted} + paid {paid} "
                        f"- reserves {reserves} = {minted + paid - reserves}"))
    return Audit(balances=balances, funded=total_funded, minted=minted, billed=billed, paid=paid, reserves=reserves,
                 mint_periods=int(periods[0][0]), bill_periods=int(periods[0][1]), checks=tuple(checks))
