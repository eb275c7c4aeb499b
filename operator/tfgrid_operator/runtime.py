"""What the handlers share: the ledger, the clock, settings, the object registry. Set up at startup."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from tfgrid_operator import metrics as metrics_mod
from tfgrid_operator.backend import GridBackend
from tfgrid_operator.clock import Clock
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.settings import Settings

GROUP, VERSION = "grid.threefold.io", "v1alpha1"
PREFIX = "grid.threefold.io"
# the loop touches this annotation to have kopf run an object's reconcile again (a lost write, a wait on the world).
# Not under PREFIX/: kopf drops every annotation under its storages' prefix from what it diffs, so a change there
# would never reach a handler.
REQUEUE_ANNOTATION = f"reconcile.{PREFIX}/requested-at"


@dataclasses.dataclass
class Runtime:
    settings: Settings
    clock: Clock
    ledger: GridBackend
    kube: KubeClient
    metrics: metrics_mod.Metrics
    retry_delay_s: float = 5.0
    # set to run the batched loop's next tick now instead of after settings.tick_s (the sandbox does)
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # (plural, namespace, name) → when (monotonic) the loop first saw its spec unobserved by any reconcile
    unobserved_since: dict[tuple[str, str, str], float] = dataclasses.field(default_factory=dict)
    # (plural, namespace, name) → the generation a reconcile handler last ran for (whatever its outcome)
    handled: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    last_reconcile: float = 0.0  # when (monotonic) a reconcile handler last finished
    # (plural, namespace, name) → (when (monotonic) to requeue it, the wait after that): objects waiting on the world
    requeue_at: dict[tuple[str, str, str], tuple[float, float]] = dataclasses.field(default_factory=dict)
    # (plural, namespace, name) → grid time its status was last written (uptime counters are throttled)
    counters_written: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    # (plural, namespace, name) → what the loop last compared a Deployment's status from (the status dict itself,
    # the contract, generation, pricing policy): when all are the same, the comparison is skipped
    refreshed: dict[tuple[str, str, str], tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    # (plural, namespace, name) → the latest body seen on the watch (metadata, spec, status)
    objects: dict[tuple[str, str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)


_current: Runtime | None = None
_factory: Any = None  # tests and the sandbox set this to build the Runtime their own way


def set_factory(factory: Any) -> None:
    global _factory
    _factory = factory


def get() -> Runtime:
    if _current is None:
        raise RuntimeError("the operator runtime is not started")
    return _current


def set_current(rt: Runtime | None) -> None:
    global _current
    _current = rt
