"""`quickstart`: its keys, ledger account and manifests make a working grid. Applied to the real operator on
the local API emulator, with the node agents run by the `node-agent` command, every object becomes Ready."""

from __future__ import annotations

import asyncio
import base64
import json
import stat

import yaml
from click.testing import CliRunner

import ledger_setup
from tfgrid_operator import backend, cli, clock, metrics, runtime
from tfgrid_operator.domain import identity
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.sandbox import local
from tfgrid_operator.settings import Settings

NS = "grid-demo"


def _quickstart(tmp, *extra: str):
    return CliRunner().invoke(cli.main, ["quickstart", "--namespace", NS, "--out", str(tmp / "qs"),
                                         "--ledger-url", f"sqlite:///{tmp / 'l.db'}", *extra])


def test_keys_are_private_the_payer_is_funded_and_nothing_is_overwritten(tmp_path):
    out = _quickstart(tmp_path)
    assert out.exit_code == 0, out.output
    qs = tmp_path / "qs"
    for f in [*(qs / "keys").iterdir(), qs / "secrets.yaml"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((qs / "keys").stat().st_mode) == 0o700
    twin = identity.KeyPair.from_text((qs / "keys" / "twin.key").read_text())
    secret = next(yaml.safe_load_all((qs / "secrets.yaml").read_text()))
    assert identity.KeyPair.from_text(base64.b64decode(secret["data"]["twinKey"]).decode()).public_key == twin.public_key
    farm = yaml.safe_load((qs / "farm.yaml").read_text())
    farmer = identity.KeyPair.from_text((qs / "keys" / "farm-freefarm.key").read_text())
    assert farm["spec"]["ownerKey"] == farmer.public_key and farm["metadata"]["namespace"] == NS
    shown = json.loads(CliRunner().invoke(cli.main, ["ledger", "--ledger-url", f"sqlite:///{tmp_path / 'l.db'}",
                                                     "show", "--json"]).output)
    assert {"name": "alice", "balance": 1000 * 10**7} in shown["accounts"]
    again = _quickstart(tmp_path)
    assert again.exit_code == 1 and "is not empty: quickstart never overwrites keys" in again.output
    (tmp_path / "other").mkdir()
    same_payer = CliRunner().invoke(cli.main, ["quickstart", "-n", NS, "--out", str(tmp_path / "other" / "qs"),
                                               "--ledger-url", f"sqlite:///{tmp_path / 'l.db'}"])
    assert same_payer.exit_code == 1 and "account 'alice' exists on the ledger" in same_payer.output
    bad = CliRunner().invoke(cli.main, ["quickstart", "-n", "Bad_NS", "--out", str(tmp_path / "x"),
                                        "--ledger-url", f"sqlite:///{tmp_path / 'l.db'}"])
    assert bad.exit_code == 1 and "is not a namespace name" in bad.output
    few = CliRunner().invoke(cli.main, ["quickstart", "-n", NS, "--out", str(tmp_path / "y"), "--farms", "5",
                                        "--nodes", "3", "--ledger-url", f"sqlite:///{tmp_path / 'l.db'}"])
    assert few.exit_code == 1 and "every farm needs a node" in few.output


class ShiftedClock:
    """Wall time (the node agents' reports carry it) that the test can move forward."""

    def __init__(self) -> None:
        self.offset = 0

    def now(self) -> int:
        return clock.SystemClock().now() + self.offset


async def _ready(kube: KubeClient, plural: str, name: str, also: str = "", state: str = "", ayes: int = 0) -> dict:
    """The object once its Ready condition is True (and its status carries ``also``, is in ``state``, counts
    ``ayes``); bounded polling."""
    path = kube.path(runtime.GROUP, runtime.VERSION, plural, NS, name)
    for _ in range(600):
        obj = await kube.request("GET", path)
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        if conds.get("Ready", {}).get("status") == "True" and (not also or also in obj["status"]) \
                and (not state or obj["status"].get("state") == state) and obj["status"].get("ayes", 0) >= ayes:
            return obj
        await asyncio.sleep(0.05)
    raise AssertionError(f"{plural}/{name} not Ready: {obj.get('status')}")


async def test_quickstart_output_applied_makes_every_object_ready_and_its_proposal_executes(tmp_path):
    out = await asyncio.to_thread(_quickstart, tmp_path, "--farms", "5", "--nodes", "5")
    assert out.exit_code == 0, out.output
    qs = tmp_path / "qs"
    values = yaml.safe_load((qs / "values-quickstart.yaml").read_text())
    nodes = [f"node{i}" for i in range(1, 6)]
    assert values["nodeAgents"] == {"enabled": True, "namespace": NS, "nodes": nodes, "keysSecret": "tfgrid-node-keys"}
    grid_clock = ShiftedClock()
    url = f"sqlite:///{tmp_path / 'l.db'}"
    # 6-hour minting periods, the next one starting 10 minutes from now: the nodes' agents hold their capacity
    # through it, and once it is minted each farm weighs that capacity in votes (§5)
    period_s = 6 * 3600
    cfg = backend.LedgerConfig(minting_epoch=grid_clock.now() + 600 - period_s, minting_period_s=period_s)

    async def make_runtime() -> runtime.Runtime:
        settings = Settings(tick_s=0.2, metrics_port=0,
                            council_keys=",".join(values["operator"]["councilKeys"]))
        return runtime.Runtime(settings=settings, clock=grid_clock, ledger=await backend.open_backend(url, cfg),
                               kube=KubeClient(), metrics=metrics.Metrics(), retry_delay_s=0.05)

    async with local.local_api(record_requests=False), local.operator(make_runtime), KubeClient() as kube:
        docs = {f: [d for d in yaml.safe_load_all((qs / f).read_text()) if d]
                for f in ("secrets.yaml", "farm.yaml", "nodes.yaml", "deployment.yaml", "proposal.yaml")}
        for secret in docs["secrets.yaml"]:
            await kube.request("POST", f"/api/v1/namespaces/{NS}/secrets", secret)
        for f, plural in (("farm.yaml", "farms"), ("nodes.yaml", "nodes")):
            for d in docs[f]:
                await kube.request("POST", kube.path(runtime.GROUP, runtime.VERSION, plural, NS), d)
        for d in docs["nodes.yaml"]:  # the chart's agents run exactly this command, once per Node
            node = d["metadata"]["name"]
            agent = await asyncio.to_thread(CliRunner().invoke, cli.main, [
                "node-agent", "--node", node, "--namespace", NS, "--key-file", str(qs / "keys" / f"{node}.key"),
                "--count", "1", "--interval", "0"])
            assert agent.exit_code == 0, agent.output
        for f, plural in (("deployment.yaml", "deployments"), ("proposal.yaml", "proposals")):
            for d in docs[f]:
                await kube.request("POST", kube.path(runtime.GROUP, runtime.VERSION, plural, NS), d)
        for d in docs["farm.yaml"]:
            await _ready(kube, "farms", d["metadata"]["name"])
        for d in docs["nodes.yaml"]:
            await _ready(kube, "nodes", d["metadata"]["name"], also="lastReportAt")  # the agent's report was accepted
            # and its capacity report too: the operator records it after the uptime report, so lastReportAt can
            # show before it; a period minted before it was recorded would find nothing attested (NotAttested),
            # and the farm would weigh nothing in the vote below
            await _ready(kube, "nodes", d["metadata"]["name"], also="attested")
        web = await _ready(kube, "deployments", "web")
        assert web["status"]["contractState"] == "Created"
        proposal = await _ready(kube, "proposals", "cheaper-compute")  # the council signature is valid for NS
        assert proposal["status"]["state"] == "Open"
        # a farm weighs the capacity its nodes held over the last minted period (§5): the agents report through
        # the next one (signed with the node keys quickstart made), and it is minted
        lg = await backend.open_backend(url, cfg)
        try:
            keys = {n: identity.KeyPair.from_text((qs / "keys" / f"{n}.key").read_text()) for n in nodes}
            await ledger_setup.held_a_period(lg, keys, period=1)
        finally:
            await lg.close()
        for d in docs["farm.yaml"]:  # every farm votes yes with its owner key, through the vote command
            farm = d["metadata"]["name"]
            voted = await asyncio.to_thread(CliRunner().invoke, cli.main, [
                "vote", "--proposal", "cheaper-compute", "--namespace", NS, "--farm", farm, "--yes",
                "--key-file", str(qs / "keys" / f"farm-{farm}.key")])
            assert voted.exit_code == 0, voted.output
        await _ready(kube, "proposals", "cheaper-compute", ayes=5)  # every vote counted before the deadline
        grid_clock.offset = 169 * 3600  # past the 168-hour deadline
        executed = await _ready(kube, "proposals", "cheaper-compute", state="Executed")
        assert executed["status"]["ayes"] == 5 and executed["status"]["nays"] == 0
