"""What one small SQLite statement costs through SQLAlchemy's aiosqlite cursor and through ours
(``backend/sql/sqlite_cursor.OneTripCursor``: one trip to aiosqlite's thread instead of three or four, the
transaction's BEGIN riding on it and no rollback sent where no transaction is open).

    python benchmarks/sqlite_statements.py [--statements 3000] [--rounds 4]

A ledger of the operator's own schema on a temporary SQLite file (the engine as the operator opens it: WAL, its
pool, BEGIN per transaction); each round runs ``--statements`` one-row SELECTs by a unique name, each in a
transaction of its own as a reconcile's reads are, and a thousand-row SELECT, first through SQLAlchemy's cursor,
then through ours. Prints one JSON object: cpu_us_per_statement (this process's CPU, aiosqlite's thread included) and
wall_us_per_statement, each way and each round; their mean ratios ours / SQLAlchemy's; and
trips_per_statement each way (calls onto aiosqlite's thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from typing import Any

import aiosqlite
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite

from tfgrid_operator import backend
from tfgrid_operator.backend import schema
from tfgrid_operator.backend.sql import sqlite_cursor

WAYS = {"sqlalchemy": sa_aiosqlite.AsyncAdapt_aiosqlite_cursor, "ours": sqlite_cursor.OneTripCursor}


async def bench(statements: int, rounds: int) -> dict[str, Any]:
    trips = [0]
    real = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips[0] += 1
        return await real(self, fn, *args, **kwargs)
    aiosqlite.Connection._execute = counted  # type: ignore[method-assign]
    cpu: dict[str, list[float]] = {w: [] for w in WAYS}
    wall: dict[str, list[float]] = {w: [] for w in WAYS}
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tfgrid-bench-") as tmp:
        ledger = await backend.SqlLedger.open(f"sqlite:///{tmp}/bench.db", backend.LedgerConfig())
        try:
            async with ledger.engine.begin() as conn:
                await conn.execute(schema.accounts.insert(), [dict(name=f"a{i}", balance=i) for i in range(1000)])
            one = sa.select(schema.accounts).where(schema.accounts.c.name == sa.bindparam("name"))
            for _ in range(rounds):
                for way, cls in WAYS.items():
                    sa_aiosqlite.AsyncAdapt_aiosqlite_connection._cursor_cls = cls
                    trips0, started, cpu0 = trips[0], time.perf_counter(), time.process_time()
                    for i in range(statements):
                        async with ledger.engine.connect() as conn:
                            assert (await conn.execute(one, {"name": f"a{i % 1000}"})).one().balance == i % 1000
                    async with ledger.engine.connect() as conn:
                        assert len((await conn.execute(sa.select(schema.accounts))).all()) >= 1000
                    n = statements + 1
                    cpu[way].append(round((time.process_time() - cpu0) / n * 1e6, 1))
                    wall[way].append(round((time.perf_counter() - started) / n * 1e6, 1))
                    per[way] = round((trips[0] - trips0) / n, 2)  # BEGIN and the rollback on return included
        finally:
            sqlite_cursor.install()
            await ledger.close()
            aiosqlite.Connection._execute = real  # type: ignore[method-assign]

    def ratio(d: dict[str, list[float]]) -> float:
        return round(sum(d["ours"]) / sum(d["sqlalchemy"]), 3)
    return {"statements": statements, "rounds": rounds, "cpu_us_per_statement": cpu, "wall_us_per_statement": wall,
            "cpu_ratio_ours_to_sqlalchemy": ratio(cpu), "wall_ratio_ours_to_sqlalchemy": ratio(wall),
            "trips_per_statement": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.statements, args.rounds))))


if __name__ == "__main__":
    main()
