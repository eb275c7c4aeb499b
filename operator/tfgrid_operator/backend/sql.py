"""SqlLedger: the one GridBackend implementation, on SQLite (aiosqlite) and PostgreSQL (asyncpg).

Why SQLAlchemy Core: one schema and one set of statements for both engines, async drivers for both,
dialect differences (locking, URL forms) confined to this module, and no ORM between us and the rows
money lives in.

Concurrency: every transaction takes the ledger's write lock first — ``BEGIN IMMEDIATE`` on SQLite,
a transaction-scoped advisory lock on PostgreSQL — so two placements can never overbook a node and
two bill runs can never interleave, even from two operator processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.batching import Batcher
from tfgrid_operator.backend.config import LedgerConfig
from tfgrid_operator.domain import identity, minting, pricing, scheduling, units, voting
from tfgrid_operator.domain import uptime as uptime_mod
from tfgrid_operator.domain.units import Resources

LIVE = ("Created", "GracePeriod")
ADVISORY_LOCK_ID = 0x7466_6772  # "tfgr"


def _first_line(exc: BaseException) -> str:
    """An error's first line for a message; some (a connect timeout) carry no text, so their type speaks."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _engine_url(url: str) -> str:
    if url.startswith("sqlite+aiosqlite:") or url.startswith("postgresql+asyncpg:"):
        return url
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:"):]
    if url.startswith(("postgresql:", "postgres:")):
        return "postgresql+asyncpg:" + url.split(":", 1)[1]
    raise errors.InvalidRequest(f"unsupported ledger URL {url.split(':', 1)[0]!r}: use sqlite:/// or postgresql://")


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
WRITE = "tfgrid_write"  # execution option: this connection's transaction writes


@dataclasses.dataclass(frozen=True)
class _Open:
    """A queued open_contract call."""

    key: str
    payer: str
    request: scheduling.Request
    now: int


