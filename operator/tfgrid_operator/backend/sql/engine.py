"""The ledger's engine: URLs, dialect settings (SQLite pragmas and BEGIN IMMEDIATE, PostgreSQL advisory
locks), migrations, transactions, meta values, watermarks and the policies every money path reads.

Concurrency: every transaction takes the ledger's write lock first — ``BEGIN IMMEDIATE`` on SQLite,
a transaction-scoped advisory lock on PostgreSQL — so two placements can never overbook a node and
two bill runs can never interleave, even from two operator processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.batching import Batcher
from tfgrid_operator.backend.config import LedgerConfig
from tfgrid_operator.backend.sql import sqlite_cursor
from tfgrid_operator.domain import minting, money, pricing, scheduling
from tfgrid_operator.domain import uptime as uptime_mod
from tfgrid_operator.domain.units import Resources

LIVE = ("Created", "GracePeriod")
log = logging.getLogger("tfgrid_operator.ledger")
ADVISORY_LOCK_ID = 0x7466_6772  # "tfgr"
# meta key: a token the database itself replaces (triggers, below) on every write of what placement reads; a process
# whose placement pool was read under the token it reads now may use it again (contracts.py, issue 17)
POOL_TOKEN = "placement_pool_token"
# what the candidates query reads, per table: a write of one of these columns (any insert or delete) replaces the
# token, whoever writes (this code, an operator of an older version during a rolling upgrade, SQL by hand). A node's
# last_report_ts is not among them: an uptime report moves only its node's last-seen time (LedgerBase._pool_seen)
POOL_COLUMNS = {
    "contracts": ("node_id", "state", "cru", "mru", "sru", "hru", "public_ips", "dedicated"),
    "nodes": ("name", "farm_id", "state", "cru", "mru", "sru", "hru", "country", "city", "certified", "created_at"),
    "farms": ("name", "public_ips"),
    "capacity": ("node_id", "cru", "mru", "sru", "hru"),
}
# PostgreSQL: a table whose row count moved by more than this many rows (+ this share of the rows its statistics
# counted) is analyzed before the placement pool's read (the numbers of autovacuum's own analyze threshold)
STALE_ROWS, STALE_SHARE = 50, 0.1




def _first_line(exc: BaseException) -> str:
    """An error's first line for a message; some (a connect timeout) carry no text, so their type speaks."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _unavailable(exc: BaseException) -> errors.Unavailable:
    """The ledger could not be reached or did not answer: said plainly, retried by the caller. A timeout carries no
    text (SQLAlchemy raises asyncpg's as it is)."""
    if isinstance(exc, TimeoutError):
        return errors.Unavailable("the ledger is unavailable: it did not answer in time (connecting, or within the "
                                  "ledger URL's command_timeout)")
    return errors.Unavailable(f"the ledger is unavailable: {_first_line(exc)}")


