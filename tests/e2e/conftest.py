"""The real kopf operator, in its own thread, against the strict API emulator as a cluster serves: HTTPS with a
test CA, every request authenticated, the operator logging in through a kubeconfig written as kind writes it
(embedded CA, client certificate and key data)."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
import yaml

import tfgrid_operator.handlers  # noqa: F401  (registers the handlers)
from kube_emulator import Cluster
from polling import SLACK, eventually
from tfgrid_operator import backend, clock, metrics, runtime
from tfgrid_operator.domain import identity
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
PERIOD = 6 * 3600  # a short minting period for tests; every length is configuration
START = 100 * PERIOD  # the clock starts at the beginning of minting period 100

# §5: three vetoes close a proposal. Fixed seeds: pytest may import this file under two module names.
COUNCIL = [identity.KeyPair(bytes([i + 1]) * 32) for i in range(3)]

OPERATOR = "tfgrid-operator"  # the client certificate's CN: the user the emulator records

CONFIG = backend.LedgerConfig(billing_period_s=3600, minting_epoch=0, minting_period_s=PERIOD, mint_settle_s=2460,
                              grace_period_s=3 * 3600)


class OperatorThread:
    def __init__(self, ledger_url: str, clk: clock.ManualClock, peering: bool = False, retry_delay_s: float = 0.3,
                 **settings: Any) -> None:
        self.ledger_url, self.clock, self.peering, self.retry_delay_s = ledger_url, clk, peering, retry_delay_s
        self.settings = {"tick_s": 0.1, "metrics_port": 0, "nudge_after_s": 1.0,
                         "council_keys": ",".join(k.public_key for k in COUNCIL),
                         **settings}
        self.thread: threading.Thread | None = None
        self.stop_flag: threading.Event | None = None
        self.errors: list[BaseException] = []
        self.memo = kopf.Memo()

    async def _runtime(self) -> runtime.Runtime:
        ledger = await backend.open_backend(self.ledger_url, CONFIG)
        return runtime.Runtime(settings=Settings(**self.settings), clock=self.clock, ledger=ledger, kube=KubeClient(),
                               metrics=metrics.Metrics(), retry_delay_s=self.retry_delay_s)

    def start(self) -> None:
        self.stop_flag, ready = threading.Event(), threading.Event()
        self.memo = kopf.Memo({runtime.MAKE_RUNTIME: self._runtime})  # startup builds the Runtime with it

        def main() -> None:
            try:
                peering = {"peering_name": "tfgrid-operator", "priority": 7} if self.peering else {"standalone": True}
                asyncio.run(kopf.operator(registry=kopf.get_default_registry(), clusterwide=True, **peering,
                                          memo=self.memo, stop_flag=self.stop_flag, ready_flag=ready))
            except BaseException as exc:  # surfaced by the test on stop()
                self.errors.append(exc)

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert ready.wait(20 * SLACK), "the operator did not start"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[OperatorThread]:
        """Started for a fixture's test; stopped after it (if it still runs), and nothing it logged as an error."""
        self.start()
        yield self
        if self.thread is not None and self.thread.is_alive():
            await self.stop()
        assert not self.errors, self.errors

    async def stop(self) -> None:
        assert self.thread is not None and self.stop_flag is not None
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 20 * SLACK)
        assert not self.thread.is_alive(), "the operator did not stop"

    @property
    def rt(self) -> runtime.Runtime:
        return runtime.get(self.memo)

    def loop_runs(self) -> float:
        """How many ticks of the batched loop have finished (its refresh's duration histogram counts them)."""
        for metric in self.rt.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name == "controller_runtime_reconcile_time_seconds_count" and \
                        sample.labels.get("controller") == "periodic":
                    return sample.value
        return 0.0

    async def ticks(self, n: int, timeout: float = 60.0) -> None:
        """Wait until the batched loop has run ``n`` more ticks: a count, never a guess of how long ticks take
        on a loaded machine."""
        target = self.loop_runs() + n
        await eventually(lambda: self.loop_runs() >= target, timeout=timeout, what=f"{n} ticks of the loop")


def crd_docs() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]


@pytest.fixture
async def cluster(tmp_path, monkeypatch):
    """The emulated cluster (CA, TLS listener, users); $KUBECONFIG is a kind-style kubeconfig with a client
    certificate, as `kind get kubeconfig` writes."""
    c = Cluster(tmp_path)
    emu = await c.start()
    try:
        for crd in crd_docs():
            resp = await emu.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
            assert resp.status == 201, await resp.text()
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig(c.cert_user(OPERATOR))))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def apiserver(cluster):
    return cluster.emulator


@pytest.fixture
def grid_clock():
    return clock.ManualClock(START)


@pytest.fixture
def ledger_path(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
async def operator(apiserver, grid_clock, ledger_path):
    async with OperatorThread(ledger_path, grid_clock).running() as op:
        yield op


@pytest.fixture
async def ledger(ledger_path, operator):
    lg = await backend.open_backend(ledger_path, CONFIG)
    yield lg
    await lg.close()


def condition(obj: dict[str, Any] | None, type_: str = "Ready") -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}
