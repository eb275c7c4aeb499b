"""PostgreSQL connections (issue 17): a read is its statements alone — no ping, BEGIN or ROLLBACK round trips, each a
turn of an event loop that a restart keeps busy — and a connection the server closed is replaced without a failure,
or, where its end was not seen before use, fails that one call and none after it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from pg import _admin
from polling import eventually
from tfgrid_operator import backend
from tfgrid_operator.backend import errors, records
from tfgrid_operator.backend.sql import engine as engine_module
from tfgrid_operator.domain import identity

pytestmark = pytest.mark.postgres
OWNER = identity.KeyPair.generate()


@pytest.fixture
def ledger_url(ledger_url):  # the shared fixture, PostgreSQL only
    if ledger_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's connections")
    return ledger_url


async def round_trips(ledger) -> list[bytes]:
    """What the ledger's connections send from now on, one entry per write to the server's socket: a round trip each
    (a simple query, a prepare, a prepared statement's execution)."""
    sent: list[bytes] = []
    await ledger.engine.dispose()  # connections made from here on are counted

    def count(dbapi_connection, record) -> None:
        transport = record.driver_connection._transport
        write = transport.write

        def counted(data) -> None:
            sent.append(bytes(data))
            write(data)
        transport.write = counted
    event.listen(ledger.engine.sync_engine, "connect", count)
    return sent


async def connections(ledger) -> list[object]:
    """The asyncpg connections the ledger makes from now on."""
    made: list[object] = []
    await ledger.engine.dispose()
    event.listen(ledger.engine.sync_engine, "connect", lambda _dbapi, record: made.append(record.driver_connection))
    return made


async def server_ends(ledger, made: list[object]) -> None:
    """The server ends this ledger's connections (as its restart or an administrator's pg_terminate_backend does);
    returns once the client has seen them closed."""
    assert len(made) >= 2
    await _admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 f"WHERE datname = '{ledger.engine.url.database}'")
    await eventually(lambda: all(c.is_closed() for c in made))


async def test_a_read_is_its_statements_alone(ledger):
    await ledger.ensure_farm(name="f", owner=records.Owner(namespace="a", uid="uid-a"), owner_key=OWNER.public_key,
                             payout_account="pay", certified=False, dedicated=False, public_ips=0)
    sent = await round_trips(ledger)
    farm = await ledger.observe_farm(name="f")  # a new connection: the statement is prepared, then executed
    assert farm is not None and farm.name == "f"
    assert len(sent) == 2 and not any(b"BEGIN" in m or b"ROLLBACK" in m for m in sent), sent
    sent.clear()
    await ledger.observe_farm(name="f")  # the pooled connection, the statement prepared: one round trip
    assert len(sent) == 1, sent


async def test_a_connection_the_server_closed_is_replaced_before_use(ledger):
    await ledger.ensure_account(name="alice", public_key=OWNER.public_key)
    made = await connections(ledger)
    await asyncio.gather(*(ledger.get_account(name="alice") for _ in range(3)))  # a few connections in the pool
    await server_ends(ledger, made)
    assert (await ledger.get_account(name="alice")).name == "alice"  # a read
    await server_ends(ledger, made)
    await ledger.fund(name="alice", amount=5, now=0)  # a write
    assert (await ledger.get_account(name="alice")).balance == 5


async def test_a_connection_closed_unseen_fails_one_call_and_none_after(ledger, monkeypatch):
    """Where the client had not yet read the connection's end when it took it (the check finds it open), that call
    is refused as unavailable (its reconcile retries); SQLAlchemy then replaces every connection made before."""
    await ledger.ensure_account(name="alice", public_key=OWNER.public_key)
    made = await connections(ledger)
    await asyncio.gather(*(ledger.get_account(name="alice") for _ in range(3)))
    await server_ends(ledger, made)
    event.remove(ledger.engine.sync_engine, "checkout", engine_module._replace_closed)
    with pytest.raises(errors.Unavailable, match="the ledger is unavailable"):
        await ledger.get_account(name="alice")
    for _ in range(3):
        assert (await ledger.get_account(name="alice")).name == "alice"


async def test_reads_see_each_statement_committed_writes(ledger):
    """Autocommit reads are READ COMMITTED as before: a read after a write (of this process or another) sees it."""
    await ledger.ensure_account(name="alice", public_key=OWNER.public_key)
    await ledger.fund(name="alice", amount=7, now=0)
    assert (await ledger.get_account(name="alice")).balance == 7
    await _admin_update(ledger, "UPDATE accounts SET balance = 9 WHERE name = 'alice'")
    assert (await ledger.get_account(name="alice")).balance == 9


async def _admin_update(ledger, sql: str) -> None:
    async with ledger.engine.begin() as conn:
        await conn.execute(sa.text(sql))


async def _holding_the_lock(ledger_url: str) -> asyncpg.Connection:
    """Another session takes the ledger's write lock and keeps it (a stuck process, a psql left in a transaction)."""
    holder = await asyncpg.connect(ledger_url)
    await holder.execute(f"SELECT pg_advisory_lock({engine_module.ADVISORY_LOCK_ID})")  # until the session ends
    return holder


async def test_a_session_that_keeps_the_ledgers_lock_fails_each_write_as_unavailable_not_for_good(ledger_url, monkeypatch):
    """A writer waits for the lock at most LOCK_TIMEOUT_S, then fails as unavailable (its reconcile is retried)
    instead of holding every writer of the process behind it; reads take no lock and go on; once the lock is free,
    the ledger goes on with nothing lost."""
    monkeypatch.setattr(engine_module, "LOCK_TIMEOUT_S", 0.5)
    ledger = await backend.open_backend(ledger_url, backend.LedgerConfig())
    try:
        await ledger.ensure_account(name="alice", public_key=OWNER.public_key)
        holder = await _holding_the_lock(ledger_url)
        with pytest.raises(errors.Unavailable, match=r"the ledger is unavailable: .*lock timeout"):
            await ledger.fund(name="alice", amount=5, now=0)
        assert (await ledger.get_account(name="alice")).balance == 0
        await holder.close()  # the lock ends with its session
        await ledger.fund(name="alice", amount=5, now=0)
        assert (await ledger.get_account(name="alice")).balance == 5
        async with ledger.engine.connect() as conn:  # a bound on waiting, not on work: a longer statement runs on
            await conn.exec_driver_sql("SELECT pg_sleep(1)")
    finally:
        await ledger.close()


async def test_the_default_lock_bound_and_the_urls_command_timeout_on_every_statement(ledger, ledger_url):
    """By default a minute's wait for a lock and no bound on work; a command_timeout in the URL bounds every statement
    (a server that stopped answering), said as such."""
    async with ledger.engine.connect() as conn:  # set as each connection is made (a pooler refuses them at startup)
        assert (await conn.exec_driver_sql("SHOW lock_timeout")).scalar() == "1min"
        assert (await conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout")).scalar() == "5min"
    made = await connections(ledger)
    await ledger.observe_farm(name="nobody")
    assert [c._config.command_timeout for c in made] == [None]  # no bound on work by default
    bounded = await backend.open_backend(ledger_url + "?command_timeout=0.5", backend.LedgerConfig())
    holder = await _holding_the_lock(ledger_url)
    try:
        said = r"did not answer in time \(connecting, or within the ledger URL's command_timeout\)"
        with pytest.raises(errors.Unavailable, match=said):
            await bounded.fund(name="alice", amount=5, now=0)
    finally:
        await holder.close()
        await bounded.close()
