"""Ledger benchmark: bill one period for 100,000 contracts and mint one period for 10,000 nodes.

Prints one JSON object: per engine, bill_<N>_contracts_s and mint_<M>_nodes_s named for the counts run
(bill_100000_contracts_s and mint_10000_nodes_s at scale 1), rerun_rows_changed (rows written by running
both periods again, which must be 0) and bill_<N>_contracts_next_hour_s (the next billing period, on a ledger that
holds the first hour's bills and whose contracts were billed once: an hour in the life of a running grid, where the
first hour bills freshly loaded rows). Temporary ledgers are removed. Not a pass/fail test.

Beside each wall time, the CPU seconds it took: ``…_cpu_s`` this process's (SQLite runs in it), and on
PostgreSQL ``…_db_cpu_s`` the server's for this ledger (read from /proc: a server on this machine). On a
machine others are using, the CPU seconds say what the work costs; the wall time what it took then.

    python benchmarks/ledger.py [--scale 0.1] [--engines sqlite,postgresql] [--gc operator|default]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import harness
from tfgrid_operator import backend
from tfgrid_operator.backend import schema
from tfgrid_operator.domain import identity, minting

PG = os.environ.get("TFGRID_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def seed(ledger: backend.SqlLedger, nodes: int, contracts: int) -> None:
    """Bulk-load farms, nodes, accounts, contracts and uptime rows directly (setup is not measured)."""
    key = identity.KeyPair.generate().public_key
    node_keys = [identity.KeyPair.generate().public_key for _ in range(nodes)]  # a node key is one node's (schema 6)
    async with ledger.engine.begin() as conn:
        await conn.execute(schema.accounts.insert(), [dict(name=f"payer{i}", balance=10**15) for i in range(100)])
        await conn.execute(schema.accounts.insert(), [dict(name=f"farmer{i}", balance=0) for i in range(50)])
        ids = {r.name: r.id for r in (await conn.execute(sa.select(schema.accounts))).all()}
        await conn.execute(schema.farms.insert(), [
            dict(name=f"farm{i}", owner_key=key, account_id=ids[f"farmer{i}"], certified=False, dedicated=False,
                 public_ips=1000, state="Active") for i in range(50)])
        await conn.execute(schema.nodes.insert(), [
            dict(name=f"node{i}", farm_id=1 + i % 50, cru=64, mru=512, sru=10000, hru=20000, country="BE", city="",
                 certified=i % 3 == 0, public_key=node_keys[i], connection_price=80, state="Active", created_at=0)
            for i in range(nodes)])
        await conn.execute(schema.capacity.insert(), [  # what each node's agent attested, from the period's start
            dict(node_id=1 + i, from_ts=0, cru=64, mru=512, sru=10000, hru=20000, certified=i % 3 == 0,
                 source="council" if i % 3 == 0 else "agent", signed_ts=0, signer=key) for i in range(nodes)])
        await conn.execute(schema.contracts.insert(), [
            dict(key=f"ns/d{i}", account_id=ids[f"payer{i % 100}"], node_id=1 + i % nodes, cru=1 + i % 4,
                 mru=2 + i % 8, sru=25 + i % 100, hru=0, public_ips=i % 2, dedicated=False, state="Created",
                 created_at=0, overdraft=0) for i in range(contracts)])
        await conn.execute(schema.uptime.insert(), [
            dict(node_id=1 + i, period=0, total=ledger.config.minting_period_s * (90 + i % 11) // 100, last_ts=1,
                 last_uptime=1, boot_ts=0, violation=None, reports=900) for i in range(nodes)])
    if not ledger.is_sqlite:  # the planner's statistics, as autovacuum keeps them on a ledger that grew to this size
        async with ledger.engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).exec_driver_sql("ANALYZE")


async def timed(ledger: backend.SqlLedger, name: str, work: Any) -> tuple[Any, dict[str, float]]:
    """Run ``work()`` and measure it: wall seconds, this process's CPU seconds and the server's."""
    before = await harness.server_cpu(ledger)
    t, cpu = time.perf_counter(), time.process_time()
    result = await work()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    figures = {f"{name}_s": round(wall, 3), f"{name}_cpu_s": round(cpu, 3)}
    if not ledger.is_sqlite:
        figures[f"{name}_db_cpu_s"] = round(await harness.server_cpu_since(ledger, before), 3)
    return result, figures


async def run_engine(engine: str, scale: float) -> dict[str, float | int]:
    contracts, nodes = int(100_000 * scale), int(10_000 * scale)
    config = backend.LedgerConfig(billing_period_s=3600, minting_epoch=0)
    cleanup = None
    if engine == "sqlite":
        tmp = tempfile.TemporaryDirectory(prefix="tfgrid-bench-")
        url = f"sqlite:///{tmp.name}/bench.db"

        async def cleanup() -> None:
            tmp.cleanup()
    else:
        name = f"tfgrid_bench_{uuid.uuid4().hex[:8]}"
        admin = create_async_engine(PG.replace("postgresql://", "postgresql+asyncpg://"), isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(sa.text(f"CREATE DATABASE {name}"))
        url = PG.rsplit("/", 1)[0] + "/" + name

        async def cleanup() -> None:
            async with admin.connect() as conn:
                await conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            await admin.dispose()
    ledger = await backend.SqlLedger.open(url, config)
    try:
        await seed(ledger, nodes, contracts)
        bill, billed = await timed(ledger, f"bill_{contracts}_contracts", lambda: ledger.bill_period(period=0, now=3600))
        mint, minted = await timed(ledger, f"mint_{nodes}_nodes",
                                   lambda: ledger.mint_period(period=0, now=config.minting_period_s))
        rebill = await ledger.bill_period(period=0, now=7200)
        remint = await ledger.mint_period(period=0, now=config.minting_period_s + 1)
        # the hour after: its contracts were billed an hour ago (their rows updated once), that hour's bills are there
        after, billed_after = await timed(ledger, f"bill_{contracts}_contracts_next_hour",
                                          lambda: ledger.bill_period(period=1, now=7200))
        assert bill.rows_written == contracts and mint.rows_written == nodes and after.rows_written == contracts
        assert config.minting_period_s == minting.PERIOD_SECONDS
        return {**billed, **minted, **billed_after, "rerun_rows_changed": rebill.rows_written + remint.rows_written,
                "contracts": contracts, "nodes": nodes}
    finally:
        await ledger.close()
        if cleanup:
            await cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the sizes (0.1 = a quick look)")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--gc", choices=("operator", "default"), default="operator",
                        help="the garbage collector as `run` sets it (cli/operate.tune_gc), or Python's default")
    args = parser.parse_args()
    if args.gc == "operator":  # the ledger's periods run in the operator's process, with its collector settings
        from tfgrid_operator.cli.operate import tune_gc

        tune_gc()
    out = {engine: await run_engine(engine, args.scale) for engine in args.engines.split(",")}
    print(json.dumps({**out, "gc": args.gc}, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
