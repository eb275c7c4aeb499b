"""Issue 17, target 6: what a burst of new objects costs the API server in writes (POST, PUT, PATCH), counted at the
emulator by verb and resource. Counts, never timings: a small burst has a bound that holds on any machine.

Per object on creation: kopf's finalizer PATCH and one status PATCH; a Node's status written once when it registers
(the loop writes it again only when something in it changes: here, when deployments land on it); an Event only where
a person needs one (none in a routine burst). Deleting them costs no more than creating them did."""

from __future__ import annotations

import collections

import pytest

from e2e.conftest import CONFIG, OperatorThread, condition
from e2e.objects import create, deployment, farm, node, obj, ready, twin_account
from polling import eventually
from tfgrid_operator import backend

pytestmark = pytest.mark.e2e

WRITES = frozenset({"create", "update", "patch"})
BOUND = 2.5  # API writes per object, on average over a burst (issue 17, target 6)
NODES, DEPLOYMENTS = 4, 20
OBJECTS = 1 + NODES + DEPLOYMENTS


@pytest.fixture
async def operator(apiserver, grid_clock, ledger_path):
    """At the default tick (5 s), as a cluster runs it: a burst this small lands between two of the loop's passes."""
    async with OperatorThread(ledger_path, grid_clock, tick_s=5.0).running() as op:
        yield op


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


def writes_by(calls: list, agent: str) -> collections.Counter[str]:
    return operator_writes([c for c in calls if c.agent.startswith(agent)])


@pytest.fixture
async def patient(apiserver, grid_clock, ledger_path):
    """A blocked delete's safety-net retry far beyond the test (retry_delay_s 5 s: 2 minutes), so that what it
    writes is its block and its wake-up, never a retry that polls."""
    async with OperatorThread(ledger_path, grid_clock, retry_delay_s=5.0).running() as op:
        yield op


async def test_a_blocked_delete_waits_without_writes_until_its_last_dependent_finishes_it(apiserver, patient,
                                                                                       ledger_path):
    """A Node deleted under its deployments and a Farm deleted under its node: each says once why it waits
    (DeleteBlocked, one Event), kopf stores one long delay, and the close of the last dependent finishes the
    delete (the record closed, the finalizer removed: one write of ours): no retry polls. A blocked delete costs
    kopf's write of the block and our removal of the finalizer, however long the wait."""
    lg = await backend.open_backend(ledger_path, CONFIG)
    try:
        await twin_account(lg, apiserver, "alice")
        await create(apiserver, farm())
        await ready(apiserver, "farms", "farm1")
        await create(apiserver, node("n1", cru=8))
        await ready(apiserver, "nodes", "n1")
        await create(apiserver, *(deployment(d, cru=1, public_ips=0) for d in ("d1", "d2")))
        await ready(apiserver, "deployments", "d1", "d2")
        await patient.ticks(2)  # the loop's passes after the burst (capacity used on the node) are not the delete's
        api = "/apis/grid.threefold.io/v1alpha1/namespaces/default"

        calls0 = len(apiserver.calls)
        assert (await apiserver.delete(f"{api}/nodes/n1")).status == 200
        await eventually(lambda: condition(obj(apiserver, "nodes", "n1"))["reason"] == "DeleteBlocked", what="n1 blocked")
        assert (await apiserver.delete(f"{api}/farms/farm1")).status == 200
        await eventually(lambda: condition(obj(apiserver, "farms", "farm1"))["reason"] == "DeleteBlocked",
                         what="farm1 blocked")
        await eventually(lambda: obj(apiserver, "farms", "farm1")["status"]["kopf"]["progress"]["delete_farm"]["delayed"],
                         what="kopf's delay stored")
        assert patient.rt.waits.keys() == {("nodes", "default", "n1"), ("farms", "default", "farm1")}
        await gone(apiserver, "deployments", "d1")
        assert obj(apiserver, "nodes", "n1") is not None  # d2 is still on it
        await gone(apiserver, "deployments", "d2")
        await eventually(lambda: obj(apiserver, "nodes", "n1") is None, what="n1 gone")
        await eventually(lambda: obj(apiserver, "farms", "farm1") is None, what="farm1 gone")
        assert (await lg.observe_node(name="n1")).state == "Closed"
        assert (await lg.observe_farm(name="farm1")).state == "Closed"
    finally:
        await lg.close()
    calls = apiserver.calls[calls0:]
    kopf, ours = writes_by(calls, "kopf"), writes_by(calls, "tfgrid-operator")
    for plural in ("nodes", "farms"):
        # kopf: the block (its progress and the DeleteBlocked condition in one PATCH); ours: the finalizer's removal
        assert kopf[f"patch {plural}/status"] == 1 and not kopf[f"patch {plural}"], kopf
        assert ours[f"patch {plural}"] == 1 and not ours[f"patch {plural}/status"], ours
    # one DeleteBlocked Event each (Node, Farm), each Deployment's final bill
    assert ours["create events"] == 4, ours
    assert [e.get("reason") for e in apiserver.read_all("events")].count("DeleteBlocked") == 2
    assert not patient.rt.waits and not patient.rt.waited_for
