"""The only kopf-decorated code. `kopf run -m tfgrid_operator.handlers` loads every kind."""

from tfgrid_operator.handlers import deployments, farms, leases, nodes, proposals, startup

__all__ = ["deployments", "farms", "leases", "nodes", "proposals", "startup"]
