"""The bulk helpers billing and minting write with (backend/sql/bulk.py), on both engines: many rows in one call,
inside the caller's transaction, and a driver's refusal reported as SQLAlchemy's."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from pg import _admin, drop_postgres, fresh_postgres
from tfgrid_operator.backend import errors
from tfgrid_operator.backend.sql.bulk import _COPY_FROM, fetch_rows, insert_rows, update_rows

ROWS = _COPY_FROM + 500  # past the size at which PostgreSQL's updates go through a temporary table


def _engine(url: str):
    if url.startswith("sqlite"):
        return create_async_engine(url.replace("sqlite://", "sqlite+aiosqlite://", 1))
    return create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))


async def _table(engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text('CREATE TABLE t (id INTEGER PRIMARY KEY, "until" BIGINT NOT NULL, '
                                   'note VARCHAR(16), CONSTRAINT until_bounded CHECK ("until" >= 0))'))


@pytest.mark.parametrize("rows", [3, ROWS])
async def test_insert_update_and_fetch_many_rows(ledger, rows):
    await _table(ledger.engine)
    async with ledger._tx() as conn:
        await insert_rows(conn, "t", ("id", "until", "note"), [(i, i, None) for i in range(1, rows + 1)])
        await update_rows(conn, "t", '"until" = "until" + {more}, note = {note}',
                          (("more", "bigint"), ("note", "text"), ("id", "int")),
                          [(10, "odd" if i % 2 else None, i) for i in range(1, rows + 1)])
        got = await fetch_rows(conn, 'SELECT id, "until", note FROM t WHERE id > ? ORDER BY id', [rows - 2])
    assert [tuple(r) for r in got] == [(i, i + 10, "odd" if i % 2 else None) for i in (rows - 1, rows)]


@pytest.mark.parametrize("rows", [3, ROWS])
async def test_a_refused_row_is_refused_as_any_other_and_the_transaction_writes_nothing(ledger, rows):
    await _table(ledger.engine)
    with pytest.raises(errors.InvalidRequest, match="until_bounded"):  # a CHECK: a refused amount (engine._tx)
        async with ledger._tx() as conn:
            await insert_rows(conn, "t", ("id", "until"), [(i, 1) for i in range(1, rows + 1)])
            await update_rows(conn, "t", '"until" = {until}', (("until", "bigint"), ("id", "int")),
                              [(-1 if i == rows else 2, i) for i in range(1, rows + 1)])
    with pytest.raises(errors.Conflict):  # a duplicate key
        async with ledger._tx() as conn:
            await insert_rows(conn, "t", ("id", "until"), [(1, 1), (1, 2)])
    async with ledger.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT COUNT(*) FROM t"))).scalar() == 0


@pytest.mark.postgres
async def test_without_temporary_tables_many_rows_go_as_arrays():
    """A database can revoke TEMPORARY from PUBLIC: the update then sends its rows as arrays."""
    url, name = await fresh_postgres()
    role = f"tfgrid_notemp_{uuid.uuid4().hex[:8]}"
    admin = _engine(url)
    try:
        await _table(admin)
        async with admin.begin() as conn:
            await conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
            await conn.execute(sa.text(f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC"))
            await conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE ON t TO {role}"))
        engine = _engine(url.replace("://postgres@", f"://{role}@", 1))
        try:
            async with engine.begin() as conn:
                await insert_rows(conn, "t", ("id", "until"), [(i, i) for i in range(1, ROWS + 1)])
                await update_rows(conn, "t", '"until" = {until}', (("until", "bigint"), ("id", "int")),
                                  [(2 * i, i) for i in range(1, ROWS + 1)])
            async with engine.connect() as conn:
                assert (await conn.execute(sa.text('SELECT SUM("until") FROM t'))).scalar() == ROWS * (ROWS + 1)
        finally:
            await engine.dispose()
    finally:
        await admin.dispose()
        await drop_postgres(name)
        await _admin(f"DROP ROLE IF EXISTS {role}")