class SqlLedger:
    def __init__(self, engine: AsyncEngine, config: LedgerConfig) -> None:
        self.engine = engine
        self.config = config
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._lock = asyncio.Lock()  # one writer per process; the DB lock orders processes
        self._placements: Batcher[_Open, records.Contract] = Batcher(self._open_batch)
        self._observations: Batcher[str, records.Contract | None] = Batcher(self._observe_batch)
        self._policy_reads: Batcher[None, Policies] = Batcher(self._policies_batch)

    # ------------------------------------------------------------------ setup
    @classmethod
    async def open(cls, url: str, config: LedgerConfig) -> SqlLedger:
        engine_url = _engine_url(url)
        if engine_url.startswith("sqlite"):
            # how long a writer waits for another process's lock; ?timeout=S in the URL overrides the 30 s
            busy = {} if "timeout=" in engine_url else {"timeout": 30}
            # a fixed pool: aiosqlite runs a thread per connection, and the default overflow opened and closed a
            # connection (thread, PRAGMAs) per burst of concurrent reads; the writer lock serializes writes anyway
            engine = create_async_engine(engine_url, connect_args=busy, pool_size=POOL_SIZE, max_overflow=0,
                                         pool_timeout=POOL_TIMEOUT_S)

            @event.listens_for(engine.sync_engine, "connect")
            def _on_connect(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
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
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")
        else:
            engine = create_async_engine(engine_url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE, pool_pre_ping=True,
                                         pool_timeout=POOL_TIMEOUT_S)
        ledger = cls(engine, config)
        await ledger._migrate()
        return ledger

    async def _migrate(self) -> None:
        """Versioned migrations: version 1 creates the schema; later versions append steps here."""
        async with self._tx() as conn:
            await conn.run_sync(schema.metadata.create_all)
            current = await self._meta(conn, "schema_version")
            if current is None:
                await self._set_meta(conn, "schema_version", str(schema.SCHEMA_VERSION))
                await self._set_meta(conn, "pricing_policy", json.dumps(dataclasses.asdict(self.config.pricing_policy)))
                for policy in (minting.DIY_POLICY, minting.CERTIFIED_POLICY):
                    await self._set_meta(conn, f"farming_policy:{policy.id}", json.dumps(dataclasses.asdict(policy)))
            elif int(current) > schema.SCHEMA_VERSION:
                raise errors.InvalidRequest(
                    f"the ledger has schema version {current}, newer than this operator's {schema.SCHEMA_VERSION}"
                )
            elif int(current) < 2:
                await self._migrate_to_2(conn)
            for name in (self.config.foundation_account, self.config.staking_pool_account):
                await self._ensure_account(conn, name, "")

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

    async def close(self) -> None:
        for batcher in (self._placements, self._observations, self._policy_reads):
            await batcher.close()
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        async with self._lock:
            try:
                async with self.engine.execution_options(**{WRITE: True}).begin() as conn:
                    if not self.is_sqlite:
                        await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_ID})"))
                    yield conn
            except IntegrityError as exc:
                raise errors.Conflict(f"the ledger refused a duplicate: {exc.orig}") from exc
            except (OperationalError, DBAPIError, OSError, PoolTimeout) as exc:
                raise errors.Unavailable(f"the ledger is unavailable: {_first_line(exc)}") from exc

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError, PoolTimeout) as exc:
            raise errors.Unavailable(f"the ledger is unavailable: {_first_line(exc)}") from exc

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

    # ------------------------------------------------------------------ accounts
    async def _ensure_account(self, conn: AsyncConnection, name: str, public_key: str) -> records.Account:
        a = schema.accounts
        row = (await conn.execute(sa.select(a).where(a.c.name == name))).first()
        if row is None:
            new_id = (await conn.execute(a.insert().values(name=name, public_key=public_key, balance=0))).inserted_primary_key[0]
            return records.Account(new_id, name, 0)
        return records.Account(row.id, row.name, row.balance)

    async def ensure_account(self, *, name: str, public_key: str = "") -> records.Account:
        if not name:
            raise errors.InvalidRequest("an account needs a name")
        async with self._tx() as conn:
            return await self._ensure_account(conn, name, public_key)

    async def fund(self, *, name: str, amount: int) -> records.Account:
        if amount <= 0:
            raise errors.InvalidRequest(f"a funding amount must be positive, got {amount}")
        async with self._tx() as conn:
            a = schema.accounts
            done = await conn.execute(a.update().where(a.c.name == name).values(balance=a.c.balance + amount))
            if done.rowcount == 0:
                raise errors.NotFound(f"account {name!r} does not exist")
            row = (await conn.execute(sa.select(a).where(a.c.name == name))).one()
            return records.Account(row.id, row.name, row.balance)

    async def get_account(self, *, name: str) -> records.Account:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(schema.accounts).where(schema.accounts.c.name == name))).first()
        if row is None:
            raise errors.NotFound(f"account {name!r} does not exist")
        return records.Account(row.id, row.name, row.balance)

    async def account_by_key(self, *, public_key: str) -> records.Account:
        """The twin whose key signs for it: how a Deployment's Secret-held twin key finds its account."""
        a = schema.accounts
        async with self._read() as conn:
            row = (await conn.execute(sa.select(a).where(a.c.public_key == public_key).order_by(a.c.id))).first()
        if row is None or not public_key:
            raise errors.NotFound(f"no twin account has the public key {public_key!r}")
        return records.Account(row.id, row.name, row.balance)

    async def list_accounts(self) -> list[records.Account]:
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(schema.accounts).order_by(schema.accounts.c.name))).all()
        return [records.Account(r.id, r.name, r.balance) for r in rows]

    # ------------------------------------------------------------------ farms
    def _farm(self, row: Any, created: bool = False) -> records.Farm:
        return records.Farm(row.id, row.name, row.owner_key, row.payout, row.certified, row.dedicated,
                            row.public_ips, row.state, created)

    def _farm_query(self) -> sa.Select[Any]:
        f, a = schema.farms, schema.accounts
        return sa.select(f, a.c.name.label("payout")).join(a, a.c.id == f.c.account_id)

    async def ensure_farm(
        self, *, name: str, owner_key: str, payout_account: str, certified: bool, dedicated: bool, public_ips: int,
    ) -> records.Farm:
        if not identity.is_public_key(owner_key):
            raise errors.InvalidRequest(f"farm {name!r}: owner key is not a base64 ed25519 public key")
        if public_ips < 0:
            raise errors.InvalidRequest(f"farm {name!r}: public IPs cannot be negative")
        f = schema.farms
        async with self._tx() as conn:
            account = await self._ensure_account(conn, payout_account, "")
            values = dict(owner_key=owner_key, account_id=account.id, certified=certified, dedicated=dedicated,
                          public_ips=public_ips)
            row = (await conn.execute(self._farm_query().where(f.c.name == name))).first()
            created = row is None
            if created:
                await conn.execute(f.insert().values(name=name, state="Active", **values))
            elif row.state == "Closed":
                raise errors.Conflict(f"farm {name!r} was closed on the ledger; use a new name")
            else:
                await conn.execute(f.update().where(f.c.name == name).values(**values))
            row = (await conn.execute(self._farm_query().where(f.c.name == name))).one()
            return self._farm(row, created)

    async def observe_farm(self, *, name: str) -> records.Farm | None:
        async with self._read() as conn:
            row = (await conn.execute(self._farm_query().where(schema.farms.c.name == name))).first()
        return None if row is None else self._farm(row)

    async def list_farms(self) -> list[records.Farm]:
        async with self._read() as conn:
            rows = (await conn.execute(self._farm_query().order_by(schema.farms.c.name))).all()
        return [self._farm(r) for r in rows]

    async def close_farm(self, *, name: str) -> None:
        f, n = schema.farms, schema.nodes
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(f).where(f.c.name == name))).first()
            if row is None or row.state == "Closed":
                return  # already gone: deletion is idempotent
            active = (await conn.execute(
                sa.select(sa.func.count()).select_from(n).where(n.c.farm_id == row.id, n.c.state == "Active"))).scalar()
            if active:
                raise errors.Conflict(f"farm {name!r} still has {active} active node(s)")
            await conn.execute(f.update().where(f.c.id == row.id).values(state="Closed"))

    # ------------------------------------------------------------------ nodes
    def _node_query(self) -> sa.Select[Any]:
        n, f = schema.nodes, schema.farms
        return sa.select(n, f.c.name.label("farm")).join(f, f.c.id == n.c.farm_id)

    def _node(self, row: Any, created: bool = False) -> records.Node:
        return records.Node(row.id, row.name, row.farm, _res(row), row.country, row.city, row.certified,
                            row.public_key, row.state, created)

    async def ensure_node(
        self, *, name: str, farm: str, resources: Resources, country: str, city: str, certified: bool,
        public_key: str, now: int,
    ) -> records.Node:
        problems = units.node_minimum_violations(resources)
        if problems:
            raise errors.InvalidRequest(f"node {name!r}: " + "; ".join(problems))
        if not identity.is_public_key(public_key):
            raise errors.InvalidRequest(f"node {name!r}: public key is not a base64 ed25519 public key")
        n, f = schema.nodes, schema.farms
        async with self._tx() as conn:
            farm_row = (await conn.execute(sa.select(f).where(f.c.name == farm))).first()
            if farm_row is None or farm_row.state != "Active":
                raise errors.NotFound(f"farm {farm!r} is not registered on the ledger")
            values = dict(farm_id=farm_row.id, country=country, city=city, certified=certified,
                          public_key=public_key, **resources.as_dict())
            row = (await conn.execute(sa.select(n).where(n.c.name == name))).first()
            created = row is None
            if created:
                await conn.execute(n.insert().values(
                    name=name, state="Active", created_at=now, connection_price=self.config.connection_price_musd,
                    **values))
            elif row.state == "Closed":
                raise errors.Conflict(f"node {name!r} was closed on the ledger; use a new name")
            else:
                used = await self._used_on_node(conn, row.id)
                if not used.fits_in(resources):
                    raise errors.Conflict(
                        f"node {name!r} cannot shrink below what its deployments reserve ({used.as_dict()})")
                await conn.execute(n.update().where(n.c.id == row.id).values(**values))
            row = (await conn.execute(self._node_query().where(n.c.name == name))).one()
            return self._node(row, created)

    async def observe_node(self, *, name: str) -> records.Node | None:
        async with self._read() as conn:
            row = (await conn.execute(self._node_query().where(schema.nodes.c.name == name))).first()
        return None if row is None else self._node(row)

    async def _used_on_node(self, conn: AsyncConnection, node_id: int) -> Resources:
        c = schema.contracts
        row = (await conn.execute(sa.select(
            sa.func.coalesce(sa.func.sum(c.c.cru), 0).label("cru"), sa.func.coalesce(sa.func.sum(c.c.mru), 0).label("mru"),
            sa.func.coalesce(sa.func.sum(c.c.sru), 0).label("sru"), sa.func.coalesce(sa.func.sum(c.c.hru), 0).label("hru"),
        ).where(c.c.node_id == node_id, c.c.state.in_(LIVE)))).one()
        return Resources(int(row.cru), int(row.mru), int(row.sru), int(row.hru))

    async def close_node(self, *, name: str, now: int) -> None:
        n, c = schema.nodes, schema.contracts
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(n).where(n.c.name == name))).first()
            if row is None or row.state == "Closed":
                return
            keys = (await conn.execute(
                sa.select(c.c.key).where(c.c.node_id == row.id, c.c.state.in_(LIVE)).order_by(c.c.key))).scalars().all()
            if keys:
                raise errors.Conflict(f"node {name!r} still carries {len(keys)} deployment(s): {', '.join(keys[:5])}")
            await conn.execute(n.update().where(n.c.id == row.id).values(state="Closed", closed_at=now))

    async def record_uptime(self, *, node: str, ts: int, uptime: int, signature: str, now: int) -> int:
        """Verify and count one signed uptime report; returns the seconds credited this period."""
        n = schema.nodes
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(n).where(n.c.name == node))).first()
            if row is None or row.state != "Active":
                raise errors.NotFound(f"node {node!r} is not registered on the ledger")
            try:
                identity.verify(row.public_key, identity.UPTIME, {"node": node, "ts": ts, "uptime": uptime}, signature)
            except identity.BadSignature as exc:
                raise errors.BadSignature(f"uptime report for node {node!r} is not signed by its key") from exc
            if abs(ts - now) > uptime_mod.TIMESTAMP_DRIFT_S:
                raise errors.Replayed(f"uptime report for node {node!r} is {ts - now:+d} s off the ledger's clock")
            period = self._minting_period_at(ts)
            last = row.last_report_ts
            if last is not None and ts == last:
                u = schema.uptime
                seen = (await conn.execute(sa.select(u.c.total).where(u.c.node_id == row.id, u.c.period == period.index))).scalar()
                return int(seen or 0)  # the same report delivered again (a watch restart): counted once
            if last is not None and ts < last:
                raise errors.Replayed(f"uptime report for node {node!r} at {ts} is not newer than the last one")
            if last is not None and last < period.start and ts - period.start < uptime:
                # §3.1: the first report after a period's end credits the previous period up to its exact end
                boundary = period.start
                before = self._minting_period_at(boundary - 1)
                minted = (await conn.execute(sa.select(schema.mints.c.node_id).where(
                    schema.mints.c.node_id == row.id, schema.mints.c.period == before.index))).first()
                if minted is None and last >= before.start:
                    await self._fold(conn, row.id, before, boundary, uptime - (ts - boundary))
            total = await self._fold(conn, row.id, period, ts, uptime)
            await conn.execute(n.update().where(n.c.id == row.id).values(last_report_ts=ts))
            return total

    async def _fold(self, conn: AsyncConnection, node_id: int, period: minting.Period, ts: int, up: int) -> int:
        u = schema.uptime
        prev = (await conn.execute(sa.select(u).where(u.c.node_id == node_id, u.c.period == period.index))).first()
        new = uptime_mod.credit(_uptime_state(prev, period), ts=ts, uptime=up)
        values = dict(total=new.total, last_ts=new.last_ts, last_uptime=new.last_uptime, boot_ts=new.boot_ts,
                      violation=str(new.violation) if new.violation else None, reports=new.reports)
        if prev is None:
            await conn.execute(u.insert().values(node_id=node_id, period=period.index, **values))
        else:
            await conn.execute(u.update().where(u.c.node_id == node_id, u.c.period == period.index).values(**values))
        return new.total

    async def node_summaries(self, *, now: int) -> dict[str, records.NodeSummary]:
        n, f, c, u, m = schema.nodes, schema.farms, schema.contracts, schema.uptime, schema.mints
        period = self._minting_period_at(now)
        async with self._read() as conn:
            nodes = (await conn.execute(sa.select(n, f.c.name.label("farm")).join(f, f.c.id == n.c.farm_id)
                                        .where(n.c.state == "Active"))).all()
            used = {r.node_id: r for r in (await conn.execute(
                sa.select(c.c.node_id, sa.func.sum(c.c.cru).label("cru"), sa.func.sum(c.c.mru).label("mru"),
                          sa.func.sum(c.c.sru).label("sru"), sa.func.sum(c.c.hru).label("hru"),
                          sa.func.count().label("n"))
                .where(c.c.state.in_(LIVE)).group_by(c.c.node_id))).all()}
            ups = {r.node_id: r for r in (await conn.execute(sa.select(u).where(u.c.period == period.index))).all()}
            minted = {r.node_id: int(r.total) for r in (await conn.execute(
                sa.select(m.c.node_id, sa.func.sum(m.c.amount).label("total")).group_by(m.c.node_id))).all()}
            last_period = sa.select(m.c.node_id, sa.func.max(m.c.period).label("p")).group_by(m.c.node_id).subquery()
            last = {r.node_id: r for r in (await conn.execute(
                sa.select(m).join(last_period, sa.and_(m.c.node_id == last_period.c.node_id,
                                                      m.c.period == last_period.c.p)))).all()}
        out = {}
        for r in nodes:
            us, up, lm = used.get(r.id), ups.get(r.id), last.get(r.id)
            total = int(up.total) if up else 0
            out[r.name] = records.NodeSummary(
                name=r.name, farm=r.farm, resources=_res(r),
                used=Resources(int(us.cru), int(us.mru), int(us.sru), int(us.hru)) if us else Resources(),
                contracts=int(us.n) if us else 0, uptime_s=total,
                uptime_permille=uptime_mod.uptime_permille(total, max(1, min(now, period.end) - period.start)),
                last_report_ts=r.last_report_ts, violation=up.violation if up else None,
                minted_total=minted.get(r.id, 0), last_mint=lm.amount if lm else None,
                last_mint_period=lm.period if lm else None, last_mint_reason=lm.reason if lm else None)
        return out

    # ------------------------------------------------------------------ contracts
    def _contract_query(self) -> sa.Select[Any]:
        """Contracts with their payer, node and farm names (the billing totals are columns of the contract)."""
        c, a, n, f = schema.contracts, schema.accounts, schema.nodes, schema.farms
        return (sa.select(c, a.c.name.label("payer"), n.c.name.label("node"), f.c.name.label("farm"), n.c.certified)
                .join(a, a.c.id == c.c.account_id).join(n, n.c.id == c.c.node_id).join(f, f.c.id == n.c.farm_id))

    def _contract(self, r: Any, created: bool = False) -> records.Contract:
        return records.Contract(
            id=r.id, key=r.key, payer=r.payer, node=r.node, farm=r.farm, resources=_res(r), public_ips=r.public_ips,
            dedicated=r.dedicated, state=r.state, created_at=r.created_at, grace_since=r.grace_since,
            deleted_at=r.deleted_at, deleted_reason=r.deleted_reason, overdraft=r.overdraft,
            billed_total=int(r.billed_total), last_billed_at=r.last_billed_at, last_discount=r.last_discount,
            certified=bool(r.certified), created=created)

    async def _latest_contract(self, conn: AsyncConnection, key: str) -> records.Contract | None:
        return (await self._latest_contracts(conn, {key})).get(key)

    async def _select(self, conn: AsyncConnection, request: scheduling.Request,
                      now: int) -> scheduling.Placement | scheduling.Unschedulable:
        """Node selection in two steps: the database returns the few least-loaded nodes that match and fit,
        and the domain chooses among them (checking every rule again). Only when none fits does the domain see
        every node, so the Unschedulable message names the constraint that failed."""
        decision = scheduling.select_node(request, await self._candidates(conn, now, request=request))
        if isinstance(decision, scheduling.Placement):
            return decision
        return scheduling.select_node(request, await self._candidates(conn, now))

    async def _candidates(self, conn: AsyncConnection, now: int, *, request: scheduling.Request | None = None,
                          limit: int = 8) -> list[scheduling.Candidate]:
        """Active nodes with what their live contracts use, summed by the database in the same query: every
        node, or with ``request`` only the ``limit`` least-loaded that match and fit (as select_node orders)."""
        n, f, c = schema.nodes, schema.farms, schema.contracts
        live = c.c.state.in_(LIVE)
        usage = (sa.select(c.c.node_id, *(sa.func.sum(getattr(c.c, k)).label(k) for k in RESOURCE_FIELDS),
                           sa.func.count().label("n"), sa.func.max(sa.case((c.c.dedicated, 1), else_=0)).label("rented"))
                 .where(live).group_by(c.c.node_id).subquery())
        ips = (sa.select(n.c.farm_id, sa.func.sum(c.c.public_ips).label("ips")).join(n, n.c.id == c.c.node_id)
               .where(live).group_by(n.c.farm_id).subquery())
        used = {k: sa.func.coalesce(getattr(usage.c, k), 0) for k in RESOURCE_FIELDS}
        contracts, rented = sa.func.coalesce(usage.c.n, 0), sa.func.coalesce(usage.c.rented, 0)
        farm_free_ips = f.c.public_ips - sa.func.coalesce(ips.c.ips, 0)
        query = (sa.select(n, f.c.name.label("farm"), *(u.label(f"used_{k}") for k, u in used.items()),
                           contracts.label("contracts"), rented.label("rented"), farm_free_ips.label("farm_free_ips"))
                 .join(f, f.c.id == n.c.farm_id).outerjoin(usage, usage.c.node_id == n.c.id)
                 .outerjoin(ips, ips.c.farm_id == f.c.id).where(n.c.state == "Active"))
        if request is not None:
            query = self._narrowed(query, request, now, limit, used=used, contracts=contracts, rented=rented,
                                   farm_free_ips=farm_free_ips)
        down_after = self.config.node_down_after_s
        return [scheduling.Candidate(
            name=r.name, farm=r.farm, total=_res(r),
            used=Resources(int(r.used_cru), int(r.used_mru), int(r.used_sru), int(r.used_hru)),
            country=r.country, city=r.city, certified=r.certified,
            up=now - (r.last_report_ts if r.last_report_ts is not None else r.created_at) <= down_after,
            farm_free_ips=int(r.farm_free_ips), contracts=int(r.contracts), rented=bool(r.rented),
        ) for r in (await conn.execute(query)).all()]

    def _narrowed(self, query: sa.Select[Any], r: scheduling.Request, now: int, limit: int, *, used: dict[str, Any],
                  contracts: Any, rented: Any, farm_free_ips: Any) -> sa.Select[Any]:
        """``query`` kept to the nodes that match ``r``'s constraints and have room, least loaded first."""
        n, f = schema.nodes, schema.farms
        want = r.resources.as_dict()
        seen = sa.func.coalesce(n.c.last_report_ts, n.c.created_at)
        query = query.where(*(getattr(n.c, k) - used[k] >= want[k] for k in RESOURCE_FIELDS),
                            farm_free_ips >= r.public_ips, rented == 0,
                            sa.literal(now) - seen <= self.config.node_down_after_s)
        if r.node is not None:
            query = query.where(n.c.name == r.node)
        if r.farm is not None:
            query = query.where(f.c.name == r.farm)
        if r.country is not None:
            query = query.where(sa.func.lower(n.c.country) == r.country.lower())
        if r.city is not None:
            query = query.where(sa.func.lower(n.c.city) == r.city.lower())
        if r.certified_only:
            query = query.where(n.c.certified.is_(True))
        if r.exclude:
            query = query.where(n.c.name.not_in(sorted(r.exclude)))
        if r.dedicated:
            query = query.where(contracts == 0)
        ratios = [sa.case((getattr(n.c, k) > 0, (used[k] + want[k]) * 1.0 / getattr(n.c, k)), else_=0.0)
                  for k in RESOURCE_FIELDS]
        load = sa.func.max(*ratios) if self.is_sqlite else sa.func.greatest(*ratios)
        return query.order_by(load, n.c.name).limit(limit)

    async def open_contract(self, *, key: str, payer: str, request: scheduling.Request, now: int) -> records.Contract:
        if request.resources.is_negative() or request.public_ips < 0:
            raise errors.InvalidRequest(f"deployment {key!r}: resources and public IPs cannot be negative")
        return await self._placements.submit(_Open(key, payer, request, now))

    async def _open_batch(self, batch: Sequence[_Open]) -> list[records.Contract | errors.LedgerError]:
        """Every queued placement in one write transaction: the live contracts and payers of the batch in one query
        each, the candidates once, each choice by the domain on the candidates as the earlier choices left them,
        one insert. A deployment with a live contract adopts it (a restarted operator never opens a second one)."""
        c, a, n = schema.contracts, schema.accounts, schema.nodes
        out: list[records.Contract | errors.LedgerError | None] = []
        rows: dict[str, dict[str, Any]] = {}
        async with self._tx() as conn:
            existing = await self._latest_contracts(conn, {o.key for o in batch})
            payers = dict((await conn.execute(sa.select(a.c.name, a.c.id).where(
                a.c.name.in_({o.payer for o in batch})))).all())
            pool: dict[str, scheduling.Candidate] | None = None
            for o in batch:
                live = existing.get(o.key)
                if o.key in rows or (live is not None and live.state in LIVE):
                    out.append(live)  # None: placed earlier in this batch, read back below
                    continue
                if o.payer not in payers:
                    out.append(errors.NotFound(f"payer account {o.payer!r} does not exist"))
                    continue
                if pool is None:
                    pool = {x.name: x for x in await self._candidates(conn, max(b.now for b in batch))}
                decision = scheduling.select_node(o.request, pool.values())
                if isinstance(decision, scheduling.Unschedulable):
                    out.append(errors.NoCapacity(decision.constraint, decision.message))
                    continue
                chosen = pool[decision.node]
                reserved = chosen.total if o.request.dedicated else o.request.resources
                pool[chosen.name] = dataclasses.replace(chosen, used=chosen.used + reserved, contracts=chosen.contracts + 1,
                                                        rented=chosen.rented or o.request.dedicated)
                if o.request.public_ips:  # the farm's free IPs are shared by all its nodes
                    for x in [x for x in pool.values() if x.farm == chosen.farm]:
                        pool[x.name] = dataclasses.replace(x, farm_free_ips=x.farm_free_ips - o.request.public_ips)
                rows[o.key] = dict(key=o.key, account_id=payers[o.payer], node=chosen.name, public_ips=o.request.public_ips,
                                   dedicated=o.request.dedicated, state="Created", created_at=o.now, overdraft=0,
                                   **reserved.as_dict())
                out.append(None)
            if rows:
                ids = dict((await conn.execute(sa.select(n.c.name, n.c.id).where(
                    n.c.name.in_({r["node"] for r in rows.values()})))).all())
                await conn.execute(c.insert(), [{**{k: v for k, v in r.items() if k != "node"}, "node_id": ids[r["node"]]}
                                                for r in rows.values()])
                made = await self._latest_contracts(conn, set(rows))
        return [answer if answer is not None else dataclasses.replace(made[o.key], created=True)
                for o, answer in zip(batch, out, strict=True)]

    async def _latest_contracts(self, conn: AsyncConnection, keys: set[str]) -> dict[str, records.Contract]:
        c = schema.contracts
        found: dict[str, records.Contract] = {}
        for r in (await conn.execute(self._contract_query().where(c.c.key.in_(keys)).order_by(c.c.id))).all():
            found[r.key] = self._contract(r)  # the latest per key wins
        return found

    async def observe_contract(self, *, key: str) -> records.Contract | None:
        return await self._observations.submit(key)

    async def _observe_batch(self, keys: Sequence[str]) -> list[records.Contract | None]:
        """Concurrent lookups (every Deployment resuming after a restart) in one query."""
        async with self._read() as conn:
            found = await self._latest_contracts(conn, set(keys))
        return [found.get(k) for k in keys]

    async def resize_contract(self, *, key: str, resources: Resources, public_ips: int, now: int) -> records.Contract:
        c, n, f = schema.contracts, schema.nodes, schema.farms
        async with self._tx() as conn:
            current = await self._latest_contract(conn, key)
            if current is None or current.state not in LIVE:
                raise errors.NotFound(f"deployment {key!r} has no open contract")
            if current.state == "GracePeriod":
                raise errors.Conflict(f"deployment {key!r} is in its grace period and cannot be resized (§2.4)")
            if current.dedicated:
                raise errors.Conflict(f"deployment {key!r} rents its whole node; there is nothing to resize")
            node = (await conn.execute(sa.select(n).where(n.c.name == current.node))).one()
            free = _res(node) - (await self._used_on_node(conn, node.id)) + current.resources
            short = resources.shortfall(free)
            if short:
                raise errors.NoCapacity("Capacity", f"node {current.node!r} has no room to resize: short of {', '.join(short)}")
            farm = (await conn.execute(sa.select(f).where(f.c.id == node.farm_id))).one()
            ips_used = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(c.c.public_ips), 0))
                                           .join(n, n.c.id == c.c.node_id)
                                           .where(n.c.farm_id == farm.id, c.c.state.in_(LIVE)))).scalar()
            if public_ips - current.public_ips > farm.public_ips - int(ips_used):
                raise errors.NoCapacity("PublicIPs", f"farm {farm.name!r} has no free public IPv4 for the resize")
            await self._bill_partial(conn, current.id, now)  # the old size is billed up to now
            await conn.execute(c.update().where(c.c.id == current.id).values(public_ips=public_ips, **resources.as_dict()))
            out = await self._latest_contract(conn, key)
            assert out is not None
            return out

    async def close_contract(self, *, key: str, now: int, reason: str) -> records.Contract | None:
        """Final bill for the used part of the current period, then Deleted. Idempotent."""
        c = schema.contracts
        async with self._tx() as conn:
            current = await self._latest_contract(conn, key)
            if current is None or current.state not in LIVE:
                return current
            await self._bill_partial(conn, current.id, now)
            await conn.execute(c.update().where(c.c.id == current.id).values(
                state="Deleted", deleted_at=now, deleted_reason=reason))
            return await self._latest_contract(conn, key)

    async def move_contract(self, *, key: str, request: scheduling.Request, now: int) -> records.Contract:
        """Self-healing in one transaction: final bill and close (reason Moved), then a new contract on
        another node from ``now``. If no node fits, nothing changes (NoCapacity)."""
        c = schema.contracts
        async with self._tx() as conn:
            current = await self._latest_contract(conn, key)
            if current is None or current.state not in LIVE:
                raise errors.NotFound(f"deployment {key!r} has no open contract to move")
            decision = await self._select(conn, request, now)
            if isinstance(decision, scheduling.Unschedulable):
                raise errors.NoCapacity(decision.constraint, decision.message)
            await self._bill_partial(conn, current.id, now)
            await conn.execute(c.update().where(c.c.id == current.id).values(
                state="Deleted", deleted_at=now, deleted_reason="Moved"))
            node_id = (await conn.execute(sa.select(schema.nodes.c.id).where(schema.nodes.c.name == decision.node))).scalar_one()
            account_id = (await conn.execute(sa.select(c.c.account_id).where(c.c.id == current.id))).scalar_one()
            await conn.execute(c.insert().values(
                key=key, account_id=account_id, node_id=node_id, public_ips=request.public_ips,
                dedicated=request.dedicated, state=current.state, grace_since=current.grace_since, created_at=now,
                overdraft=current.overdraft, **request.resources.as_dict()))
            await conn.execute(c.update().where(c.c.id == current.id).values(overdraft=0))
            moved = await self._latest_contract(conn, key)
            assert moved is not None
            return dataclasses.replace(moved, created=True)

    async def contract_summaries(self) -> dict[str, records.Contract]:
        c = schema.contracts
        async with self._read() as conn:
            rows = (await conn.execute(self._contract_query().order_by(c.c.id))).all()
        return {r.key: self._contract(r) for r in rows}  # the latest contract per key wins

    # ------------------------------------------------------------------ billing
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

    def _billing_window(self, period: int) -> tuple[int, int]:
        length = self.config.billing_period_s
        return period * length, (period + 1) * length

    async def _bill_partial(self, conn: AsyncConnection, contract_id: int, now: int) -> None:
        """Bill [max(period start, created), now) of the current period once, keyed (contract, period)."""
        period = now // self.config.billing_period_s
        await self._bill(conn, period=period, now=now, only=contract_id, until=now)

    async def bill_period(self, *, period: int, now: int) -> records.PeriodReport:
        _start, end = self._billing_window(period)
        if now < end:
            raise errors.InvalidRequest(f"billing period {period} ends at {end}; it cannot be billed at {now}")
        async with self._tx() as conn:
            report = await self._bill(conn, period=period, now=now, only=None, until=end)
            await self._advance(conn, "bill", period)
            return report

    async def _bill(self, conn: AsyncConnection, *, period: int, now: int, only: int | None, until: int) -> records.PeriodReport:
        c, b, a, n, f = schema.contracts, schema.bills, schema.accounts, schema.nodes, schema.farms
        start, end = self._billing_window(period)
        until = min(until, end)
        policy, _ = await self._policies(conn)
        price = self.config.tft_price
        where = [c.c.created_at < until, sa.or_(c.c.deleted_at.is_(None), c.c.deleted_at > start),
                 c.c.state.in_(LIVE)]
        if only is not None:
            where.append(c.c.id == only)
        billed_until = dict((await conn.execute(  # per contract, how far this period is billed already
            sa.select(b.c.contract_id, sa.func.max(b.c.until)).where(b.c.period == period).group_by(b.c.contract_id))).all())
        rows = (await conn.execute(
            sa.select(c.c.id, c.c.key, c.c.account_id, c.c.cru, c.c.mru, c.c.sru, c.c.hru, c.c.public_ips, c.c.dedicated,
                      c.c.state, c.c.created_at, c.c.grace_since, c.c.overdraft, n.c.certified,
                      n.c.cru.label("ncru"), n.c.mru.label("nmru"), n.c.sru.label("nsru"), n.c.hru.label("nhru"),
                      f.c.account_id.label("farmer"))
            .join(n, n.c.id == c.c.node_id).join(f, f.c.id == n.c.farm_id).where(*where).order_by(c.c.id))).all()
        balances = {r.id: r.balance for r in (await conn.execute(sa.select(a.c.id, a.c.balance))).all()}
        start_balances = dict(balances)
        foundation = (await conn.execute(sa.select(a.c.id).where(a.c.name == self.config.foundation_account))).scalar_one()
        staking = (await conn.execute(sa.select(a.c.id).where(a.c.name == self.config.staking_pool_account))).scalar_one()
        new_bills: list[dict[str, Any]] = []
        quotes: dict[tuple[Any, ...], pricing.Quote] = {}
        contract_updates: list[dict[str, Any]] = []
        changed: list[str] = []
        skipped = 0
        total = 0

        def priced_for(r: Any, seconds: int) -> pricing.Bill:
            """A few contract shapes are priced once (Quote); each bill only picks its discount."""
            shape = (r.cru, r.mru, r.sru, r.hru, r.public_ips, seconds, r.certified, r.dedicated,
                     (r.ncru, r.nmru, r.nsru, r.nhru) if r.dedicated else None)
            quote = quotes.get(shape)
            if quote is None:
                quote = quotes[shape] = pricing.Quote.of(
                    resources=Resources(r.cru, r.mru, r.sru, r.hru), public_ips=r.public_ips, seconds=seconds,
                    certified=r.certified, dedicated_node=Resources(*shape[8]) if shape[8] else None,
                    policy=policy, price=price)
            return quote.bill(balance=balances[r.account_id])

        for r in rows:
            window_start = max(start, r.created_at, billed_until.get(r.id, start))
            window_end = until
            if r.id in billed_until and window_start >= window_end:
                skipped += 1
                continue
            deleted_at = None
            seconds = max(0, window_end - window_start)
            priced = priced_for(r, seconds)
            owed = priced.amount + r.overdraft
            if r.state == "GracePeriod" and r.grace_since is not None and owed > balances[r.account_id]:
                expiry = r.grace_since + self.config.grace_period_s
                if expiry < window_end:  # §2.4: the grace period ran out unpaid: bill up to its end, then Deleted
                    window_end = deleted_at = max(window_start, expiry)
                    seconds = window_end - window_start
                    priced = priced_for(r, seconds)
                    owed = priced.amount + r.overdraft
            paid = min(owed, balances[r.account_id])
            balances[r.account_id] -= paid
            shares = pricing.split(paid)
            balances[r.farmer] += shares.farmer
            balances[foundation] += shares.foundation
            balances[staking] += shares.staking_pool
            total += priced.amount
            new_bills.append(dict(contract_id=r.id, period=period, until=window_end, seconds=seconds,
                                  amount=priced.amount, paid=paid, discount=str(priced.discount), billed_at=now))
            overdraft = owed - paid
            state, grace_since = r.state, r.grace_since
            if overdraft > 0 and state == "Created":
                state, grace_since = "GracePeriod", window_end  # §2.4: Created → GracePeriod
            elif overdraft == 0 and state == "GracePeriod":
                state, grace_since = "Created", None  # §2.4: funded in time
            update = dict(cid=r.id, overdraft=overdraft, state=state, grace_since=grace_since,
                          deleted_at=None, deleted_reason=None)
            if deleted_at is not None:
                update.update(state="Deleted", deleted_at=deleted_at, deleted_reason="OutOfFunds")
            if (update["overdraft"], update["state"], update["grace_since"]) != (r.overdraft, r.state, r.grace_since):
                contract_updates.append(update)
                if update["state"] != r.state:
                    changed.append(r.key)
        if new_bills:
            await conn.execute(b.insert(), new_bills)
            await conn.execute(
                c.update().where(c.c.id == sa.bindparam("cid")).values(
                    billed_total=c.c.billed_total + sa.bindparam("amount_"), last_billed_at=sa.bindparam("billed_at_"),
                    last_discount=sa.bindparam("discount_")),
                [{"cid": x["contract_id"], "amount_": x["amount"], "billed_at_": x["billed_at"], "discount_": x["discount"]}
                 for x in new_bills])
        if contract_updates:
            await conn.execute(
                c.update().where(c.c.id == sa.bindparam("cid")).values(
                    overdraft=sa.bindparam("overdraft"), state=sa.bindparam("state"),
                    grace_since=sa.bindparam("grace_since"), deleted_at=sa.bindparam("deleted_at"),
                    deleted_reason=sa.bindparam("deleted_reason")),
                contract_updates)
        await self._write_balances(conn, start_balances, balances)
        return records.PeriodReport(period, len(new_bills), total, skipped, tuple(changed))

    async def _write_balances(self, conn: AsyncConnection, before: dict[int, int], after: dict[int, int]) -> None:
        a = schema.accounts
        deltas = [dict(aid=k, delta=after[k] - before.get(k, 0)) for k in after if after[k] != before.get(k, 0)]
        if deltas:
            await conn.execute(a.update().where(a.c.id == sa.bindparam("aid"))
                               .values(balance=a.c.balance + sa.bindparam("delta")), deltas)

    # ------------------------------------------------------------------ minting
    async def mint_period(self, *, period: int, now: int) -> records.PeriodReport:
        cfg = self.config
        p = minting.period_by_index(period, epoch=cfg.minting_epoch, length=cfg.minting_period_s)
        if now < p.end:
            raise errors.InvalidRequest(f"minting period {period} ends at {p.end}; it cannot be minted at {now}")
        n, f, u, m, a = schema.nodes, schema.farms, schema.uptime, schema.mints, schema.accounts
        async with self._tx() as conn:
            _, policies = await self._policies(conn)
            already = set((await conn.execute(sa.select(m.c.node_id).where(m.c.period == period))).scalars())
            nodes = (await conn.execute(
                sa.select(n, f.c.account_id.label("payout")).join(f, f.c.id == n.c.farm_id)
                .where(n.c.created_at < p.end, sa.or_(n.c.closed_at.is_(None), n.c.closed_at > p.start))
                .order_by(n.c.id))).all()
            ups = {r.node_id: r for r in (await conn.execute(sa.select(u).where(u.c.period == period))).all()}
            receipts, payouts, changed, skipped, total = [], defaultdict(int), [], 0, 0
            for r in nodes:
                if r.id in already:
                    skipped += 1
                    continue
                state = _uptime_state(ups.get(r.id), p)
                policy = policies.get(2 if r.certified else 1, minting.policy_for(r.certified))
                rw = minting.reward(resources=_res(r), certified=r.certified, state=state, period_seconds=p.seconds,
                                    policy=policy, connection_price_musd=r.connection_price)
                receipts.append(dict(node_id=r.id, period=period, uptime_permille=rw.uptime_permille,
                                     amount=rw.tft_units, reason=rw.reason))
                payouts[r.payout] += rw.tft_units
                total += rw.tft_units
                changed.append(r.name)
            if receipts:
                await conn.execute(m.insert(), receipts)
            paid_out = [dict(aid=k, delta=v) for k, v in payouts.items() if v]
            if paid_out:
                await conn.execute(a.update().where(a.c.id == sa.bindparam("aid"))
                                   .values(balance=a.c.balance + sa.bindparam("delta")), paid_out)
            await self._advance(conn, "mint", period)
            return records.PeriodReport(period, len(receipts), total, skipped, tuple(changed))

    # ------------------------------------------------------------------ DAO
    @staticmethod
    def _proposal_record(row: Any, votes: list[records.Vote], vetoes: int, created: bool = False) -> records.Proposal:
        return records.Proposal(row.id, row.key, json.loads(row.action), row.threshold, row.end_ts, row.state,
                                tuple(votes), vetoes, row.executed_at, created)

    @staticmethod
    def _votes_query() -> sa.Select[Any]:
        v, f = schema.votes, schema.farms
        return sa.select(v, f.c.name).join(f, f.c.id == v.c.farm_id).order_by(f.c.name)

    async def _proposal(self, conn: AsyncConnection, key: str, created: bool = False) -> records.Proposal:
        p, v, vt = schema.proposals, schema.votes, schema.vetoes
        row = (await conn.execute(sa.select(p).where(p.c.key == key))).first()
        if row is None:
            raise errors.NotFound(f"proposal {key!r} does not exist on the ledger")
        vs = (await conn.execute(self._votes_query().where(v.c.proposal_id == row.id))).all()
        nveto = (await conn.execute(sa.select(sa.func.count()).select_from(vt).where(vt.c.proposal_id == row.id))).scalar()
        return self._proposal_record(row, [records.Vote(x.name, x.approve, x.weight) for x in vs], int(nveto or 0),
                                     created)

    async def ensure_proposal(self, *, key: str, action: dict[str, object], threshold: int, end_ts: int) -> records.Proposal:
        p = schema.proposals
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(p.c.id).where(p.c.key == key))).first()
            if row is None:
                await conn.execute(p.insert().values(key=key, action=json.dumps(action, sort_keys=True),
                                                     threshold=threshold, end_ts=end_ts, state="Open"))
            return await self._proposal(conn, key, created=row is None)

    async def observe_proposal(self, *, key: str) -> records.Proposal | None:
        async with self._read() as conn:
            try:
                return await self._proposal(conn, key)
            except errors.NotFound:
                return None

    async def proposal_summaries(self) -> dict[str, records.Proposal]:
        """Every proposal with its votes, in three queries (the periodic loop closes and reports from this)."""
        p, vt = schema.proposals, schema.vetoes
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(p).order_by(p.c.id))).all()
            votes: dict[int, list[records.Vote]] = defaultdict(list)
            for x in (await conn.execute(self._votes_query())).all():
                votes[x.proposal_id].append(records.Vote(x.name, x.approve, x.weight))
            nveto = dict((await conn.execute(sa.select(vt.c.proposal_id, sa.func.count()).group_by(vt.c.proposal_id))).all())
        return {r.key: self._proposal_record(r, votes[r.id], int(nveto.get(r.id, 0))) for r in rows}

    async def cast_vote(self, *, proposal: str, farm: str, approve: bool, signature: str, now: int) -> records.Proposal:
        v, f, n = schema.votes, schema.farms, schema.nodes
        async with self._tx() as conn:
            prop = await self._proposal(conn, proposal)
            if prop.state != "Open" or now > prop.end_ts:
                raise errors.Replayed(f"proposal {proposal!r} is closed ({prop.state}); the vote of {farm!r} does not count")
            farm_row = (await conn.execute(sa.select(f).where(f.c.name == farm, f.c.state == "Active"))).first()
            if farm_row is None:
                raise errors.NotFound(f"farm {farm!r} is not registered on the ledger")
            try:
                identity.verify(farm_row.owner_key, identity.VOTE,
                                {"proposal": proposal, "farm": farm, "approve": approve}, signature)
            except identity.BadSignature as exc:
                raise errors.BadSignature(f"the vote of farm {farm!r} is not signed by the farm owner's key") from exc
            node_rows = (await conn.execute(sa.select(n).where(n.c.farm_id == farm_row.id, n.c.state == "Active"))).all()
            weight = voting.farm_weight(_res(r) for r in node_rows)  # §5: captured when the vote is cast
            if weight <= 0:
                raise errors.InvalidRequest(f"farm {farm!r} has no capacity and so no vote weight (FarmHasNoNodes)")
            prev = (await conn.execute(sa.select(v).where(v.c.proposal_id == prop.id, v.c.farm_id == farm_row.id))).first()
            if prev is not None and prev.approve == approve:
                raise errors.Replayed(f"farm {farm!r} already voted {'yes' if approve else 'no'} (DuplicateVote)")
            if prev is None:
                await conn.execute(v.insert().values(proposal_id=prop.id, farm_id=farm_row.id, approve=approve, weight=weight))
            else:
                await conn.execute(v.update().where(v.c.proposal_id == prop.id, v.c.farm_id == farm_row.id)
                                   .values(approve=approve, weight=weight))
            return await self._proposal(conn, proposal)

    async def veto(self, *, proposal: str, member_key: str) -> records.Proposal:
        vt, p = schema.vetoes, schema.proposals
        async with self._tx() as conn:
            prop = await self._proposal(conn, proposal)
            if prop.state != "Open":
                return prop
            exists = (await conn.execute(sa.select(vt).where(vt.c.proposal_id == prop.id, vt.c.member_key == member_key))).first()
            if exists is None:
                await conn.execute(vt.insert().values(proposal_id=prop.id, member_key=member_key))
            if prop.vetoes + (exists is None) >= voting.MIN_VETOES:
                await conn.execute(p.update().where(p.c.id == prop.id).values(state="Vetoed"))
            return await self._proposal(conn, proposal)

    async def close_proposal(self, *, proposal: str, now: int) -> records.Proposal:
        """At the deadline: Approved → the action is applied and the state is Executed, in one transaction."""
        p = schema.proposals
        async with self._tx() as conn:
            prop = await self._proposal(conn, proposal)
            if prop.state != "Open":
                return prop  # closed once; never re-executed
            result = voting.outcome(t=voting.tally({v.farm: v for v in prop.votes}), threshold=prop.threshold,
                                    vetoes=prop.vetoes,
                                    now=now, end=prop.end_ts)
            if result == voting.Outcome.OPEN:
                return prop
            if result == voting.Outcome.APPROVED:
                await self._apply_action(conn, prop.action)
                await conn.execute(p.update().where(p.c.id == prop.id).values(state="Executed", executed_at=now))
            else:
                await conn.execute(p.update().where(p.c.id == prop.id).values(state=str(result)))
            return await self._proposal(conn, proposal)

    async def _apply_action(self, conn: AsyncConnection, action: dict[str, Any]) -> None:
        kind = action.get("type")
        if kind == "SetPricingPolicy":
            current, _ = await self._policies(conn)
            merged = dataclasses.replace(current, **dict(action["pricing"]))
            await self._set_meta(conn, "pricing_policy", json.dumps(dataclasses.asdict(merged)))
        elif kind == "SetFarmingPolicy":
            _, farming = await self._policies(conn)
            pid = int(action["policyId"])
            base = farming.get(pid, minting.FarmingPolicy(id=pid, default=False))
            merged_f = dataclasses.replace(base, **dict(action["farming"]))
            await self._set_meta(conn, f"farming_policy:{pid}", json.dumps(dataclasses.asdict(merged_f)))
        else:
            raise errors.InvalidRequest(f"unknown proposal action {kind!r}")

