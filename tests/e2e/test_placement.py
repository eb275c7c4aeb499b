"""Placement end to end: every constraint, dedicated nodes, and self-healing when a node goes down."""

from __future__ import annotations

import pytest

from e2e.conftest import COUNCIL, START, condition
from e2e.objects import create, deployment, events, farm, node, obj, ready, twin_account, with_reason
from polling import eventually
from tfgrid_operator import agent, ballot
from tfgrid_operator.domain import identity, money
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient

pytestmark = pytest.mark.e2e
H = 3600


async def certify(apiserver, ledger, name, key):
    """spec.certified is only what the farmer expects: the node's agent attests, a council member certifies."""
    async with KubeClient() as kube:
        await agent.send_report(kube, key, namespace="default", node=name, ts=START, uptime=100,
                                capacity=Resources(cru=8, mru=32, sru=1000))
        await eventually(lambda: _has(ledger, name), what=f"{name} attested")
        node_id = obj(apiserver, "nodes", name)["status"]["nodeId"]
        await ballot.certify(kube, namespace="default", node=name, entry=ballot.signed_certification(
            COUNCIL[0], node=name, node_id=node_id, certified=True, ts=START,
            resources=Resources(cru=8, mru=32, sru=1000)))
    await eventually(lambda: _certified(ledger, name), what=f"{name} certified")


async def _has(ledger, name):
    return name in await ledger.attestations()


async def _certified(ledger, name):
    return (await ledger.observe_node(name=name)).certified


async def test_each_placement_constraint(apiserver, operator, ledger):
    n3 = identity.KeyPair.generate()
    await create(apiserver, farm("farm1"), farm("farm2", certified=True), node("n1"), node("n2"),
                 node("n3", "farm2", country="NL", city="Amsterdam", certified=True, key=n3))
    await ready(apiserver, "nodes", "n1", "n2", "n3")
    await certify(apiserver, ledger, "n3", n3)
    await twin_account(ledger, apiserver, "alice")
    expected = [("by-node", {"node": "n2"}, "n2"), ("by-farm", {"farm": "farm2"}, "n3"),
                ("by-city", {"city": "amsterdam"}, "n3"), ("by-country", {"country": "BE"}, "n1"),
                ("cert", {"certifiedOnly": True}, "n3")]
    for name, placement, where in expected:  # one at a time: least-loaded placement is deterministic
        await create(apiserver, deployment(name, **placement))
        d = (await ready(apiserver, "deployments", name))[0]
        assert d["status"]["node"] == where, name
    # §2.6 version B: a certified node's capacity costs ×1.25 → 7,625,000 × 1.25 units an hour
    assert obj(apiserver, "deployments", "cert")["status"]["costPerHour"] == 9_531_250
    assert obj(apiserver, "deployments", "by-node")["status"]["costPerHour"] == 7_625_000
    for name, placement, constraint in [("nowhere", {"node": "n9"}, "Node"), ("far", {"country": "EG"}, "Country"),
                                        ("rent", {"farm": "farm1", "dedicated": True}, "Dedicated")]:
        await create(apiserver, deployment(name, **placement))
        d = await with_reason(apiserver, "deployments", name, "Unschedulable")
        assert condition(d)["message"].startswith(f"{constraint}:"), condition(d)["message"]
    await eventually(lambda: events(apiserver, "Unschedulable", "rent"), what="Unschedulable Event")
    # capacity appears: an empty node in farm1 → the dedicated deployment rents it, nothing else may land there
    await create(apiserver, node("n4"))
    d = (await ready(apiserver, "deployments", "rent"))[0]
    assert d["status"]["node"] == "n4" and d["status"]["reserved"]["cru"] == 8
    # §2.6 rent: the node's CU 8, SU 5 → 1,050,000 units USD/h × 50 % + one IPv4 40,000 = 565,000 → 28,250,000
    assert d["status"]["costPerHour"] == 28_250_000
    await create(apiserver, deployment("squeeze", node="n4", cru=1, public_ips=0))
    d = await with_reason(apiserver, "deployments", "squeeze", "Unschedulable")
    assert condition(d)["message"].startswith("Rented:")
    assert await ledger.observe_contract(key="default/squeeze") is None


async def test_node_down_moves_its_deployments_without_double_charge(apiserver, operator, ledger, grid_clock):
    keys = {n: identity.KeyPair.generate() for n in ("n1", "n2", "n3")}
    await create(apiserver, farm(), *(node(n, key=k) for n, k in keys.items()))
    await ready(apiserver, "nodes", *keys)
    await twin_account(ledger, apiserver, "alice")
    # < 1.5 months of funding: no discount, 7,625,000 units an hour
    await ledger.fund(name="alice", amount=100 * money.UNITS_PER_TFT, now=grid_clock.now())
    await create(apiserver, deployment("mover"))
    assert (await ready(apiserver, "deployments", "mover"))[0]["status"]["node"] == "n1"
    stay = deployment("stay")
    stay["spec"]["selfHealing"] = False  # opts out: stays on its node when that node goes down
    await create(apiserver, stay)
    assert (await ready(apiserver, "deployments", "stay"))[0]["status"]["node"] == "n2"
    first = obj(apiserver, "deployments", "mover")["status"]["contractId"]

    async with KubeClient() as kube:
        async def report(ts, *nodes):
            grid_clock.set(ts)
            for n in nodes:
                await agent.send_report(kube, keys[n], namespace="default", node=n, ts=ts, uptime=ts - START + 60)
            for n in nodes:
                await eventually(lambda n=n: _reported(ledger, n, ts), what=f"{n} report at {ts}")

        await report(START + 2400, "n1", "n2", "n3")
        await report(START + 4800, "n3")  # n1 and n2 fall silent
        await report(START + 7200, "n3")
        grid_clock.set(START + 7300)  # 4,900 s since n1's last report > 80 minutes (node_down_after)
        d = await eventually(lambda: obj(apiserver, "deployments", "mover")["status"]["node"] == "n3"
                             and obj(apiserver, "deployments", "mover"), what="moved to n3")
        assert d["status"]["movedFrom"] == "n1" and d["status"]["contractId"] != first
        moved = await eventually(lambda: events(apiserver, "Moved", "mover"), what="Moved Event")
        assert "Node n1 is down; moved to node n3" in moved[0]["message"]
        await with_reason(apiserver, "nodes", "n1", "NodeDown")
        assert obj(apiserver, "deployments", "stay")["status"]["node"] == "n2"
        await report(START + 9600, "n3")
        grid_clock.set(START + 3 * H)
        await eventually(lambda: obj(apiserver, "deployments", "mover")["status"].get("billedTotal") == 7_413_194)
    # three hours billed once across both contracts: 2 × 7,625,000 + 100 s (211,806) on the old contract,
    # 3,500 s (7,413,194) on the new one — 7,625,000 × 100/3600 and × 3500/3600, each rounded half up
    mover_paid = 3 * 7_625_000
    stay_paid = 3 * 7_625_000
    assert (await ledger.get_account(name="alice")).balance == 100 * money.UNITS_PER_TFT - mover_paid - stay_paid


async def _reported(ledger, name, ts):
    s = (await ledger.node_summaries(now=ts)).get(name)
    return s is not None and s.last_report_ts == ts
