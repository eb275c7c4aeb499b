"""The operator's Prometheus endpoint, scraped over HTTP while it works: controller-runtime-style reconcile
series per kind, grid capacity, minted/billed counters, contracts by state, open proposals — and no label
value that names an object (bounded cardinality)."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.conftest import START, OperatorThread
from e2e.objects import create, deployment, farm, node, ready, twin_account, with_reason
from polling import eventually
from tfgrid_operator.domain import money

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture
async def metered_operator(apiserver, grid_clock, ledger_path):
    port = free_port()
    op = OperatorThread(ledger_path, grid_clock, metrics_port=port)
    async with op.running():
        yield op, port


async def test_metrics_endpoint_while_reconciling(apiserver, metered_operator, grid_clock, ledger_path):
    _, port = metered_operator
    from e2e.conftest import CONFIG
    from tfgrid_operator import backend
    ledger = await backend.open_backend(ledger_path, CONFIG)
    await twin_account(ledger, apiserver, "alice")
    await ledger.fund(name="alice", amount=100 * money.UNITS_PER_TFT, now=grid_clock.now())
    await ledger.close()
    await create(apiserver, farm(), node("n1"), node("n2"), deployment("web"), deployment("huge", cru=64))
    await ready(apiserver, "deployments", "web")
    await ready(apiserver, "nodes", "n1", "n2")  # both on the ledger before the period is billed (capacity total)
    await with_reason(apiserver, "deployments", "huge", "Unschedulable")  # reconciled (a requeue) before the scrape
    grid_clock.set(START + 3600)

    def billed():
        # the gauges are the loop's, set at the end of a tick from what it read at its start: all three from one tick
        # (a scrape under a loaded machine once showed the billed counter and the capacity used with a total of 8)
        m = scrape(port)
        return (m.get(("tfgrid_billed_units_total", ())) == 7_625_000
                and m.get(("tfgrid_capacity", (("resource", "cru"), ("state", "used")))) == 2
                and m.get(("tfgrid_capacity", (("resource", "cru"), ("state", "total")))) == 16 and m)

    m = await eventually(billed, what="billing and the capacity in use in the metrics")
    assert m[("controller_runtime_reconcile_total", (("controller", "farm"), ("result", "success")))] >= 1
    assert m[("controller_runtime_reconcile_total", (("controller", "deployment"), ("result", "requeue")))] >= 1  # huge
    assert m[("controller_runtime_reconcile_time_seconds_count", (("controller", "node"),))] >= 2
    assert m[("tfgrid_capacity", (("resource", "cru"), ("state", "total")))] == 16
    assert m[("tfgrid_capacity", (("resource", "cru"), ("state", "used")))] == 2
    assert m[("tfgrid_contracts", (("state", "Created"),))] == 1
    assert m[("tfgrid_objects", (("kind", "deployment"), ("ready", "False")))] == 1
    assert ("tfgrid_proposals_open", ()) in m and ("tfgrid_minted_units_total", ()) in m
    assert m[("tfgrid_status_writes_queued", ())] >= 0  # the loop's write-back queue, read when scraped
    names = {"farm1", "n1", "n2", "web", "huge", "default"}
    assert not {v for (_, labels) in m for _, v in labels} & names, "a label value names an object"