def _bound_session(dbapi_connection: Any, _record: Any) -> None:
    """A new PostgreSQL connection's waits (LOCK_TIMEOUT_S, IDLE_IN_TRANSACTION_S), set once as it is made — by SET,
    not as startup parameters, which a pooler such as PgBouncer refuses ("unsupported startup parameter")."""
    dbapi_connection.run_async(lambda conn: conn.execute(
        f"SET lock_timeout = '{LOCK_TIMEOUT_S * 1000:.0f}ms'; "
        f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S * 1000:.0f}ms'"))


def _engine_url(url: str) -> str:
    if url.startswith("sqlite+aiosqlite:") or url.startswith("postgresql+asyncpg:"):
        return url
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:"):]
    if url.startswith(("postgresql:", "postgres:")):
        return "postgresql+asyncpg:" + url.split(":", 1)[1]
    raise errors.InvalidRequest(f"unsupported ledger URL {url.split(':', 1)[0]!r}: use sqlite:/// or postgresql://")


def _replace_closed(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """A pooled PostgreSQL connection whose socket the server closed is replaced before use (the pool tries a fresh
    one), checked without a round trip: asyncpg marks a connection closed as soon as the loop reads its end."""
    if record.driver_connection.is_closed():
        raise DisconnectionError("the ledger's server closed this connection")


def payout_account_name(namespace: str, name: str) -> str:
    """The ledger account a Farm of ``namespace`` naming ``payoutAccount: name`` is paid into: ``namespace/name``.
    A twin's name can never hold a '/' (the account pattern), so a farm never takes a name a twin may register
    later, and the farms of another namespace naming the same ``name`` are paid into an account of their own."""
    return f"{namespace}/{name}"


def inserted_id(result: sa.CursorResult[Any]) -> int:
    """The primary key a single-row INSERT made (SQLAlchemy gives None only for a statement that made none)."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the INSERT returned no primary key")
    return int(key[0])


def _res(row: Any) -> Resources:
    return Resources(row.cru, row.mru, row.sru, row.hru)


def _uptime_state(row: Any | None, period: minting.Period) -> uptime_mod.UptimeState:
    """A node's uptime fold for one period as stored in the ``uptime`` table (empty when no row)."""
    if row is None:
        return uptime_mod.UptimeState(period_start=period.start)
    return uptime_mod.UptimeState(
        period_start=period.start, total=row.total, last_ts=row.last_ts, last_uptime=row.last_uptime,
        boot_ts=row.boot_ts, violation=uptime_mod.Violation(row.violation) if row.violation else None,
        reports=row.reports)


RESOURCE_FIELDS = ("cru", "mru", "sru", "hru")
Policies = tuple[pricing.PricingPolicy, dict[int, minting.FarmingPolicy]]
POOL_SIZE = 5
POOL_TIMEOUT_S = 120  # a reconcile waits this long for a connection under a burst before it backs off and retries
# The longest a write waits for the ledger's write lock, in this process (behind the writes ahead of it) and then, on
# PostgreSQL, for any lock of the database (the advisory lock another session holds, a table a migration alters),
# before it fails as unavailable and is retried: a session that holds the lock and never ends (a stuck process, a
# psql left in a transaction) no longer holds every writer behind it for good. A bound on waiting, not on work: a
# long statement that runs (a billing period of a large grid) is never cut. SQLite's database wait is its busy
# timeout (30 s, ?timeout=S). A bound on every statement, for a server that may stop answering with nothing to say so
# (a network cut): ?command_timeout=S in the URL (asyncpg's).
LOCK_TIMEOUT_S: float = 60.0
# PostgreSQL: a session of ours left inside a transaction this long (its process stopped between two statements, a
# network cut) is ended by the server, and the ledger's lock with it; ours never wait between statements that long
IDLE_IN_TRANSACTION_S = 300
WRITE = "tfgrid_write"  # execution option: this connection's transaction writes



@dataclasses.dataclass(frozen=True)
class PlacementPool:
    """The nodes as the last placement batch left them (its choices applied), read under ``token``: the next batch
    starts from them while the ledger's token is still ``token`` and the read is younger than POOL_MAX_AGE_S."""

    token: str
    read_at: float  # time.monotonic() of the read it descends from
    candidates: dict[str, scheduling.Candidate]
    seen: dict[str, int]  # each node's last uptime report (or registration): whether it is up at another time


@dataclasses.dataclass(frozen=True)
class Open:
    """A queued open_contract call."""

    key: str
    owner_uid: str
    proof: records.PayerProof
    request: scheduling.Request
    now: int


@dataclasses.dataclass(frozen=True)
class Registration:
    """A queued ensure_node call."""

    name: str
    owner: records.Owner
    farm: str
    resources: Resources
    country: str
    city: str
    public_key: str
    now: int
    farm_consent: str


@dataclasses.dataclass(frozen=True)
class Close:
    """A queued close_contract call."""

    key: str
    owner_uid: str
    now: int
    reason: str


class LedgerBase:
    def __init__(self, engine: AsyncEngine, config: LedgerConfig) -> None:
        self.engine = engine
        self.config = config
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._reader = engine if self.is_sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")
        self._lock = asyncio.Lock()  # one writer per process; the DB lock orders processes
        self._placements: Batcher[Open, records.Contract] = Batcher(self._open_batch)
        self._observations: Batcher[str, records.Contract | None] = Batcher(self._observe_batch)
        self._farm_observations: Batcher[str, records.Farm | None] = Batcher(self._observe_farm_batch)
        self._policy_reads: Batcher[None, Policies] = Batcher(self._policies_batch)
        self._closings: Batcher[Close, records.Contract | None] = Batcher(self._close_batch)
        self._registrations: Batcher[Registration, records.Node] = Batcher(self._register_batch)
        self._pool: PlacementPool | None = None  # what the last placement batch left (contracts.py)
        # contract id → (its row's values, where it moved from, its record) as contract_summaries last read it, and
        # what live_contracts (the sweep) made since of rows that changed (always checked against a row's values)
        self._summaries_kept: dict[int, tuple[tuple[Any, ...], str | None, records.Contract]] = {}

    # ------------------------------------- what the areas stacked on this base provide (see sql/__init__.py)
    # The batchers above and the migrations call them; declared here so that this base says what it needs.
    async def _ensure_account(self, conn: AsyncConnection, name: str, public_key: str,
                              role: str = "twin") -> records.Account:
        raise NotImplementedError  # registry.py: RegistryLedger

    async def _open_batch(self, batch: Sequence[Open]) -> list[records.Contract | errors.LedgerError]:
        raise NotImplementedError  # contracts.py: ContractsLedger

    async def _observe_farm_batch(self, asked: Sequence[str]) -> list[records.Farm | None]:
        raise NotImplementedError  # registry.py: RegistryLedger

    async def _observe_batch(self, keys: Sequence[str]) -> list[records.Contract | None]:
        raise NotImplementedError  # contracts.py: ContractsLedger

    async def _close_batch(self, batch: Sequence[Close]) -> list[records.Contract | None]:
        raise NotImplementedError  # contracts.py: ContractsLedger

    async def _register_batch(self, batch: Sequence[Registration]) -> list[records.Node | errors.LedgerError]:
        raise NotImplementedError  # registry.py: RegistryLedger

    # ------------------------------------------------------------------ setup
    @classmethod
    async def open(cls, url: str, config: LedgerConfig) -> Self:
        engine_url = _engine_url(url)
        if engine_url.startswith("sqlite"):
            # how long a writer waits for another process's lock; ?timeout=S in the URL overrides the 30 s
            busy = {} if "timeout=" in engine_url else {"timeout": 30}
            sqlite_cursor.install()  # one trip to aiosqlite's thread per statement
            # a fixed pool: aiosqlite runs a thread per connection, and the default overflow opened and closed a
            # connection (thread, PRAGMAs) per burst of concurrent reads; the writer lock serializes writes anyway
            engine = create_async_engine(engine_url, connect_args=busy, pool_size=POOL_SIZE, max_overflow=0,
                                         pool_timeout=POOL_TIMEOUT_S)

            @event.listens_for(engine.sync_engine, "connect")
            def _on_connect(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
                sqlite_cursor.defers_begin(dbapi_connection)  # with each transaction's first statement
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA foreign_keys=ON")
                if ":memory:" not in engine_url and engine_url.rstrip("/") != "sqlite+aiosqlite:":
                    cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            @event.listens_for(engine.sync_engine, "begin")
            def _on_begin(conn: Any) -> None:
                # writers take the database lock up front (no deadlocked upgrade); readers take a WAL snapshot
                # and never wait for a writer
                begin = "BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN"
                if sqlite_cursor.installed():  # sent with the transaction's first statement, in its trip
                    sqlite_cursor.defer_begin(conn.connection.dbapi_connection, begin)
                else:
                    conn.exec_driver_sql(begin)
        else:
            # no pool_pre_ping: SQLAlchemy's asyncpg ping is BEGIN, a query and ROLLBACK — three round trips before
            # every checkout, each a turn of an event loop that a restart keeps busy (issue 17). A connection the
            # server closed (a restart, a terminated backend, an idle timeout) is known closed without asking
            # (_replace_closed); one that fails in use is reported Unavailable and SQLAlchemy then replaces every
            # connection of the pool made before the failure.
            engine = create_async_engine(engine_url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE,
                                         pool_timeout=POOL_TIMEOUT_S)
            event.listen(engine.sync_engine, "connect", _bound_session)
            event.listen(engine.sync_engine, "checkout", _replace_closed)
        ledger = cls(engine, config)
        try:
            await ledger._migrate()
        except BaseException:
            await engine.dispose()  # a ledger that cannot open leaves no connection behind
            raise
        return ledger

    async def _migrate(self) -> None:
        """Versioned migrations: version 1 creates the schema; later versions append steps here."""
        async with self._tx() as conn:
            await conn.run_sync(schema.metadata.create_all)
            current = await self._meta(conn, "schema_version")
            if current is None:
                await self._set_meta(conn, "schema_version", str(schema.SCHEMA_VERSION))
                await self._pool_triggers(conn)
                await self._set_meta(conn, "pricing_policy", json.dumps(dataclasses.asdict(self.config.pricing_policy)))
                for policy in (minting.DIY_POLICY, minting.CERTIFIED_POLICY):
                    await self._set_meta(conn, f"farming_policy:{policy.id}", json.dumps(dataclasses.asdict(policy)))
            elif int(current) > schema.SCHEMA_VERSION:
                raise errors.InvalidRequest(
                    f"the ledger has schema version {current}, newer than this operator's {schema.SCHEMA_VERSION}"
                )
            else:
                if int(current) < 2:
                    await self._migrate_to_2(conn)
                if int(current) < 3:
                    await self._migrate_to_3(conn)
                if int(current) < 4:
                    await self._migrate_to_4(conn)
                if int(current) < 5:
                    await self._migrate_to_5(conn)
                if int(current) < 6:
                    await self._migrate_to_6(conn)
                if int(current) < 7:
                    await self._migrate_to_7(conn)
                if int(current) < 8:
                    await self._migrate_to_8(conn)
                if int(current) < 9:
                    await self._migrate_to_9(conn)
                if int(current) < 10:
                    await self._migrate_to_10(conn)
            for name in (self.config.foundation_account, self.config.staking_pool_account):
                await self._ensure_account(conn, name, "", role="grid")

    async def _migrate_to_2(self, conn: AsyncConnection) -> None:
        """Version 2: each contract carries its billing totals, computed once here from its bills."""
        for column, kind in (("billed_total", "BIGINT NOT NULL DEFAULT 0"), ("last_billed_at", "BIGINT"),
                             ("last_discount", "VARCHAR(16)")):
            await conn.execute(sa.text(f"ALTER TABLE contracts ADD COLUMN {column} {kind}"))
        await conn.execute(sa.text(
            "UPDATE contracts SET "
            "billed_total = COALESCE((SELECT SUM(amount) FROM bills WHERE contract_id = contracts.id), 0), "
            "last_billed_at = (SELECT MAX(billed_at) FROM bills WHERE contract_id = contracts.id), "
            "last_discount = (SELECT discount FROM bills WHERE contract_id = contracts.id ORDER BY until DESC LIMIT 1)"))
        await self._set_meta(conn, "schema_version", "2")

    async def _add_missing_columns(self, conn: AsyncConnection, tables: tuple[str, ...]) -> None:
        """Add the columns of ``tables`` that the stored ledger lacks, as this schema declares them (type and server
        default). Each migration step uses it, so steps stay independent of the order their columns arrived in."""
        def missing(sync_conn: Any, table: str) -> set[str]:
            have = {col["name"] for col in sa.inspect(sync_conn).get_columns(table)}
            return {col.name for col in getattr(schema, table).columns} - have
        for table in tables:
            absent = await conn.run_sync(missing, table)
            for col in getattr(schema, table).columns:
                if col.name not in absent:
                    continue
                kind = col.type.compile(dialect=conn.dialect)
                default = ""
                if col.server_default is not None:
                    arg = str(col.server_default.arg)
                    value = arg if isinstance(col.type, sa.Integer | sa.BigInteger) else "'" + arg.replace("'", "''") + "'"
                    default = f" NOT NULL DEFAULT {value}"
                await conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {col.name} {kind}{default}"))

    async def _migrate_to_3(self, conn: AsyncConnection) -> None:
        """Version 3: ownership and roles. Records made before it name no owner (''): the first object to reconcile
        one adopts it, which is the object that made it when the operator is upgraded in place. Grid accounts and
        payout accounts get their roles; a twin key shared by two accounts stops the upgrade (it cannot be
        guessed which account the key's owner meant)."""
        await self._add_missing_columns(conn, ("accounts", "farms", "nodes", "contracts"))
        a = schema.accounts
        shared = (await conn.execute(sa.select(a.c.public_key).where(a.c.public_key != "").group_by(a.c.public_key)
                                     .having(sa.func.count() > 1))).scalars().first()
        if shared is not None:
            raise errors.InvalidRequest(f"two accounts share the twin key {shared!r}; give one a new key before upgrading")
        await conn.execute(a.update().where(a.c.id.in_(sa.select(schema.farms.c.account_id))).values(role="payout"))
        await conn.execute(a.update().where(a.c.name.in_(
            (self.config.foundation_account, self.config.staking_pool_account))).values(role="grid"))
        for index in schema.accounts.indexes:
            await conn.run_sync(index.create, checkfirst=True)
        if not self.is_sqlite:  # SQLite cannot add a CHECK to a table; new SQLite ledgers have them
            for table in (schema.accounts, schema.contracts):
                for check in table.constraints:
                    if isinstance(check, sa.CheckConstraint) and check.name != "balance_never_negative":
                        await conn.execute(sa.text(
                            f"ALTER TABLE {table.name} DROP CONSTRAINT IF EXISTS {check.name}, "
                            f"ADD CONSTRAINT {check.name} CHECK ({check.sqltext})"))
        await self._set_meta(conn, "schema_version", "3")

    async def _migrate_to_4(self, conn: AsyncConnection) -> None:
        """Version 4 (billing version B and receipts): contracts get their reserve, cycles, billing error and last
        bill's amount; bills get their receipt columns (NULL for bills made before); bill_rates and payouts are new
        tables (create_all made them). Money already paid out by earlier versions stays paid: reserves start at 0.
        Independent of the other steps: it adds only the columns that are missing."""
        await self._add_missing_columns(conn, ("contracts", "bills"))
        await conn.execute(sa.text(
            "UPDATE contracts SET last_bill_amount = (SELECT amount FROM bills WHERE contract_id = contracts.id "
            "ORDER BY until DESC LIMIT 1)"))
        await self._set_meta(conn, "schema_version", "4")
    async def _migrate_to_5(self, conn: AsyncConnection) -> None:
        """Version 5: mint receipts and vote sequence numbers (the capacity table is new: create_all made it).
        Independent of versions 3 and 4: it only adds columns of its own, and only those not there yet."""
        await self._add_missing_columns(conn, ("mints", "votes"))
        await self._set_meta(conn, "schema_version", "5")

    async def _migrate_to_6(self, conn: AsyncConnection) -> None:
        """Version 6 (issue 13's last gaps): proposals keep their council signature's nonce; the index that finds
        what a payer owes; one node per node key (left out, and enforced for every new registration only, when
        the stored ledger already has two nodes sharing a key); a farm's payout account is named within its
        namespace (``ns/name``): each payout account used by the farms of one namespace only is renamed so (its
        balance and payouts stay with it). One used by farms of several namespaces, or by a farm no object has
        adopted yet, keeps its name until its farm is next registered. Debts need no data: a closed contract's
        overdraft is already on record, and is now its payer's to pay."""
        await self._add_missing_columns(conn, ("proposals",))
        n, a, f = schema.nodes, schema.accounts, schema.farms
        shared = (await conn.execute(sa.select(n.c.public_key).group_by(n.c.public_key)
                                     .having(sa.func.count() > 1))).first()
        for index in (*schema.proposals.indexes, *schema.contracts.indexes, *schema.nodes.indexes):
            if index.name == "one_node_per_key" and shared is not None:
                continue
            await conn.run_sync(index.create, checkfirst=True)
        used_by: dict[tuple[int, str], set[str]] = {}  # (payout account id, name) → its farms' namespaces
        for row in (await conn.execute(sa.select(a.c.id, a.c.name, f.c.owner_ns).join(f, f.c.account_id == a.c.id)
                                       .where(a.c.role == "payout"))).all():
            used_by.setdefault((row.id, row.name), set()).add(row.owner_ns)
        taken = set((await conn.execute(sa.select(a.c.name))).scalars())
        for (account_id, name), spaces in used_by.items():
            if len(spaces) != 1 or "" in spaces or "/" in name:
                continue  # several namespaces, or a farm nobody adopted yet: renamed when its farm is registered
            target = payout_account_name(spaces.pop(), name)
            if target not in taken:
                await conn.execute(a.update().where(a.c.id == account_id).values(name=target))
                taken.add(target)
        await self._set_meta(conn, "schema_version", "6")

    async def _migrate_to_7(self, conn: AsyncConnection) -> None:
        """Version 7: compact receipts (bills get quote_id; bill_quotes is new: create_all made it). On PostgreSQL
        bills drop their foreign keys and contracts get a fillfactor, which pages written from now on keep (a
        VACUUM FULL applies it to the old ones; version 10 makes it 40). SQLite ledgers keep their bills' foreign
        keys: dropping one means rebuilding the table, and SQLite's check is cheap. Bills made before keep their
        receipts as they were."""
        await self._add_missing_columns(conn, ("bills",))
        if not self.is_sqlite:
            await conn.execute(sa.text("ALTER TABLE bills DROP CONSTRAINT IF EXISTS bills_contract_id_fkey, "
                                       "DROP CONSTRAINT IF EXISTS bills_rates_id_fkey"))
            await conn.execute(sa.text(f"ALTER TABLE contracts SET (fillfactor = {schema.CONTRACTS_FILLFACTOR})"))
        await self._set_meta(conn, "schema_version", "7")

    async def _migrate_to_8(self, conn: AsyncConnection) -> None:
        """Version 8: each contract carries how far it is billed (``billed_until``: the end of its latest bill), computed
        once here from its bills (NULL for a contract never billed); from now on the update that writes a contract's
        totals with each bill keeps it. Independent of the other steps: it adds only the column that is missing."""
        await self._add_missing_columns(conn, ("contracts",))
        await conn.execute(sa.text(
            'UPDATE contracts SET billed_until = (SELECT MAX("until") FROM bills WHERE bills.contract_id = contracts.id)'))
        await self._set_meta(conn, "schema_version", "8")

    async def _migrate_to_9(self, conn: AsyncConnection) -> None:
        """Version 9: the placement pool's token (POOL_TOKEN) and the triggers that replace it."""
        await self._pool_triggers(conn)
        await self._set_meta(conn, "schema_version", "9")

    async def _migrate_to_10(self, conn: AsyncConnection) -> None:
        """Version 10: on PostgreSQL contracts get fillfactor 40 (schema.CONTRACTS_FILLFACTOR), which pages written from
        now on keep (a VACUUM FULL applies it to the old ones)."""
        if not self.is_sqlite:
            await conn.execute(sa.text(f"ALTER TABLE contracts SET (fillfactor = {schema.CONTRACTS_FILLFACTOR})"))
        await self._set_meta(conn, "schema_version", "10")

    async def _pool_triggers(self, conn: AsyncConnection) -> None:
        """The token, and a trigger per table of POOL_COLUMNS that replaces it on an insert, a delete or an update of
        those columns (SQLite: one per operation, per row, for the rows a write touches — the hourly billing's
        update of every contract's totals touches none of these columns; PostgreSQL: one per table, per
        statement)."""
        await self._set_meta(conn, POOL_TOKEN, uuid.uuid4().hex)
        bump = f"UPDATE meta SET value = {{new}} WHERE key = '{POOL_TOKEN}'"
        if self.is_sqlite:
            for table, columns in POOL_COLUMNS.items():
                for name, event in (("insert", "INSERT"), ("delete", "DELETE"),
                                    ("update", f"UPDATE OF {', '.join(columns)}")):
                    await conn.exec_driver_sql(
                        f"CREATE TRIGGER IF NOT EXISTS pool_{table}_{name} AFTER {event} ON {table} BEGIN "
                        f"{bump.format(new='lower(hex(randomblob(16)))')}; END")
            return
        await conn.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION tfgrid_placement_pool_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"{bump.format(new='md5(random()::text || clock_timestamp()::text)')}; RETURN NULL; END $$")
        for table, columns in POOL_COLUMNS.items():
            await conn.exec_driver_sql(
                f"CREATE OR REPLACE TRIGGER pool_{table} AFTER INSERT OR DELETE OR UPDATE OF {', '.join(columns)} "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION tfgrid_placement_pool_changed()")

    async def close(self) -> None:
        for batcher in (self._placements, self._observations, self._farm_observations, self._policy_reads,
                        self._closings, self._registrations):
            await batcher.close()
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with asyncio.timeout(LOCK_TIMEOUT_S):  # behind the writes ahead of it: each has its own bound too
                await self._lock.acquire()
        except TimeoutError:
            raise errors.Unavailable(f"the ledger is unavailable: its write lock was not free within "
                                     f"{LOCK_TIMEOUT_S:g} s (the writes ahead of this one wait for it)") from None
        try:
            async with self.engine.execution_options(**{WRITE: True}).begin() as conn:
                if not self.is_sqlite:
                    await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_ID})"))
                yield conn
        except IntegrityError as exc:
            if any(check in str(exc.orig) for check in ("_bounded", "never_negative")):  # schema CHECKs
                raise errors.InvalidRequest(f"the ledger refused an amount outside [0, {money.MAX_UNITS}] units: "
                                            f"{_first_line(exc.orig or exc)}") from exc
            raise errors.Conflict(f"the ledger refused a duplicate: {exc.orig}") from exc
        except (OperationalError, DBAPIError, OSError, PoolTimeout) as exc:
            raise _unavailable(exc) from exc
        finally:
            self._lock.release()

    async def _planner_statistics(self, conn: AsyncConnection, tables: Sequence[str]) -> None:
        """PostgreSQL: ANALYZE those of ``tables`` the planner has no statistics of, or whose row count moved by more
        than STALE_ROWS + STALE_SHARE of the rows their statistics counted, in ``conn``'s transaction.

        Autovacuum does this on its own schedule (a minute apart by default) — or never, where it is turned off (it was
        on this project's test machine). Without statistics the planner takes a freshly grown table for a few rows:
        the placement pool's read (every node with what its live contracts use) then aggregated the contracts once
        per node, 0.8–2.2 s of the write lock at grid size instead of ~0.05 s (issue 17, EXPLAIN ANALYZE: nested loops
        with 1,000 loops), during a burst and after every period. ANALYZE samples a table (tens of milliseconds at
        grid size) and blocks neither reads nor writes; a role that does not own a table gets PostgreSQL's warning and
        the table is left as it was, and so is a table another session holds (SKIP_LOCKED, PostgreSQL 12+: never
        waited for with the write lock held). A placement transaction that rolls back afterwards leaves PostgreSQL's
        record of the analyze and the row count it took (written in place), not its statistics: a table with rows
        and no statistics is analyzed again (with autovacuum off, nothing else would: a review found the planner
        then took 1,000 nodes for 5).

        Rows changed in place do not count, unlike autovacuum's rule (inserts, updates and deletes alike): each
        billing period updates every live contract's totals and each uptime report its node's last-seen time, and by
        that rule the first placement after a period analyzed ``contracts`` with the write lock held (0.13 s of a
        0.23 s transaction at grid size, issue 17, where a batch created during a period waited behind it). What the
        pool's plan rests on is the tables' sizes and how many of their rows are live; an update in place changes
        neither, except a contract or node that ends, and that only makes the planner expect more live rows than
        there are (the safe side: it hashes instead of looping). Rows are added by inserts, which move the count."""
        if self.is_sqlite:  # SQLite's planner needs no statistics for these queries (its pool read: ~15 ms)
            return
        stale = (await conn.execute(sa.text(
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables) "
            "AND (coalesce(s.last_analyze, s.last_autoanalyze) IS NULL OR c.reltuples < 0 "
            "OR abs(s.n_live_tup - c.reltuples) > :rows + CAST(:share AS float8) * c.reltuples "
            "OR (c.reltuples > 0 AND NOT EXISTS "
            "(SELECT 1 FROM pg_stats p WHERE p.schemaname = s.schemaname AND p.tablename = s.relname)))"),
            {"tables": list(tables), "rows": STALE_ROWS, "share": STALE_SHARE})).scalars().all()
        if not stale:
            return
        try:  # a savepoint: statistics are an optimisation, and a failure of theirs never fails the caller's work
            async with conn.begin_nested():  # SKIP_LOCKED: a table another session holds (a VACUUM) is not waited for
                await conn.execute(sa.text(f"ANALYZE (SKIP_LOCKED) {', '.join(sorted(stale))}"))  # our names only
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            log.warning("The ledger's planner statistics were not refreshed: %s", _first_line(exc))

    def _pool_seen(self, node: str, ts: int) -> None:
        """A report of ``node`` at ``ts`` was counted (in this process): the kept pool sees it up from then."""
        kept = self._pool
        if kept is not None and node in kept.seen:
            kept.seen[node] = ts  # as the ledger now has it (record_uptime refuses a report older than the last)

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection that reads. SQLite: in a transaction (one WAL snapshot for all its statements). PostgreSQL:
        in autocommit — at READ COMMITTED, the default, every statement of a transaction takes a snapshot of its
        own anyway, so the BEGIN and ROLLBACK around a read were two round trips that bought nothing."""
        try:
            async with self._reader.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError, PoolTimeout) as exc:
            raise _unavailable(exc) from exc

    async def _meta(self, conn: AsyncConnection, key: str) -> str | None:
        return (await conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == key))).scalar()

    async def _set_meta(self, conn: AsyncConnection, key: str, value: str) -> None:
        updated = await conn.execute(schema.meta.update().where(schema.meta.c.key == key).values(value=value))
        if updated.rowcount == 0:
            await conn.execute(schema.meta.insert().values(key=key, value=value))

    async def watermark(self, *, name: str, default: int) -> int:
        """The next period the named loop must process; set to ``default`` on first use."""
        async with self._tx() as conn:
            value = await self._meta(conn, f"watermark:{name}")
            if value is None:
                await self._set_meta(conn, f"watermark:{name}", str(default))
                return default
            return int(value)

    async def _advance(self, conn: AsyncConnection, name: str, period: int) -> None:
        value = await self._meta(conn, f"watermark:{name}")
        if value is None or int(value) < period + 1:
            await self._set_meta(conn, f"watermark:{name}", str(period + 1))

    def _minting_period_at(self, ts: int) -> minting.Period:
        return minting.period_at(ts, epoch=self.config.minting_epoch, length=self.config.minting_period_s)


    # ------------------------------------------------------------------ policies
    async def policies(self) -> Policies:
        return await self._policy_reads.submit(None)

    async def _policies_batch(self, callers: Sequence[None]) -> list[Policies]:
        """Every reconcile reads the pricing policy: concurrent readers share one read."""
        async with self._read() as conn:
            answer = await self._policies(conn)
        return [answer] * len(callers)

    async def _policies(self, conn: AsyncConnection) -> Policies:
        m = schema.meta
        rows = (await conn.execute(sa.select(m))).all()
        values = {r.key: r.value for r in rows}
        price_policy = pricing.PricingPolicy(**json.loads(values["pricing_policy"]))
        farming = {}
        for key, value in values.items():
            if key.startswith("farming_policy:"):
                p = minting.FarmingPolicy(**json.loads(value))
                farming[p.id] = p
        return price_policy, farming


