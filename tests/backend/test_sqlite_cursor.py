"""SQLite statements make one trip to aiosqlite's thread each (backend/sql/sqlite_cursor.py), and SQLAlchemy reads the
same rows, counts, keys and errors as through its own cursor (the whole ledger suite runs through it on SQLite too)."""

from __future__ import annotations

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite
from sqlalchemy.ext.asyncio import create_async_engine

from tfgrid_operator.backend.sql import sqlite_cursor

META = sa.MetaData()
ITEMS = sa.Table("items", META, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String, unique=True),
                 sa.Column("n", sa.Integer))


async def run_statements(url: str) -> tuple[list, list]:
    """What a session of statements reads back, and how many trips each statement made to aiosqlite's thread."""
    engine = create_async_engine(url)
    trips: list[int] = []
    seen: list = []
    try:
        async with engine.begin() as conn:
            await conn.run_sync(META.create_all)
        async with engine.begin() as conn:
            for statement in (
                sa.insert(ITEMS).values(name="a", n=1),
                sa.insert(ITEMS).values(name="b", n=2).returning(ITEMS.c.id, ITEMS.c.name),
                sa.update(ITEMS).values(n=ITEMS.c.n + 10),
                sa.select(ITEMS).order_by(ITEMS.c.id),
                sa.delete(ITEMS).where(ITEMS.c.name == "nobody"),
            ):
                before = COUNTED[0]
                result = await conn.execute(statement)
                trips.append(COUNTED[0] - before)
                seen.append((result.inserted_primary_key if statement.is_insert and not result.returns_rows else None,
                             result.all() if result.returns_rows else result.rowcount))
            before = COUNTED[0]
            many = await conn.execute(sa.insert(ITEMS), [{"name": f"m{i}", "n": i} for i in range(3)])
            trips.append(COUNTED[0] - before)
            seen.append(many.rowcount)
            with pytest.raises(sa.exc.IntegrityError, match="UNIQUE"):
                await conn.execute(sa.insert(ITEMS).values(name="a", n=0))
            seen.append((await conn.execute(sa.select(sa.func.count()).select_from(ITEMS))).scalar_one())
    finally:
        await engine.dispose()
    return seen, trips


COUNTED = [0]


@pytest.fixture
def counted(monkeypatch):
    real = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):
        COUNTED[0] += 1
        return await real(self, fn, *args, **kwargs)
    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    monkeypatch.setattr(sa_aiosqlite.AsyncAdapt_aiosqlite_connection, "_cursor_cls",
                        sa_aiosqlite.AsyncAdapt_aiosqlite_cursor)  # SQLAlchemy's own until a test installs ours


async def test_one_trip_per_statement_and_the_same_results_as_sqlalchemys_cursor(counted, tmp_path):
    theirs, their_trips = await run_statements(f"sqlite+aiosqlite:///{tmp_path / 'theirs.db'}")
    sqlite_cursor.install()
    sqlite_cursor.install()  # idempotent
    ours, our_trips = await run_statements(f"sqlite+aiosqlite:///{tmp_path / 'ours.db'}")
    assert ours == theirs
    assert ours[1][1] == [(2, "b")] and ours[3][1] == [(1, "a", 11), (2, "b", 12)] and ours[-2:] == [3, 5]
    assert our_trips == [1] * 6
    assert all(t >= 3 for t in their_trips)  # cursor, execute, close (and the rows' fetch) each a trip of its own
