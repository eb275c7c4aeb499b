"""One trip to aiosqlite's thread per SQLite statement, in place of three or four.

aiosqlite runs each call on its connection's thread and hands the result back through the event loop's self-pipe
(``call_soon_threadsafe``). SQLAlchemy's adaptation makes three or four such calls for every statement: the cursor,
the execute, the fetch of its rows (when it has any), the cursor's close. In a burst at grid size the ledger's thread
spent two thirds as much CPU waking the event loop as running SQL (issue 17: py-spy, 47 samples in
``_write_to_self`` against 72 in the statements). ``OneTripCursor`` does them all in one function on that thread and
keeps what SQLAlchemy reads afterwards (the rows, the description, rowcount and lastrowid); everything else is
SQLAlchemy's own cursor.

A transaction's BEGIN rides on its first statement's trip (``defer_begin``, from the ledger engine's "begin" event),
and a commit or rollback with no transaction open sends nothing (the pool's rollback after a commit, a transaction
with no statement): a one-statement transaction is two trips (the statement, its end), not four.

``install()`` makes it the cursor of SQLAlchemy's aiosqlite connections (idempotent). It hooks into SQLAlchemy's
asyncio adaptation (``AsyncAdapt_dbapi_cursor``, 2.1) and aiosqlite's ``Connection._execute``, which is why both are
pinned to the minor versions it was written for; the whole ledger suite runs through it on SQLite, and
``tests/backend/test_sqlite_cursor.py`` counts the trips.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite
from sqlalchemy.util import EMPTY_DICT

Outcome = tuple[Any, list[Any] | None, int, int | None]  # description, rows (None: no result set), rowcount, lastrowid


def run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool, begin: str | None = None) -> Outcome:
    """On aiosqlite's thread: the transaction's ``begin`` if it is still to be sent, then the statement, its rows and
    the cursor's figures, the cursor closed."""
    if begin is not None:
        conn.execute(begin)  # a failure (a busy database) is this statement's: nothing of it ran
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description else None
        return cursor.description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class Finished:
    """What SQLAlchemy reads of a DB-API cursor once its statement ran (the ``_cursor`` of ``OneTripCursor``)."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, description: Any = None, rowcount: int = -1, lastrowid: int | None = None) -> None:
        self.description, self.rowcount, self.lastrowid, self.arraysize = description, rowcount, lastrowid, 1

    async def close(self) -> None:
        """Closed on the thread already."""


class OneTripCursor(sa_aiosqlite.AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def __init__(self, adapt_connection: Any) -> None:  # no cursor made on the thread: ``run`` makes its own
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = Finished()  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._run(operation, seq_of_parameters, many=True)

    async def _run(self, operation: Any, parameters: Any, many: bool) -> None:
        connection = self._connection
        async with self._adapt_connection._execute_mutex:
            state = connection.__dict__
            state.pop(ENDED, None)
            description, rows, rowcount, lastrowid = await connection._execute(
                run, connection._conn, operation, parameters, many, state.pop(PENDING, None))
        self._cursor = Finished(description, rowcount, lastrowid)  # type: ignore[assignment]
        self._rows = collections.deque(rows or ())

    async def _async_soft_close(self) -> None:
        self._soft_closed_memoized = self._soft_closed_memoized.union({"description": self._cursor.description})

    def close(self) -> None:
        self._rows.clear()


# kept in an aiosqlite connection's __dict__, read and changed on the event loop only, as calls are queued:
DEFERS = "_tfgrid_defers"  # the connection's transactions send their BEGIN with their first statement (the ledger's)
PENDING = "_tfgrid_begin"  # the BEGIN its transaction's first statement sends first
ENDED = "_tfgrid_ended"  # its last transaction ended, and nothing was sent since


def defers_begin(dbapi_connection: Any) -> None:
    """A new connection of an engine in autocommit mode (``isolation_level = None``: no transaction but the ones it
    begins itself) whose "begin" event calls ``defer_begin``: the ledger's. Commit and rollback skip what is not
    needed on such a connection only; every other aiosqlite connection ends its transactions as SQLAlchemy does."""
    dbapi_connection._connection.__dict__[DEFERS] = True


def defer_begin(dbapi_connection: Any, begin: str) -> None:
    """A transaction begins (SQLAlchemy's "begin" event): ``begin`` is sent with its first statement, in that
    statement's trip, instead of a trip of its own. A transaction that ends before any statement sends nothing at
    all (``install`` makes commit and rollback drop a BEGIN still pending); a statement sent to the driver
    directly takes ``begin_pending`` first."""
    state = dbapi_connection._connection.__dict__
    state.pop(ENDED, None)
    state[PENDING] = begin


def _begin(conn: sqlite3.Connection, begin: str) -> None:
    conn.execute(begin)


async def begin_pending(driver: Any) -> None:
    """Before a statement sent to aiosqlite's connection directly (backend/sql/bulk.py): its transaction's BEGIN,
    if it is still pending (one trip)."""
    driver.__dict__.pop(ENDED, None)
    begin = driver.__dict__.pop(PENDING, None)
    if begin is not None:
        await driver._execute(_begin, driver._conn, begin)


def _ending(end: Any) -> Any:
    """commit or rollback of SQLAlchemy's aiosqlite connection, sending nothing on a connection that ``defers_begin``
    where there is no transaction to end: its BEGIN was never sent (no statement ran in it), or the last commit or
    rollback ended it and nothing was sent since (a rollback after a commit). Both are known here, on the event loop,
    without asking the thread: the markers change as calls are queued, and aiosqlite's thread runs its queue in order
    (a call queued before a commit and cancelled since still runs before it)."""
    if getattr(end, "ends_pending", False):
        return end

    def ending(self: Any) -> None:
        state = self._connection.__dict__
        if DEFERS not in state or self._cursor_cls is not OneTripCursor:  # not known to be needless: end
            state.pop(PENDING, None)
            state.pop(ENDED, None)
            end(self)
            return
        if state.pop(PENDING, None) is None and ENDED not in state:
            end(self)
        state[ENDED] = True  # no transaction is open: a rollback (the pool's) before the next statement sends nothing
    ending.ends_pending = True  # type: ignore[attr-defined]
    return ending


def install() -> None:
    """Where SQLAlchemy's cursor is the one this was written against (2.1's ``_execute_async``); another version
    keeps its own cursor, slower and correct (the trip-counting test then fails and says so); so do its commit and
    rollback, which then always send theirs: ``defer_begin`` is for an installed cursor only (``installed()``)."""
    adapted = sa_aiosqlite.AsyncAdapt_aiosqlite_connection
    if hasattr(sa_aiosqlite.AsyncAdapt_aiosqlite_cursor, "_execute_async"):
        adapted._cursor_cls = OneTripCursor
        adapted.commit = _ending(adapted.commit)  # type: ignore[method-assign]
        adapted.rollback = _ending(adapted.rollback)  # type: ignore[method-assign]


def installed() -> bool:
    return sa_aiosqlite.AsyncAdapt_aiosqlite_connection._cursor_cls is OneTripCursor
