"""`run` sets the garbage collector up for a long-lived process (cli/operate.tune_gc): what is imported is frozen
out of the collector's sight, and the first threshold is raised."""

from __future__ import annotations

import gc

from tfgrid_operator.cli import operate


def test_tune_gc_freezes_what_is_imported_and_raises_the_thresholds():
    before = gc.get_threshold()
    try:
        operate.tune_gc()
        assert gc.get_threshold() == operate.GC_THRESHOLDS
        assert gc.get_freeze_count() > 10_000  # the modules imported so far, kopf's among them
        made = [[i] for i in range(10)]
        assert all(gc.is_tracked(x) for x in made)  # what is made after it is still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
