"""Startup and cleanup: kopf settings in one place, the ledger, the metrics server, the batched loop.

The Runtime startup builds (with ``memo.make_runtime`` when the embedding caller put one in kopf's operator memo,
else from the environment's Settings) goes into that memo as ``memo.runtime``: kopf copies the operator memo into
every object's memo after startup, so each handler reaches it as ``runtime.get(memo)``. The loop task and the
metrics server are kept in the memo too, so that cleanup stops this operator's, never another's."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import prometheus_client
from kopf._cogs.structs import dicts as kopf_dicts

from tfgrid_operator import backend, clock, loop, metrics, runtime
from tfgrid_operator.domain import pricing
from tfgrid_operator.handlers import kopf_tuning, reporting
from tfgrid_operator.kube import client
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.loop import mirror
from tfgrid_operator.settings import Settings

KEPT_METADATA = (("metadata", "labels"), ("metadata", "annotations"))
LAST_APPLIED = kopf_tuning.LAST_APPLIED


def _copy(value: Any) -> Any:
    """A copy of JSON data (dicts, lists, scalars), without deepcopy's memo: what an essence may keep."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class DiffBaseInStatus(kopf.MultiDiffBaseStorage):
    """kopf's last-handled configuration in status.lastHandledConfiguration, written in the same PATCH as the
    status a reconcile reports (as an annotation it cost every object one more PATCH and one more watch event).
    Objects last handled by an earlier version carry it as an annotation: that is read when the status has none."""

    def __init__(self) -> None:
        self.in_status = kopf.StatusDiffBaseStorage(field="status.lastHandledConfiguration")
        self.legacy = kopf.AnnotationsDiffBaseStorage(prefix=runtime.PREFIX, key="last-handled-configuration")
        # its annotation names, once (kopf derives them per call, hashing the long form; they differ by object only
        # for ReplicaSets owned by Deployments, never for our kinds)
        self.legacy_keys = set(self.legacy.make_keys(self.legacy.key))
        super().__init__([self.in_status, self.legacy])

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        """The essence kopf compares on every watch event: the spec, labels and annotations (less kopf's storage
        annotations and kubectl's last-applied), plus the fields a handler filters on. kopf builds it by deep-copying
        the whole object, managedFields and status included, then dropping most of it, and deep-copies the filtered
        fields again (ours: the spec, two annotations) — ~120 µs an event, 7 % of a burst's CPU. This builds the same
        essence from just those parts (tests/shell/test_diffbase.py holds it equal to kopf's on arbitrary objects);
        a handler filtering on anything else gets kopf's own build."""
        fields = [tuple(f.split(".")) if isinstance(f, str) else tuple(f) for f in extra_fields or ()]
        if self.in_status.ignored_fields or not all(f[:1] == ("spec",) or f[:2] in KEPT_METADATA for f in fields):
            essence = self.in_status.build(body=body, extra_fields=extra_fields)
            self.legacy.remove_annotations(essence, self.legacy_keys)
            self.legacy.remove_empty_stanzas(essence)
            return essence
        built = {k: _copy(v) for k, v in body.items() if k not in ("apiVersion", "kind", "metadata", "status")}
        meta = body.get("metadata") or {}
        stanza: dict[str, Any] = {}
        if meta.get("labels"):
            stanza["labels"] = _copy(meta["labels"])
        annotations = meta.get("annotations") or {}
        if annotations:
            marked = self.in_status._detect_marked_prefixes(annotations)  # kopf's rule (a private method, kopf pinned)
            kept = {k: v for k, v in annotations.items()
                    if k != LAST_APPLIED and not any(k.startswith(f"{p}/") for p in marked)}
            for f in fields:  # a filtered field is kept even under a marked prefix, as kopf's cherry-pick does
                if f[:2] == ("metadata", "annotations") and len(f) == 3 and f[2] in annotations:
                    kept[f[2]] = annotations[f[2]]
            kept = {k: v for k, v in kept.items() if k not in self.legacy_keys}
            if kept:
                stanza["annotations"] = kept
        if stanza:
            built["metadata"] = stanza
        return built

    def store(self, *, body: Any, patch: kopf.Patch, essence: Any) -> None:
        self.in_status.store(body=body, patch=patch, essence=essence)


class ProgressInStatus(kopf.MultiProgressStorage):
    """kopf's per-handler progress (retries, delays) in status.kopf, written with the status in one PATCH (as
    annotations it cost every object one more PATCH: kopf marks an annotated object "kopf-managed"). Progress an
    earlier version left in annotations is still read, and purged."""

    def __init__(self) -> None:
        self.in_status = kopf.StatusProgressStorage()
        self.legacy = kopf.AnnotationsProgressStorage(prefix=runtime.PREFIX)
        super().__init__([self.in_status, self.legacy])

    def clear(self, *, essence: Any) -> Any:
        """kopf's own (its progress dropped from an essence, by each storage in turn) without the deep copy each
        storage makes first: four copies an event (the old essence and the new), ~1.4 % of a burst's CPU. What kopf
        clears is made for the call and read by nobody before: the old essence decoded from its JSON, the new one
        built by ``DiffBaseInStatus.build`` (fresh dicts, or kopf's own deep copy). So it is cleared in place
        (tests/shell/test_diffbase.py holds the result equal to kopf's on arbitrary essences)."""
        kopf_dicts.remove(essence, self.in_status.field)
        annotations = essence.get("metadata", {}).get("annotations", {})
        prefix = self.legacy.prefix
        self.legacy.remove_annotations(essence, {k for k in annotations if prefix and k.startswith(f"{prefix}/")})
        self.legacy.remove_empty_stanzas(essence)
        return essence

    def store(self, *, key: Any, record: Any, body: Any, patch: kopf.Patch) -> None:
        self.in_status.store(key=key, record=record, body=body, patch=patch)

    def touch(self, *, body: Any, patch: kopf.Patch, value: str | None) -> None:
        self.in_status.touch(body=body, patch=patch, value=value)


