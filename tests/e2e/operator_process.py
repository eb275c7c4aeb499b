"""The real operator in a process of its own, for the kill test: $KUBECONFIG is the emulator, the clock is a
file the test writes (so time moves for a process it can SIGKILL), the ledger is the URL given.

    python tests/e2e/operator_process.py LEDGER_URL CLOCK_FILE COUNCIL_KEYS
"""

from __future__ import annotations

import asyncio
import sys

import kopf

import tfgrid_operator.handlers  # noqa: F401  (registers the handlers)
from tfgrid_operator import backend, clock, metrics, runtime
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.settings import Settings

PERIOD = 6 * 3600
CONFIG = backend.LedgerConfig(billing_period_s=3600, minting_epoch=0, minting_period_s=PERIOD, mint_settle_s=2460,
                              grace_period_s=3 * 3600)


def main() -> None:
    ledger_url, clock_file, council = sys.argv[1], sys.argv[2], sys.argv[3]

    async def make_runtime() -> runtime.Runtime:
        settings = Settings(tick_s=0.1, metrics_port=0, nudge_after_s=1.0, council_keys=council)
        return runtime.Runtime(settings=settings, clock=clock.FileClock(clock_file),
                               ledger=await backend.open_backend(ledger_url, CONFIG), kube=KubeClient(),
                               metrics=metrics.Metrics(), retry_delay_s=0.3)

    kopf.configure(verbose=False)  # log to stderr, which the test keeps
    asyncio.run(kopf.operator(registry=kopf.get_default_registry(), standalone=True, clusterwide=True,
                              memo=kopf.Memo({runtime.MAKE_RUNTIME: make_runtime})))


if __name__ == "__main__":
    main()
