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


@pytest.fixture
async def ledger_db(tmp_path):
    from tfgrid_operator import backend

    lg = await backend.open_backend(f"sqlite:///{tmp_path / 'ledger.db'}?timeout=0.2", backend.LedgerConfig())
    yield lg, tmp_path / "ledger.db"
    await lg.close()


def meta_value(path, key: str):
    import sqlite3

    with sqlite3.connect(path) as raw:
        found = raw.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return found[0] if found else None


async def test_a_transactions_begin_rides_on_its_first_statement(ledger_db, monkeypatch):
    """The ledger's BEGIN (IMMEDIATE for a writer) is sent in its first statement's trip: a one-statement
    transaction makes two trips (the statement, the end), an empty one none; what it wrote is one transaction."""
    lg, path = ledger_db
    trips = [0]
    real = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):
        trips[0] += 1
        return await real(self, fn, *args, **kwargs)
    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    from tfgrid_operator.backend import schema

    async with lg._tx() as conn:
        await conn.execute(schema.meta.insert().values(key="one", value="1"))
    assert trips[0] == 2
    async with lg._read() as conn:
        assert (await conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == "one"))).scalar() == "1"
    assert trips[0] == 4
    async with lg._tx():
        pass
    assert trips[0] == 4  # nothing begun, nothing to end
    with pytest.raises(RuntimeError):  # two statements and a failure after them: neither is kept
        async with lg._tx() as conn:
            await conn.execute(schema.meta.insert().values(key="two", value="2"))
            await conn.execute(schema.meta.update().where(schema.meta.c.key == "one").values(value="changed"))
            raise RuntimeError("after both")
    assert (meta_value(path, "two"), meta_value(path, "one")) == (None, "1")


async def test_a_transaction_that_starts_with_a_bulk_statement_is_still_one_transaction(ledger_db):
    """bulk.py sends statements to aiosqlite directly: the pending BEGIN goes first, so a failure later in the
    transaction takes the bulk rows back too (without it they were committed on their own)."""
    from tfgrid_operator.backend.sql import bulk

    lg, path = ledger_db
    with pytest.raises(RuntimeError):
        async with lg._tx() as conn:
            await bulk.insert_rows(conn, "meta", ("key", "value"), [("bulk", "1")])
            assert (await bulk.fetch_rows(conn, "SELECT value FROM meta WHERE key = ?", ["bulk"])) == [("1",)]
            raise RuntimeError("after the bulk insert")
    assert meta_value(path, "bulk") is None


async def test_a_busy_database_is_reported_by_the_first_statement_and_the_ledger_goes_on(ledger_db):
    """Another process holds the write lock: BEGIN IMMEDIATE, sent with the first statement, waits the URL's timeout,
    and the write fails as unavailable with nothing done; once the lock is released the same write succeeds."""
    import sqlite3

    from tfgrid_operator.backend import errors, schema

    lg, path = ledger_db
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(errors.Unavailable, match="locked"):
            async with lg._tx() as conn:
                await conn.execute(schema.meta.insert().values(key="late", value="1"))
        with pytest.raises(errors.Unavailable, match="locked"):  # its first statement a bulk one (bulk.py)
            await lg.bill_period(period=0, now=lg.config.billing_period_s)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert meta_value(path, "late") is None
    async with lg._tx() as conn:
        await conn.execute(schema.meta.insert().values(key="late", value="2"))
    assert meta_value(path, "late") == "2"
    assert (await lg.bill_period(period=0, now=lg.config.billing_period_s)).rows_written == 0  # nothing to bill


async def test_another_aiosqlite_engines_commits_are_always_sent(tmp_path):
    """Only the ledger's connections skip a commit or rollback (they begin every transaction themselves): an engine
    in sqlite3's own mode, whose driver may open a transaction SQLAlchemy never saw, commits it."""
    import sqlite3

    sqlite_cursor.install()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(META.create_all)
            await conn.execute(sa.insert(ITEMS).values(name="through SQLAlchemy", n=1))
        async with engine.begin() as conn:  # a statement straight to the driver after a commit, then a commit
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute("INSERT INTO items (name, n) VALUES ('straight to the driver', 2)")
    finally:
        await engine.dispose()
    with sqlite3.connect(tmp_path / "other.db") as raw:
        assert sorted(n for (n,) in raw.execute("SELECT n FROM items")) == [1, 2]
