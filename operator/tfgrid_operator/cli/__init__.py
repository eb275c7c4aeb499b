"""The command line: run the operator, inspect and fund the ledger, run a node agent, make keys.

    python -m tfgrid_operator --help

One module per group of commands; importing them registers them on ``main``.
"""

from __future__ import annotations

from tfgrid_operator.cli import (
           bills_cmds,
           grants,
           grid_cmds,
           keys,
           ledger_cmds,
           mints_cmds,
           operate,
           quickstart,
           quote_cmd,
           sandbox_cmd,
)
from tfgrid_operator.cli.app import main
from tfgrid_operator.cli.operate import configure_logging, peering_priority, wait_for_cluster

__all__ = ["bills_cmds", "configure_logging", "grants", "grid_cmds", "keys", "ledger_cmds", "main", "mints_cmds", "operate",
           "peering_priority", "quickstart", "quote_cmd", "sandbox_cmd", "wait_for_cluster"]
