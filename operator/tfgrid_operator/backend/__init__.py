"""The grid backend: the ledger of record behind a narrow interface. ``open_backend(url)`` builds one."""

from __future__ import annotations

from tfgrid_operator.backend.config import LedgerConfig
from tfgrid_operator.backend.protocol import GridBackend
from tfgrid_operator.backend.sql import SqlLedger


async def open_backend(url: str, config: LedgerConfig | None = None) -> GridBackend:
    """``sqlite:///path.db`` (created on first use), ``sqlite://`` in memory, or ``postgresql://...``."""
    return await SqlLedger.open(url, config or LedgerConfig())


__all__ = ["GridBackend", "LedgerConfig", "SqlLedger", "open_backend"]
