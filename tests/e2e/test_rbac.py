"""RBAC is derived, not guessed: run every kind of work the operator does against the emulator (which records
each call as verb, group, resource, subresource), then require that the chart's rendered ClusterRole grants
exactly those — every call allowed, nothing granted that no call used."""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import subprocess

import pytest
import yaml

from e2e.conftest import CONFIG, COUNCIL, START, OperatorThread
from e2e.objects import NS, PatchFaults, create, deployment, farm, node, obj, proposal, ready
from polling import eventually
from tfgrid_operator import agent, backend, ballot
from tfgrid_operator.domain import identity
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient

pytestmark = pytest.mark.e2e
ROOT = pathlib.Path(__file__).resolve().parents[2]


def granted_rules(*args: str) -> set[tuple[str, str, str]]:
    out = subprocess.run([str(ROOT / "bin" / "helm"), "template", "t", str(ROOT / "charts" / "tfgrid-operator"), *args],
                         capture_output=True, text=True, check=True).stdout
    roles = [d for d in yaml.safe_load_all(out) if d and d["kind"] in ("ClusterRole", "Role")]
    return {(g, r, v) for role in roles for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


async def exercise(apiserver, grid_clock, ledger_url: str) -> None:
    """Everything the operator does: register, report uptime, place with a Secret payer, bill, mint, vote,
    resize, move, delete with finalizers, and recover from a conflict on its own status write."""
    owner = identity.KeyPair.generate()
    keys = {n: identity.KeyPair.generate() for n in ("n1", "n2")}
    await create(apiserver, farm(owner=owner.public_key), *(node(n, key=k) for n, k in keys.items()))
    await ready(apiserver, "nodes", "n1", "n2")
    twin = identity.KeyPair.generate()
    lg = await backend.open_backend(ledger_url, CONFIG)  # the test's own connection: the operator's lives on its loop
    await lg.ensure_account(name="bob", public_key=twin.public_key)
    await lg.fund(name="bob", amount=10**12, now=grid_clock.now())
    await lg.close()
    await apiserver.post("/api/v1/namespaces/default/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bob"},
        "data": {"twinKey": base64.b64encode(twin.to_text().encode()).decode()}})
    d = deployment("web", payer="bob")
    d["spec"]["payer"] = {"secretRef": {"name": "bob"}}
    # kopf's status write of the proposal conflicts once: the loop's nudge recovers it
    apiserver.fault = PatchFaults("proposals", 409, times=1)
    await create(apiserver, d, proposal("p", COUNCIL[0], {"type": "SetPricingPolicy", "pricing": {"cu": 1}}))
    await ready(apiserver, "deployments", "web")
    await ready(apiserver, "proposals", "p", timeout=30)
    apiserver.fault = None
    async with KubeClient(user_agent="test-driver") as kube:
        body = await kube.request("GET", kube.path("grid.threefold.io", "v1alpha1", "proposals", "default", "p"))
        await ballot.add_entry(kube, namespace="default", name="p", field="votes", same="farm",
                               entry=ballot.vote_on(body, owner, farm="farm1", approve=True))
        for i, ts in enumerate(range(START + 2400, START + 6 * 3600 + 2460, 2400)):
            grid_clock.set(ts)
            for n in ("n1", "n2") if i < 2 else ("n2",):  # n1 falls silent: its deployment moves
                await agent.send_report(kube, keys[n], namespace="default", node=n, ts=ts, uptime=ts - START,
                                        capacity=Resources(cru=8, mru=32, sru=1000))
            await asyncio.sleep(0.05)
    await eventually(lambda: obj(apiserver, "deployments", "web")["status"].get("movedFrom"), what="moved")
    await apiserver.patch(f"{NS}/deployments/web", json={"spec": {"resources": {"cru": 3}}},
                          headers={"Content-Type": "application/merge-patch+json"})
    await eventually(lambda: obj(apiserver, "deployments", "web")["status"]["reserved"]["cru"] == 3, what="resized")
    for plural, name in (("deployments", "web"), ("nodes", "n1"), ("nodes", "n2"), ("farms", "farm1")):
        await apiserver.delete(f"{NS}/{plural}/{name}")
        await eventually(lambda p=plural, n=name: obj(apiserver, p, n) is None, what=f"{name} deleted")


@pytest.fixture
async def peering_operator(apiserver, grid_clock, ledger_path):
    """The operator as the chart runs it with standby replicas: peering on, so its peering calls count too."""
    await apiserver.post("/apis/kopf.dev/v1/clusterkopfpeerings",
                         json={"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                               "metadata": {"name": "tfgrid-operator"}})
    op = OperatorThread(ledger_path, grid_clock, peering=True)
    op.start()
    yield op
    await op.stop()


async def test_chart_rbac_is_exactly_what_the_operator_calls(apiserver, peering_operator, grid_clock, ledger_path):
    apiserver.calls.clear()
    await exercise(apiserver, grid_clock, ledger_path)
    used = {(c.group, f"{c.resource}/{c.subresource}" if c.subresource else c.resource, c.verb)
            for c in apiserver.calls if c.agent.startswith(("kopf/", "tfgrid-operator"))}
    print(sorted({c.agent for c in apiserver.calls}))
    print(json.dumps(sorted(used)))
    granted = granted_rules("--set", "replicaCount=2", "--set", "ledger.postgres.enabled=true",
                            "--set", "ledger.postgres.existingSecret=pg")
    assert used - granted == set(), f"calls the chart's Role does not allow: {sorted(used - granted)}"
    assert granted - used == set(), f"granted but never used (not least privilege): {sorted(granted - used)}"


def test_namespaced_install_grants_the_same_rules_in_a_role():
    cluster = granted_rules()
    namespaced = granted_rules("--set", "watchNamespace=grid")
    assert cluster == namespaced
    out = subprocess.run([str(ROOT / "bin" / "helm"), "template", "t", str(ROOT / "charts" / "tfgrid-operator"),
                          "--set", "watchNamespace=grid"], capture_output=True, text=True, check=True).stdout
    role = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Role")
    assert role["metadata"]["namespace"] == "grid" and all("customresourcedefinitions" not in r["resources"]
                                                             for r in role["rules"])
