"""The conservation check every money scenario ends with (tests of the ledger and e2e alike)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tfgrid_operator.backend import schema


async def conserved(ledger: Any, funded: int = 0) -> None:
    """Funding + minted = the sum of every balance and every reserve not yet paid out (§2.7), to the unit."""
    async with ledger.engine.connect() as conn:
        minted = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(schema.mints.c.amount), 0)))).scalar_one()
        reserved = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(schema.contracts.c.reserve), 0)))).scalar_one()
    total = sum(a.balance for a in await ledger.list_accounts())
    assert total + int(reserved) == funded + int(minted)
