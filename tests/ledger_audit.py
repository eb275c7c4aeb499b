"""The conservation check every money scenario ends with (tests of the ledger and e2e alike)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tfgrid_operator.backend import schema


async def conserved(ledger: Any, funded: int = 0) -> None:
    """Money is conserved and every unit billed is paid or owed, once (invariant 7), to the unit:

    * funding + minted = the sum of every balance and every reserve not yet paid out (§2.7);
    * per contract, what its bills took = its reserve + its payouts (Cycles, Deleted): nothing appears or vanishes
      between a bill and its payout;
    * per deployment (its contracts across moves), billed = paid + owed: what its bills took, plus what its payer
      paid later of a closed contract's debt (payouts of reason Debt), plus the overdraft still on its contracts;
    * no balance is negative."""
    c, b, p, a = schema.contracts, schema.bills, schema.payouts, schema.accounts
    async with ledger.engine.connect() as conn:
        minted = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(schema.mints.c.amount), 0)))).scalar_one()
        reserved = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(c.c.reserve), 0)))).scalar_one()
        total = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(a.c.balance), 0)))).scalar_one()
        assert int(total) + int(reserved) == funded + int(minted), (int(total), int(reserved), funded, int(minted))
        paid = dict((await conn.execute(sa.select(b.c.contract_id, sa.func.sum(b.c.paid)).group_by(b.c.contract_id))).all())
        out = dict((await conn.execute(sa.select(p.c.contract_id, sa.func.sum(p.c.amount)).where(p.c.reason != "Debt")
                                       .group_by(p.c.contract_id))).all())
        for row in (await conn.execute(sa.select(c.c.id, c.c.reserve))).all():
            assert int(paid.get(row.id, 0)) == row.reserve + int(out.get(row.id, 0)), f"contract {row.id}"
        billed = dict((await conn.execute(sa.select(c.c.key, sa.func.sum(b.c.amount)).join(b, b.c.contract_id == c.c.id)
                                          .group_by(c.c.key))).all())
        settled = dict((await conn.execute(sa.select(c.c.key, sa.func.sum(b.c.paid)).join(b, b.c.contract_id == c.c.id)
                                           .group_by(c.c.key))).all())
        late = dict((await conn.execute(sa.select(c.c.key, sa.func.sum(p.c.amount)).join(p, p.c.contract_id == c.c.id)
                                        .where(p.c.reason == "Debt").group_by(c.c.key))).all())
        owed = dict((await conn.execute(sa.select(c.c.key, sa.func.sum(c.c.overdraft)).group_by(c.c.key))).all())
        for key, amount in billed.items():
            assert int(amount) == int(settled[key]) + int(late.get(key, 0)) + int(owed[key]), f"deployment {key}"
        assert (await conn.execute(sa.select(sa.func.count()).where(a.c.balance < 0))).scalar() == 0
