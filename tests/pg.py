"""Private PostgreSQL databases on the shared test server (the ledger tests, fault tests, benchmarks)."""

from __future__ import annotations

import os
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

PG_URL = os.environ.get("TFGRID_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def _admin(sql: str) -> None:
    engine = create_async_engine(PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1),
                                 isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(sql))
    await engine.dispose()


async def fresh_postgres() -> tuple[str, str]:
    """A private database per test on the shared server, so tests never see each other's rows."""
    name = f"tfgrid_t_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE {name}")
    return PG_URL.rsplit("/", 1)[0] + "/" + name, name


async def drop_postgres(name: str) -> None:
    await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