def configure(settings: kopf.OperatorSettings) -> None:
    """Our own finalizer; kopf's bookkeeping in status, so that a reconcile writes one PATCH of status; kopf's
    watch events without managedFields, and less copying (handlers/kopf_tuning.py)."""
    kopf_tuning.install()
    settings.persistence.finalizer = f"{runtime.PREFIX}/finalizer"
    settings.persistence.progress_storage = ProgressInStatus()
    settings.persistence.diffbase_storage = DiffBaseInStatus()
    settings.posting.level = logging.INFO  # kopf.info() Events obey this level too
    settings.watching.server_timeout = 600
    # kopf's LIST of each kind in chunks (a restart at grid size held 10,000 objects as served at once)
    settings.watching.chunk_size = client.LIST_CHUNK
    settings.networking.request_timeout = 60
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]  # capped backoff for framework errors
    # kopf posts Events one at a time and retries a refused one 8 times over a minute (403 included: it is retried
    # for API server upgrades), holding every Event behind it; a cluster refuses Events into a namespace being
    # deleted for good. Two quick retries, then the Event is dropped (Events are auxiliary).
    settings.posting.default_backoffs = (0.5, 1.0)
    quiet = reporting.ExpectedWaits()
    for name in ("kopf.objects", "kopf._core.engines.posting", "kopf._core.actions.execution"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, reporting.ExpectedWaits) for f in logger.filters):
            logger.addFilter(quiet)


async def default_runtime() -> runtime.Runtime:
    s = Settings()
    config = backend.LedgerConfig(
        billing_period_s=s.billing_period_s, minting_epoch=s.minting_epoch, minting_period_s=s.minting_period_s,
        mint_settle_s=s.mint_settle_s, grace_period_s=s.grace_period_s, node_down_after_s=s.node_down_after_s,
        tft_price=pricing.TftPrice(average_musd=s.tft_price_musd))
    ledger = await backend.open_backend(s.ledger_url, config)
    grid_clock = clock.FileClock(s.clock_file) if s.clock_file else clock.SystemClock()
    return runtime.Runtime(settings=s, clock=grid_clock, ledger=ledger, kube=KubeClient(), metrics=metrics.Metrics())


LOOP_TASK, METRICS_SERVER = "loop_task", "metrics_server"  # this operator's, in its memo
# A kopf worker keeps its slot until its object has been quiet this long, then ends (kopf starts another at the
# object's next event; a wait for the echo of its own PATCH is kopf's consistency timeout, not this). A pool of
# worker_limit slots goes at most worker_limit / WORKER_IDLE_S objects a second: kopf's default, 5 s, capped ours at
# ~51, and 0.5 s at ~512, which bound a burst and a restart at grid size (issue 17, scale 0.3: 0.5 s → 0.1 s took
# the burst from 0.56 to 0.68 of kopf's own ceiling and the restart from 11.8 to 9.4 s; 0.02 s gained nothing more).
WORKER_IDLE_S = 0.1


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings)
    factory = memo.get(runtime.MAKE_RUNTIME) or default_runtime
    rt = await factory()
    settings.queueing.worker_limit = rt.settings.worker_limit or None
    settings.queueing.idle_timeout = WORKER_IDLE_S
    memo[runtime.RUNTIME] = rt
    for plural in mirror.PLURALS:  # the loop's view, from kopf's own watch streams
        kopf_tuning.tap(settings, runtime.GROUP, plural, mirror.View(rt, plural))
    if rt.settings.metrics_port:  # Prometheus exposition of this runtime's registry
        memo[METRICS_SERVER], _thread = prometheus_client.start_http_server(rt.settings.metrics_port,
                                                                            registry=rt.metrics.registry)
    memo[LOOP_TASK] = asyncio.create_task(loop.run_forever(rt))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    server = memo.pop(METRICS_SERVER, None)
    if server is not None:
        server.shutdown()
        server.server_close()
    task = memo.pop(LOOP_TASK, None)
    if task is not None:
        await loop.stop(task)
    rt = memo.pop(runtime.RUNTIME, None)
    if rt is not None:
        await rt.kube.close()
        await rt.ledger.close()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf logs in with the credentials our own client uses (kube.client.load(): the `kubernetes` package's
    resolution, the same context), so the two can never talk to different clusters or as different users. kopf
    calls this again on a 401: a rotated token or an expired exec credential is resolved anew."""
    try:
        login = client.load()
    except client.ConfigError as exc:
        raise kopf.LoginError(str(exc)) from exc
    cfg = login.config
    header = login.authorization()
    scheme, _sep, token = header.partition(" ") if header else (None, "", None)
    return kopf.ConnectionInfo(
        server=login.server, ca_path=cfg.ssl_ca_cert or None, insecure=not cfg.verify_ssl,
        scheme=scheme or None, token=token or None,
        certificate_path=cfg.cert_file or None, private_key_path=cfg.key_file or None)
