"""Shared fixtures: ledgers on both engines, and the guard that the stdlib `operator` is the real one."""

from __future__ import annotations

import pytest

from pg import PG_URL, drop_postgres, fresh_postgres  # noqa: F401
from tfgrid_operator import backend


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url, name = await fresh_postgres()
        yield url
        await drop_postgres(name)


@pytest.fixture
async def ledger(ledger_url):
    config = backend.LedgerConfig(
        billing_period_s=3600, minting_epoch=0, minting_period_s=6 * 3600, grace_period_s=3 * 3600,
    )
    lg = await backend.open_backend(ledger_url, config)
    yield lg
    await lg.close()

