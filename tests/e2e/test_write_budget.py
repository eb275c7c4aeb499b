"""Issue 17, target 6: what a burst of new objects costs the API server in writes (POST, PUT, PATCH), counted at the
emulator by verb and resource. Counts, never timings: a small burst has a bound that holds on any machine.

Per object on creation: kopf's finalizer PATCH and one status PATCH; a Node's status written once when it registers
(the loop writes it again only when something in it changes: here, when deployments land on it); an Event only where
a person needs one (none in a routine burst). Deleting them costs no more than creating them did."""

from __future__ import annotations

import collections

import pytest

from e2e.conftest import OperatorThread, eventually
from e2e.objects import create, deployment, farm, node, obj, ready, twin_account

pytestmark = pytest.mark.e2e

WRITES = frozenset({"create", "update", "patch"})
BOUND = 2.5  # API writes per object, on average over a burst (issue 17, target 6)
NODES, DEPLOYMENTS = 4, 20
OBJECTS = 1 + NODES + DEPLOYMENTS


@pytest.fixture
async def operator(apiserver, grid_clock, ledger_path):
    """At the default tick (5 s), as a cluster runs it: a burst this small lands between two of the loop's passes."""
    op = OperatorThread(ledger_path, grid_clock, tick_s=5.0)
    op.start()
    yield op
    if op.thread is not None and op.thread.is_alive():
        await op.stop()
    assert not op.errors, op.errors


def operator_writes(calls: list) -> collections.Counter[str]:
    """The operator's writes (kopf's client and the loop's), by verb and resource[/subresource]."""
    return collections.Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}" for c in calls
                               if c.verb in WRITES and c.agent.startswith(("kopf", "tfgrid-operator")))


async def gone(apiserver, plural: str, *names: str) -> None:
    for name in names:
        resp = await apiserver.delete(f"/apis/grid.threefold.io/v1alpha1/namespaces/default/{plural}/{name}")
        assert resp.status == 200, await resp.text()
    await eventually(lambda: not any(obj(apiserver, plural, n) for n in names), timeout=30, what=f"{plural} gone")


async def test_a_burst_costs_at_most_two_and_a_half_writes_per_object_and_deleting_it_no_more(apiserver, operator,
                                                                                            ledger):
    await twin_account(ledger, apiserver, "alice")
    nodes, deployments = [f"n{i}" for i in range(NODES)], [f"d{i}" for i in range(DEPLOYMENTS)]
    calls0 = len(apiserver.calls)
    await create(apiserver, farm())
    await ready(apiserver, "farms", "farm1")
    await create(apiserver, *(node(n, cru=8) for n in nodes))
    await ready(apiserver, "nodes", *nodes)
    await operator.ticks(1)
    registered = operator_writes(apiserver.calls[calls0:])
    assert registered["patch nodes/status"] == NODES, registered  # once each on registration; the loop found it current
    await create(apiserver, *(deployment(d, cru=1, public_ips=0) for d in deployments))
    await ready(apiserver, "deployments", *deployments, timeout=30)
    await operator.ticks(2)  # the loop's passes after the burst: what it writes (capacity used on the nodes) counts
    created = operator_writes(apiserver.calls[calls0:])
    assert created["patch deployments"] == DEPLOYMENTS, created  # kopf's finalizer, once
    assert created["patch deployments/status"] == DEPLOYMENTS, created  # one status write each
    assert created["create events"] == 0, created  # a routine burst: nobody needs an Event
    assert sum(created.values()) / OBJECTS <= BOUND, created

    calls0 = len(apiserver.calls)
    await gone(apiserver, "deployments", *deployments)
    await gone(apiserver, "nodes", *nodes)
    await gone(apiserver, "farms", "farm1")
    await operator.ticks(1)
    deleted = operator_writes(apiserver.calls[calls0:])
    assert deleted["create events"] == DEPLOYMENTS, deleted  # each Deployment's final bill; Nodes and Farms: none
    assert not deleted["patch deployments/status"], deleted  # nothing to tell an object that goes
    assert sum(deleted.values()) <= sum(created.values()), (deleted, created)
