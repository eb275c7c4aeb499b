"""The command line: run the operator, inspect and fund the ledger, run a node agent, make keys.

    python -m tfgrid_operator --help

One module per group of commands; importing them registers them on ``main``.
"""

from __future__ import annotations

from tfgrid_operator.cli import grid_cmds, keys, ledger_cmds, mints_cmds, operate, sandbox_cmd
from tfgrid_operator.cli.app import main
from tfgrid_operator.cli.operate import cluster_reachable, configure_logging, peering_priority

__all__ = ["cluster_reachable", "configure_logging", "grid_cmds", "keys", "ledger_cmds", "main", "mints_cmds", "operate",
           "peering_priority", "sandbox_cmd"]
