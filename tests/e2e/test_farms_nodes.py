"""Farm and Node end to end: registration, FarmNotReady recovery, signed uptime, exact minting, deletion."""

from __future__ import annotations

import pytest

from e2e.conftest import PERIOD, START, condition
from polling import eventually
from tfgrid_operator import agent
from tfgrid_operator.domain import identity
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient

pytestmark = pytest.mark.e2e

G = "/apis/grid.threefold.io/v1alpha1/namespaces/default"
OWNER = identity.KeyPair.generate()
KEYS = {name: identity.KeyPair.generate() for name in ("n1", "n2")}


def farm(name="farm1"):
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Farm", "metadata": {"name": name},
            "spec": {"ownerKey": OWNER.public_key, "payoutAccount": "farmer1", "publicIPs": 2}}


def node(name, farm_name="farm1"):
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Node", "metadata": {"name": name},
            "spec": {"farm": farm_name, "publicKey": KEYS[name].public_key,
                     "resources": {"cru": 8, "mru": 32, "sru": 1000, "hru": 4000},
                     "location": {"country": "BE", "city": "Ghent"}}}


def obj(apiserver, plural, name):
    return apiserver.read(f"grid.threefold.io/v1alpha1/{plural}", "default", name)


async def test_smoke_operator_writes_status(apiserver, operator):
    resp = await apiserver.post(f"{G}/farms", json=farm())
    assert resp.status == 201
    f = await eventually(lambda: condition(obj(apiserver, "farms", "farm1"))["status"] == "True" and
                         obj(apiserver, "farms", "farm1"), what="farm Ready")
    assert f["status"]["farmId"] == 1
    assert condition(f, "Synced")["reason"] == "ReconcileSuccess"
    assert condition(f)["observedGeneration"] == f["metadata"]["generation"]
    assert "grid.threefold.io/finalizer" in f["metadata"]["finalizers"]
    assert not any(k.startswith("kopf.zalando.org") for k in f["metadata"].get("annotations", {}))


async def test_node_waits_for_farm_then_recovers(apiserver, operator):
    await apiserver.post(f"{G}/nodes", json=node("n1"))
    await eventually(lambda: condition(obj(apiserver, "nodes", "n1"))["reason"] == "FarmNotReady", what="FarmNotReady")
    await apiserver.post(f"{G}/farms", json=farm())
    n = await eventually(lambda: condition(obj(apiserver, "nodes", "n1"))["status"] == "True" and
                         obj(apiserver, "nodes", "n1"), what="node Ready")
    assert n["status"]["nodeId"] == 1


async def report(kube, name, ts, uptime, key=None):
    await agent.send_report(kube, key or KEYS[name], namespace="default", node=name, ts=ts, uptime=uptime)


async def test_minting_exact_amounts_forged_report_and_restart(apiserver, operator, ledger, grid_clock):
    await apiserver.post(f"{G}/farms", json=farm())
    for name in ("n1", "n2"):
        await apiserver.post(f"{G}/nodes", json=node(name))
    await eventually(lambda: all(condition(obj(apiserver, "nodes", n))["status"] == "True" for n in ("n1", "n2")))
    async with KubeClient() as kube:
        for name in ("n1", "n2"):  # each agent attests what it measured from the period's start (issue 13)
            await agent.send_report(kube, KEYS[name], namespace="default", node=name, ts=START, uptime=10_000,
                                    capacity=Resources(cru=8, mru=32, sru=1000, hru=4000))
        await eventually(lambda: _attested(ledger, ("n1", "n2")), what="capacity attested")
        steps = PERIOD // 2400
        for i in range(1, steps + 1):
            ts = START + i * 2400
            grid_clock.set(ts)
            await report(kube, "n1", ts, 10_000 + i * 2400)
            if i <= steps // 2:  # n2 reports only the first half: far below the 95 % SLA
                await report(kube, "n2", ts, 10_000 + i * 2400)
            if i == steps // 2:  # restart the operator mid-period: nothing is lost or repeated
                await operator.stop()
                operator.start()
            await eventually(lambda ts=ts: ledger.node_summaries(now=ts), what="ledger readable")
            await eventually(lambda ts=ts: _reported(ledger, "n1", ts), what=f"report {i} counted")
        # a forged report (signed by the wrong key) is rejected with an Event and does not count
        forged_ts = START + PERIOD + 100
        grid_clock.set(forged_ts)
        await report(kube, "n2", forged_ts, 999_999, key=KEYS["n1"])
        await eventually(lambda: any(e.get("reason") == "UptimeRejected" for e in apiserver.read_all("events")),
                         what="UptimeRejected event")
    grid_clock.set(START + PERIOD + 2460)  # past the period's end and the settle time
    n1 = await eventually(lambda: (obj(apiserver, "nodes", "n1")["status"]["minting"]["period"] == 100
                                   and obj(apiserver, "nodes", "n1")), what="n1 minted")
    # §3.5 by hand: CU = min(16, 31/4, 20) = 7.75; SU = 4000/1200 + 1000/250 = 7.3333…;
    # 7.75·2400 + 7.3333…·1000 = 25,933.33 mUSD at 100 % uptime; ÷ 80 mUSD/TFT × 10^7 = 3,241,666,666 units
    assert n1["status"]["minting"] == {"period": 100, "reward": 3_241_666_666, "reason": "Rewarded",
                                       "total": 3_241_666_666, "uptimePermille": 1000, "cu": "7.75", "su": "22/3",
                                       "certified": False,
                                       "receipt": "tfgrid-operator ledger mints --node n1 --period 100"}
    n2 = await eventually(lambda: obj(apiserver, "nodes", "n2")["status"]["minting"].get("period") == 100
                          and obj(apiserver, "nodes", "n2"), what="n2's period settled")  # patched in the same tick
    assert n2["status"]["minting"]["reward"] == 0 and n2["status"]["minting"]["reason"] == "BelowSla"
    farm_status = await eventually(lambda: obj(apiserver, "farms", "farm1")["status"].get("mintedTotal") and
                                   obj(apiserver, "farms", "farm1")["status"])
    assert farm_status["mintedTotal"] == 3_241_666_666 and farm_status["nodes"] == 2
    assert (await ledger.get_account(name="default/farmer1")).balance == 3_241_666_666
    assert any(e.get("reason") == "Minted" for e in apiserver.read_all("events"))


async def _attested(ledger, names):
    return set(names) <= set(await ledger.attestations())


async def _reported(ledger, name, ts):
    s = (await ledger.node_summaries(now=ts)).get(name)
    return s is not None and s.last_report_ts == ts


async def test_delete_node_and_farm_with_finalizers(apiserver, operator, ledger):
    await apiserver.post(f"{G}/farms", json=farm())
    await apiserver.post(f"{G}/nodes", json=node("n1"))
    await eventually(lambda: condition(obj(apiserver, "nodes", "n1"))["status"] == "True")
    # the farm still has a node: deletion is blocked and says why
    await apiserver.delete(f"{G}/farms/farm1")
    await eventually(lambda: condition(obj(apiserver, "farms", "farm1"))["reason"] == "DeleteBlocked",
                     what="DeleteBlocked")
    await apiserver.delete(f"{G}/nodes/n1")
    await eventually(lambda: obj(apiserver, "nodes", "n1") is None, what="node gone")
    await eventually(lambda: obj(apiserver, "farms", "farm1") is None, what="farm gone")
    assert (await ledger.observe_node(name="n1")).state == "Closed"
    assert (await ledger.observe_farm(name="farm1")).state == "Closed"
