"""The placement pool a batch leaves is the next batch's (issue 17): the same nodes a fresh read would give, never
kept across a write that could change them (in this process or another one sharing the ledger), and an uptime
report moves only when its node was last seen. Both engines."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid

import pytest
import sqlalchemy as sa

import ledger_setup
from polling import eventually
from tfgrid_operator import backend
from tfgrid_operator.backend import errors
from tfgrid_operator.backend.sql import contracts as contracts_module
from tfgrid_operator.backend.sql.engine import POOL_TOKEN
from tfgrid_operator.domain import identity, scheduling
from tfgrid_operator.domain.units import Resources

OWNER = identity.KeyPair.generate()
NODE_KEYS = [identity.KeyPair.generate() for _ in range(4)]
ALICE = identity.KeyPair.generate()
NODE = Resources(cru=8, mru=32, sru=1000, hru=4000)
SMALL = scheduling.Request(resources=Resources(cru=4, mru=8, sru=100))


async def grid(ledger, nodes: int = 3, ips: int = 3) -> None:
    for i in range(nodes):
        await ledger_setup.farm_and_node(ledger, owner_key=OWNER, node_key=NODE_KEYS[i], resources=NODE,
                                         farm=f"farm{i % 2}", node=f"n{i}", public_ips=ips)
        await ledger_setup.attest(ledger, node=f"n{i}", resources=NODE, ts=0, key=NODE_KEYS[i])
    await ledger.ensure_account(name="alice", public_key=ALICE.public_key)
    await ledger.fund(name="alice", amount=10**15, now=0)


def counted_reads(ledger, monkeypatch) -> list[int]:
    """How often the pool is read from the ledger (the query of every node with what its contracts use)."""
    reads: list[int] = []
    original = ledger._candidates

    async def candidates(conn, now, **kwargs):
        if kwargs.get("request") is None:
            reads.append(now)
        return await original(conn, now, **kwargs)
    monkeypatch.setattr(ledger, "_candidates", candidates)
    return reads


async def fresh(ledger, now: int) -> dict[str, scheduling.Candidate]:
    """The nodes as the ledger has them now (read past counted_reads' count)."""
    async with ledger._read() as conn:
        return {c.name: c for c in await type(ledger)._candidates(ledger, conn, now)}


async def test_the_pool_a_batch_leaves_is_what_a_fresh_read_gives(ledger, monkeypatch):
    """Batches of plain requests, requests with public IPs (a farm's IPs are shared by its nodes), dedicated ones
    and refused ones, one after another: after each, the kept pool equals the ledger read afresh, and only the
    first batch read it."""
    await grid(ledger)
    reads = counted_reads(ledger, monkeypatch)
    rng = random.Random(17)
    shapes = [SMALL, scheduling.Request(resources=Resources(cru=1, mru=2, sru=20), public_ips=1),
              scheduling.Request(resources=Resources(cru=1, mru=1, sru=10), dedicated=True),
              scheduling.Request(resources=Resources(cru=2, mru=2, sru=50), farm="farm1"),
              scheduling.Request(resources=Resources(cru=64))]  # never fits
    made = 0
    for batch in range(12):
        requests = [rng.choice(shapes) for _ in range(rng.randint(1, 5))]
        answers = await asyncio.gather(*(
            ledger.open_contract(key=f"ns/d{made + i}", **ledger_setup.paid_by(ALICE), request=r, now=10 + batch)
            for i, r in enumerate(requests)), return_exceptions=True)
        assert all(isinstance(a, errors.NoCapacity) or a.created for a in answers)
        made += len(requests)
        assert ledger._pool is not None and ledger._pool.candidates == await fresh(ledger, 10 + batch)
    assert len(reads) == 1


async def test_a_write_in_another_process_is_seen_by_the_next_batch(ledger_url):
    """Two operators on one ledger: what one places, the other's next batch sees (no node is overbooked from a kept
    pool); what one closes, the other can place on again."""
    config = backend.LedgerConfig(minting_epoch=0, node_down_after_s=10**9)
    a, b = await backend.open_backend(ledger_url, config), await backend.open_backend(ledger_url, config)
    try:
        await grid(a, nodes=1)
        first = await a.open_contract(key="ns/a1", **ledger_setup.paid_by(ALICE), request=SMALL, now=10)
        assert a._pool is not None  # kept: the node has room for one more
        await b.open_contract(key="ns/b1", **ledger_setup.paid_by(ALICE), request=SMALL, now=11)
        with pytest.raises(errors.NoCapacity):  # the node is full: b's placement replaced the token
            await a.open_contract(key="ns/a2", **ledger_setup.paid_by(ALICE), request=SMALL, now=12)
        await b.close_contract(key="ns/b1", owner_uid=ledger_setup.OWN.uid, now=13, reason="CanceledByUser")
        again = await a.open_contract(key="ns/a2", **ledger_setup.paid_by(ALICE), request=SMALL, now=14)
        assert again.node == first.node == "n0"
    finally:
        await a.close()
        await b.close()


async def test_a_write_in_this_process_makes_the_next_batch_read_the_pool(ledger, monkeypatch):
    """A close (any write of what placement reads) replaces the token: the next batch reads the ledger."""
    await grid(ledger, nodes=1)
    reads = counted_reads(ledger, monkeypatch)
    for i in range(2):
        await ledger.open_contract(key=f"ns/d{i}", **ledger_setup.paid_by(ALICE), request=SMALL, now=10)
    with pytest.raises(errors.NoCapacity):
        await ledger.open_contract(key="ns/d2", **ledger_setup.paid_by(ALICE), request=SMALL, now=10)
    assert len(reads) == 1
    await ledger.close_contract(key="ns/d0", owner_uid=ledger_setup.OWN.uid, now=11, reason="CanceledByUser")
    placed = await ledger.open_contract(key="ns/d2", **ledger_setup.paid_by(ALICE), request=SMALL, now=12)
    assert placed.node == "n0" and len(reads) == 2


@pytest.mark.parametrize("write", [
    "UPDATE nodes SET cru = 4",  # the node shrank
    "UPDATE farms SET public_ips = 0",  # the farm has no IPs left
    "UPDATE contracts SET state = 'Deleted'",  # closed by hand: room again
    "INSERT INTO capacity (node_id, from_ts, cru, mru, sru, hru, certified, source, signed_ts, signer) "
    "SELECT id, 1, 1, 1, 1, 1, false, 'agent', 1, 'x' FROM nodes",  # attested smaller
])
async def test_a_write_the_operator_did_not_make_is_seen_by_the_next_batch(ledger, monkeypatch, write):
    """Triggers replace the token whoever writes: an operator of an older version during a rolling upgrade, or SQL by
    hand. The kept pool is not used after such a write."""
    await grid(ledger, nodes=1)
    await ledger.open_contract(key="ns/d0", **ledger_setup.paid_by(ALICE), request=SMALL, now=10)
    reads = counted_reads(ledger, monkeypatch)
    token = ledger._pool.token
    async with ledger.engine.begin() as conn:
        await conn.exec_driver_sql(write)
    request = scheduling.Request(resources=Resources(cru=1, mru=1, sru=10), public_ips=1)
    with contextlib.suppress(errors.NoCapacity):  # whether it still fits depends on the write
        await ledger.open_contract(key="ns/d1", **ledger_setup.paid_by(ALICE), request=request, now=11)
    assert len(reads) == 1 and ledger._pool.token != token
    assert ledger._pool.candidates == await fresh(ledger, 11)


async def test_billing_an_hour_leaves_the_pool_as_it_was(ledger):
    """The hourly update of every contract's totals writes none of the columns placement reads: the token stays."""
    await grid(ledger, nodes=1)
    await ledger.open_contract(key="ns/d0", **ledger_setup.paid_by(ALICE), request=SMALL, now=10)
    token = ledger._pool.token
    assert (await ledger.bill_period(period=0, now=3600)).rows_written
    async with ledger._read() as conn:
        assert await ledger._meta(conn, POOL_TOKEN) == token


async def test_an_uptime_report_keeps_the_pool_and_brings_its_node_up(ledger_url, monkeypatch):
    """Nodes go down as time passes without reports, in the kept pool as in the ledger; a report counted in this
    process brings its node up in the kept pool without a read; the token stays (nothing else changed)."""
    config = backend.LedgerConfig(minting_epoch=0, node_down_after_s=600)
    ledger = await backend.open_backend(ledger_url, config)
    try:
        await grid(ledger, nodes=2)
        reads = counted_reads(ledger, monkeypatch)
        await ledger.open_contract(key="ns/d0", **ledger_setup.paid_by(ALICE), request=SMALL, now=100)
        with pytest.raises(errors.NoCapacity) as down:
            await ledger.open_contract(key="ns/d1", **ledger_setup.paid_by(ALICE), request=SMALL, now=2000)
        assert down.value.constraint == "Up"
        token = ledger._pool.token
        await ledger_setup.report_uptime(ledger, node="n1", ts=2000, uptime=2000, key=NODE_KEYS[1])
        async with ledger._read() as conn:
            assert await ledger._meta(conn, POOL_TOKEN) == token  # a report changes nothing the pool reads
        placed = await ledger.open_contract(key="ns/d1", **ledger_setup.paid_by(ALICE), request=SMALL, now=2010)
        assert placed.node == "n1" and len(reads) == 1
        assert ledger._pool.candidates == await fresh(ledger, 2010)
    finally:
        await ledger.close()


async def test_a_kept_pool_is_read_again_when_it_is_old(ledger, monkeypatch):
    await grid(ledger, nodes=1)
    reads = counted_reads(ledger, monkeypatch)
    monkeypatch.setattr(contracts_module, "POOL_MAX_AGE_S", 0.0)
    for i in range(3):
        await ledger.open_contract(key=f"ns/d{i}", **ledger_setup.paid_by(ALICE),
                                   request=scheduling.Request(resources=Resources(cru=1, mru=1, sru=10)), now=10)
    assert len(reads) == 3


async def analyzed(ledger) -> dict[str, bool]:
    """Whether each of the pool's tables was analyzed by ANALYZE (autovacuum's own analyze is told apart)."""
    async with ledger._read() as conn:
        rows = (await conn.execute(sa.text(
            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE schemaname = current_schema() "
            "AND relname IN ('nodes', 'farms', 'contracts', 'capacity')"))).all()
    return dict(rows)


async def test_the_pool_read_gives_the_planner_statistics_of_its_tables(ledger):
    """PostgreSQL: the pool's read analyzes its tables first where they were never analyzed, or changed much since
    (without statistics the planner aggregated every node's contracts once per node: seconds at grid size); an
    unchanged table is not analyzed again, and the pool is the same with or without."""
    if ledger.is_sqlite:
        pytest.skip("PostgreSQL's planner statistics")
    await grid(ledger)
    assert not any((await analyzed(ledger)).values())  # nothing ran ANALYZE (autovacuum's would not count)
    placed = await ledger.open_contract(key="ns/d0", **ledger_setup.paid_by(ALICE), request=SMALL, now=10)
    assert placed.node in {"n0", "n1", "n2"}
    assert await analyzed(ledger) == {"nodes": True, "farms": True, "contracts": True, "capacity": True}
    assert ledger._pool is not None and ledger._pool.candidates == await fresh(ledger, 10)  # the same pool
    async with ledger._read() as conn:
        before = (await conn.execute(sa.text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'nodes'"))).scalar()
    ledger._pool = None  # read again: nothing changed much since, so nothing is analyzed again
    await ledger.open_contract(key="ns/d1", **ledger_setup.paid_by(ALICE), request=SMALL, now=11)
    async with ledger._read() as conn:
        after = (await conn.execute(sa.text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'nodes'"))).scalar()
    assert after == before


async def test_a_ledger_role_that_may_not_analyze_still_places(ledger_url):
    """PostgreSQL: a ledger whose role does not own the tables (a DBA made them, and granted this role its rows) may
    not ANALYZE them: PostgreSQL skips them with a warning, and placement goes on as before."""
    if ledger_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's planner statistics")
    config = backend.LedgerConfig(billing_period_s=3600, minting_epoch=0)
    owner = await backend.open_backend(ledger_url, config)  # made by the owner (the test server's superuser)
    await grid(owner)
    role = f"tfgrid_rows_{uuid.uuid4().hex[:8]}"
    async with owner.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        await auto.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"))
        await auto.execute(sa.text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    await owner.close()
    scheme, rest = ledger_url.split("://", 1)
    ledger = await backend.open_backend(f"{scheme}://{role}@{rest.split('@', 1)[1]}", config)
    try:
        placed = await ledger.open_contract(key="ns/d0", **ledger_setup.paid_by(ALICE), request=SMALL, now=10)
        assert placed.node in {"n0", "n1", "n2"}
        assert not any((await analyzed(ledger)).values())  # skipped, not failed
    finally:
        await ledger.close()
        admin = await backend.open_backend(ledger_url, config)
        async with admin.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.text(f"DROP OWNED BY {role}"))
            await auto.execute(sa.text(f"DROP ROLE {role}"))
        await admin.close()


async def test_a_table_another_session_holds_is_not_waited_for(ledger):
    """PostgreSQL: a table another session holds against ANALYZE (a VACUUM, say) is skipped, never waited for with
    the write lock held: the placement goes on and the other tables are analyzed; the next read analyzes it."""
    if ledger.is_sqlite:
        pytest.skip("PostgreSQL's planner statistics")
    await grid(ledger)
    async with ledger.engine.connect() as holder:
        await holder.execute(sa.text("LOCK TABLE contracts IN SHARE UPDATE EXCLUSIVE MODE"))  # as VACUUM holds it
        started = time.monotonic()
        placed = await ledger.open_contract(key="ns/d0", **ledger_setup.paid_by(ALICE), request=SMALL, now=10)
        assert placed.node in {"n0", "n1", "n2"} and time.monotonic() - started < 5
        await holder.rollback()
    assert await analyzed(ledger) == {"nodes": True, "farms": True, "contracts": False, "capacity": True}
    async with ledger._tx() as conn:
        await ledger._planner_statistics(conn, ("contracts",))
    assert (await analyzed(ledger))["contracts"]


async def test_a_table_is_analyzed_again_only_when_its_row_count_moves_past_a_tenth(ledger):
    """PostgreSQL: a table is analyzed again once rows were added or removed past 50 + 10 % of the rows its statistics
    counted (autovacuum's numbers); fewer leave it as it is, and so do rows changed in place, however many (a billing
    period updates every live contract: that analyzed them in the first placement after it, with the lock held)."""
    if ledger.is_sqlite:
        pytest.skip("PostgreSQL's planner statistics")
    async with ledger._tx() as conn:  # the server's own autovacuum (on by default) would reset the counts midway
        await conn.execute(sa.text("ALTER TABLE accounts SET (autovacuum_enabled = off)"))

    async def stats() -> tuple[int, int, int]:
        async with ledger._read() as conn:
            row = (await conn.execute(sa.text("SELECT analyze_count, n_live_tup, n_mod_since_analyze "
                                              "FROM pg_stat_user_tables WHERE relname = 'accounts'"))).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def wrote(sql: str, until) -> None:  # the server counts a transaction's rows a moment after it ends
        async with ledger._tx() as conn:
            await conn.execute(sa.text(sql))
        await eventually(lambda: _stats_reached(stats, until), what=f"the statistics after {sql!r}")

    async def refreshed() -> int:
        async with ledger._tx() as conn:
            await ledger._planner_statistics(conn, ("accounts",))
        return (await stats())[0]

    before = (await stats())[1]
    await wrote("INSERT INTO accounts (name, balance) SELECT 'a' || g, 0 FROM generate_series(1, 2000) g",
                lambda live, _mod: live >= before + 2000)
    analyzed_once = await refreshed()
    assert analyzed_once >= 1 and (await stats())[2] == 0
    rows = (await stats())[1]
    await wrote("UPDATE accounts SET balance = balance + 1", lambda _live, mod: mod >= rows)  # every row, in place
    assert await refreshed() == analyzed_once
    await wrote("INSERT INTO accounts (name, balance) SELECT 'b' || g, 0 FROM generate_series(1, 150) g",
                lambda live, _mod: live >= rows + 150)  # under 50 + 10 %
    assert await refreshed() == analyzed_once
    await wrote("INSERT INTO accounts (name, balance) SELECT 'c' || g, 0 FROM generate_series(1, 150) g",
                lambda live, _mod: live >= rows + 300)  # past it
    assert await refreshed() == analyzed_once + 1
    await wrote("DELETE FROM accounts WHERE id IN (SELECT id FROM accounts WHERE name LIKE 'a%' ORDER BY id LIMIT 400)",
                lambda live, _mod: live <= rows + 300 - 400)  # rows removed count too
    assert await refreshed() == analyzed_once + 2


async def _stats_reached(stats, until) -> bool:
    _, live, mod = await stats()
    return bool(until(live, mod))


async def test_statistics_rolled_back_with_their_transaction_are_taken_again(ledger):
    """PostgreSQL: an ANALYZE in a placement transaction that rolls back leaves the server's record of the analyze and
    its row count, not the statistics; the next read finds the table without statistics and analyzes it again
    (else, with autovacuum off, the planner would take the nodes for a handful of rows for good)."""
    if ledger.is_sqlite:
        pytest.skip("PostgreSQL's planner statistics")
    await grid(ledger)

    async def nodes_stats() -> tuple[int, int]:
        async with ledger._read() as conn:
            count = (await conn.execute(sa.text(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'nodes'"))).scalar_one()
            kept = (await conn.execute(sa.text("SELECT count(*) FROM pg_stats WHERE tablename = 'nodes'"))).scalar_one()
        return int(count), int(kept)

    with pytest.raises(RuntimeError):
        async with ledger._tx() as conn:
            await ledger._planner_statistics(conn, ("nodes",))
            raise RuntimeError("the placement failed after the analyze")
    analyzed, kept = await nodes_stats()
    assert analyzed >= 1 and kept == 0  # the server's record stands, the statistics went with the transaction
    async with ledger._tx() as conn:
        await ledger._planner_statistics(conn, ("nodes",))
    again, kept = await nodes_stats()
    assert again == analyzed + 1 and kept > 0

