"""The batched loop: one task for all objects, never a timer per object.

Each tick: mint every minting period that has ended (plus the settle time), bill every billing period that has
ended, close proposals past their deadline and contracts nothing proves any more, move deployments off nodes that
went down (jobs.py), then refresh the status of every Farm, Node, Deployment and Proposal from a handful of ledger
queries, patching only the objects whose status changed (refresh.py), and ask kopf again for the objects whose
report was lost or that wait on the world (requeue.py). Periods are processed from the ledger's watermark, so a
restart neither skips nor repeats one.

Its public surface, for the handlers: ``run_forever`` (started by the startup handler), ``stop`` (the cleanup's)
and ``status``, the pure projections ledger record → status that the handlers write too. Everything else is the
loop's own (an import-linter contract keeps the handlers out of it).
"""

from __future__ import annotations

from tfgrid_operator.loop import status
from tfgrid_operator.loop.runner import run_forever, stop, tick

__all__ = ["run_forever", "status", "stop", "tick"]
