"""SqlLedger: the one GridBackend implementation, on SQLite (aiosqlite) and PostgreSQL (asyncpg).

Why SQLAlchemy Core: one schema and one set of statements for both engines, async drivers for both,
dialect differences (locking, URL forms) confined to ``engine.py``, and no ORM between us and the rows
money lives in. One module per area, stacked: engine → registry → billing → contracts → minting → dao, and capacity beside them.
"""

from __future__ import annotations

from tfgrid_operator.backend.sql.capacity import CapacityLedger
from tfgrid_operator.backend.sql.dao import DaoLedger
from tfgrid_operator.backend.sql.engine import ADVISORY_LOCK_ID, LIVE, POOL_SIZE, POOL_TIMEOUT_S


class SqlLedger(DaoLedger, CapacityLedger):
    """Every area of the ledger on one engine (see the modules of this package)."""


__all__ = ["ADVISORY_LOCK_ID", "LIVE", "POOL_SIZE", "POOL_TIMEOUT_S", "SqlLedger"]
