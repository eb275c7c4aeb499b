"""What the handlers and the loop share: the ledger, the clock, settings, the object registry, the loop's
bookkeeping. One Runtime per operator: its startup handler builds it and keeps it in kopf's memo, where every
handler finds it (``of(memo)``); nothing holds it in a module global."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

from tfgrid_operator import metrics as metrics_mod
from tfgrid_operator.api.common import GROUP as GROUP  # one home: the API's group and version
from tfgrid_operator.api.common import VERSION as VERSION
from tfgrid_operator.backend import GridBackend
from tfgrid_operator.clock import Clock
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.kube.secrets import SecretView
from tfgrid_operator.settings import Settings

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
    # (plural, namespace, name) → how many of its reconcile handlers are running now: the loop leaves it alone
    busy: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    last_reconcile: float = 0.0  # when (monotonic) a reconcile handler last finished
    # (plural, namespace, name) → (when (monotonic) to requeue it, the wait after that): objects waiting on the world
    requeue_at: dict[tuple[str, str, str], tuple[float, float]] = dataclasses.field(default_factory=dict)
    # (plural, namespace, name) → grid time its counters were last written for themselves (they are throttled)
    counters_written: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    # (plural, namespace, name) → when (monotonic) a Node's occupancy was last written for itself (throttled too)
    occupancy_written: dict[tuple[str, str, str], float] = dataclasses.field(default_factory=dict)
    # (plural, namespace, name) → what the loop last compared a Deployment's status from (the status dict itself,
    # the contract, generation, pricing policy): when all are the same, the comparison is skipped
    refreshed: dict[tuple[str, str, str], tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    # (plural, namespace, name) → why its kind's status model refused the last change the loop had for it (logged
    # as an error once per reason, then at debug level: a defect of ours, never a write)
    refused: dict[tuple[str, str, str], str] = dataclasses.field(default_factory=dict)
    # the Secrets Deployments' payers name, as a watch shows them (read through it, not a GET per reconcile)
    secrets: SecretView = dataclasses.field(default_factory=SecretView)
    # (plural, namespace, name) → the latest body seen on the watch (metadata, spec, status)
    objects: dict[tuple[str, str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    # the kinds (plurals) whose watch stopped (kopf paused it: a standby replica; or it failed): their part of
    # ``objects`` is as last seen, and the loop acts on none of it until their next LIST begins
    unfollowed: set[str] = dataclasses.field(default_factory=set)
    # (plural, namespace, name) → (uid, the Ready reason its handler last reported, that report): the loop decides
    # from this whether a handler holds an object, never from the object's status (its user can write that), and
    # writes a held object's report back over whatever was written since
    reported: dict[tuple[str, str, str], tuple[str, str, dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # when (monotonic) the loop next LISTs the Deployments for orphaned contracts; -inf: on its next tick
    sweep_at: float = -math.inf
    # (contract key, grant expiry) → grid time its Deployment was last nudged to read a renewed grant
    renewals: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    # deletes that wait for their dependents (handlers/blocked.py): (plural, namespace, name) → (uid, kopf's handler
    # id, kopf's retry count when it blocked, what it still waits for); and each dependent → who waits for it
    waits: dict[tuple[str, str, str], tuple[str, str, int, set[str]]] = dataclasses.field(default_factory=dict)
    waited_for: dict[str, set[tuple[str, str, str]]] = dataclasses.field(default_factory=dict)

    # "namespace/name" of Deployments that vanished since the last sweep: the next tick checks their contracts
    vanished: set[str] = dataclasses.field(default_factory=set)

    def request_sweep(self, key: str | None = None) -> None:
        """A Deployment vanished (a finalizer removed by hand skips our delete handler): the next tick sweeps its
        contract if it is still live (a namespace deleted whole makes thousands vanish, whose contracts our delete
        handler closed: none of them costs a LIST). No key: a whole sweep on the next tick."""
        if key is None:
            self.sweep_at = -math.inf
        else:
            self.vanished.add(key)


# the keys of kopf's operator memo (kopf.operator(memo=...), the ``memo`` of startup and cleanup; each object's
# memo is a shallow copy of it made after startup, so every handler sees the same Runtime)
MAKE_RUNTIME = "make_runtime"  # optional: an async callable that builds the Runtime (tests, sandbox, benchmarks)
RUNTIME = "runtime"  # set by the startup handler


def of(memo: Any) -> Runtime | None:
    """The operator's Runtime from a handler's ``memo``; None before startup has built it."""
    rt = memo.get(RUNTIME) if isinstance(memo, dict) else None
    return rt if isinstance(rt, Runtime) else None


def get(memo: Any) -> Runtime:
    """The operator's Runtime from a handler's ``memo``, for handlers that cannot run without it."""
    rt = of(memo)
    if rt is None:
        raise RuntimeError("the operator runtime is not started")
    return rt


