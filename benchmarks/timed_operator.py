"""`tfgrid-operator run` with the ledger's period work timed, as operator_scale.py starts the operator: each
mint_period / bill_period call appends 'NAME PERIOD SECONDS' to $BENCH_LEDGER_LOG (the operator has no metric of
it). Nothing else differs, and nothing of the benchmark is imported here (the process's memory is measured).

    BENCH_LEDGER_LOG=/tmp/ledger.log python benchmarks/timed_operator.py run --standalone
"""

from __future__ import annotations

import os
import sys
import time

TIMED = ("mint_period", "bill_period")


def main() -> None:
    from tfgrid_operator import backend
    from tfgrid_operator.cli import main as cli_main

    out = open(os.environ["BENCH_LEDGER_LOG"], "a", buffering=1)  # noqa: SIM115  (open for the process's life)
    opened = backend.open_backend

    async def open_backend(*args, **kwargs):
        ledger = await opened(*args, **kwargs)
        for name in TIMED:
            method = getattr(ledger, name)

            async def timed(*a, _method=method, _name=name, **kw):
                started = time.perf_counter()
                try:
                    return await _method(*a, **kw)
                finally:
                    out.write(f"{_name} {kw.get('period')} {time.perf_counter() - started:.4f}\n")
            setattr(ledger, name, timed)
        return ledger
    backend.open_backend = open_backend  # startup.default_runtime opens the ledger through this name
    sys.argv = ["tfgrid-operator", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
