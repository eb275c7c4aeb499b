"""Many rows at once, straight to the driver. The billing and minting runs read and write 100,000 rows an hour:
these skip SQLAlchemy's statement compilation and per-row parameter processing, and use each engine's bulk path
(COPY on PostgreSQL, executemany on SQLite) behind one call, so billing and minting keep one code path for both.
They run inside the caller's transaction (``LedgerBase._tx``); driver errors come out as SQLAlchemy's, so ``_tx``
reports them as it does every other (a CHECK stays a refused amount).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tfgrid_operator.backend.sql import sqlite_cursor


async def _driver(conn: AsyncConnection) -> Any:
    """The driver's connection, inside the caller's transaction: SQLAlchemy starts asyncpg's lazily, at the first
    statement it runs, so one is run here when none has been yet."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if conn.dialect.name == "sqlite":
        with _as_sqlalchemy_errors("BEGIN"):  # a busy database: unavailable, as at any other statement
            await sqlite_cursor.begin_pending(driver)  # the transaction's BEGIN, if no statement sent it yet
    elif conn.in_transaction() and not driver.is_in_transaction():
        await conn.execute(sa.text("SELECT 1"))
    return driver


def _dollars(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, …``."""
    parts = sql.split("?")
    return "".join(f"{part}${i + 1}" if i < len(parts) - 1 else part for i, part in enumerate(parts))


@contextlib.contextmanager
def _as_sqlalchemy_errors(sql: str) -> Iterator[None]:
    try:
        yield
    except (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise IntegrityError(sql, None, exc) from exc
    except (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DBAPIError(sql, None, exc) from exc


async def fetch_rows(conn: AsyncConnection, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
    """Rows of a query as plain sequences (tuples on SQLite, records on PostgreSQL), by position. ``sql`` uses
    ``?`` placeholders."""
    driver = await _driver(conn)
    with _as_sqlalchemy_errors(sql):
        if conn.dialect.name == "sqlite":
            return list(await driver.execute_fetchall(sql, tuple(params)))
        return list(await driver.fetch(_dollars(sql), *params))


async def insert_rows(conn: AsyncConnection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """INSERT many rows: COPY on PostgreSQL, one executemany on SQLite. Values as the columns' Python types."""
    if not rows:
        return
    driver = await _driver(conn)
    names = ", ".join(f'"{c}"' for c in columns)  # quoted: "until" and friends are words in some SQL dialects
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    with _as_sqlalchemy_errors(sql):
        if conn.dialect.name == "sqlite":
            await driver.executemany(sql, rows)
        else:
            await driver.copy_records_to_table(table, records=rows, columns=list(columns))


async def update_rows(conn: AsyncConnection, table: str, assignments: str, columns: Sequence[tuple[str, str]],
                      rows: Sequence[Sequence[Any]]) -> None:
    """UPDATE many rows of ``table`` by id, each to its own values: one executemany on SQLite; on PostgreSQL one
    UPDATE joined to the rows (a few: sent as arrays; many: COPied into a temporary table first, which costs
    PostgreSQL less than a large unnest and the client ten times less than building the arrays). ``columns``
    names each row's values and their SQL types, the row's id last; ``assignments`` is the SET list, with
    ``{name}`` for a row's value and bare column names for the table's current ones (``total = total + {amount}``)."""
    if not rows:
        return
    names = [name for name, _type in columns]
    driver = await _driver(conn)
    if conn.dialect.name == "sqlite":
        sets = assignments.format(**{name: f"?{i + 1}" for i, name in enumerate(names)})
        sql = f"UPDATE {table} SET {sets} WHERE id = ?{len(names)}"
        with _as_sqlalchemy_errors(sql):
            await driver.executemany(sql, rows)
        return
    sets = assignments.format(**{name: f"v.{name}" for name in names})
    if len(rows) >= _COPY_FROM and await _copied_to_temporary(driver, table, columns, rows):
        sql = f"UPDATE {table} SET {sets} FROM _update_{table} AS v WHERE {table}.id = v.{names[-1]}"
        with _as_sqlalchemy_errors(sql):
            await driver.execute(sql)
            await driver.execute(f"DROP TABLE _update_{table}")
        return
    arrays = ", ".join(f"${i + 1}::{kind}[]" for i, (_name, kind) in enumerate(columns))
    sql = f"UPDATE {table} SET {sets} FROM unnest({arrays}) AS v({', '.join(names)}) WHERE {table}.id = v.{names[-1]}"
    with _as_sqlalchemy_errors(sql):
        await driver.execute(sql, *(list(values) for values in zip(*rows, strict=True)))


async def _copied_to_temporary(driver: Any, table: str, columns: Sequence[tuple[str, str]],
                               rows: Sequence[Sequence[Any]]) -> bool:
    """COPY the rows into a temporary table ``_update_<table>`` (dropped at commit at the latest). False when
    the ledger's role may not make temporary tables (PUBLIC may by default; a database can revoke it): the
    caller then sends the rows as arrays, which costs ~0.3 s more CPU per 100,000 rows."""
    sql = f"CREATE TEMPORARY TABLE _update_{table} ({', '.join(f'{n} {k}' for n, k in columns)}) ON COMMIT DROP"
    try:
        async with driver.transaction():  # a savepoint: a refusal leaves the caller's transaction usable
            await driver.execute(sql)
    except asyncpg.InsufficientPrivilegeError:
        return False
    with _as_sqlalchemy_errors(sql):
        await driver.copy_records_to_table(f"_update_{table}", records=rows)
    return True


_COPY_FROM = 1000  # rows: from here on update_rows COPies them on PostgreSQL
