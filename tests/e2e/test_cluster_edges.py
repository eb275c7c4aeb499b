"""What a real cluster does that a lenient fake would not: `run` fails closed (one line, non-zero, no ledger
touched) when the cluster cannot be used; a token rotates under a running operator; objects live in several
namespaces and a namespace is deleted with objects in it; the API server restarts under the operator."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import sys

import pytest

from e2e.conftest import condition
from e2e.objects import deployment, farm, node, twin_account
from kube_emulator import Cluster
from polling import eventually

pytestmark = pytest.mark.e2e
API = "grid.threefold.io/v1alpha1"


async def create(api, *bodies, namespace: str) -> None:
    """Create ``bodies`` in ``namespace`` (and the namespace first, as kubectl create namespace would)."""
    await api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for body in bodies:
        body = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
        resp = await api.post(f"/apis/{API}/namespaces/{namespace}/{body['kind'].lower()}s", json=body)
        assert resp.status == 201, await resp.text()


async def payer_in(ledger, api, *namespaces: str) -> None:
    """The twin account "payer", funded, with its grant for each of ``namespaces`` (created first)."""
    for ns in namespaces:
        await api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        await twin_account(ledger, api, "payer", namespace=ns)
    await ledger.fund(name="payer", amount=10**10, now=0)


def read(api, plural: str, name: str, namespace: str):
    return api.read(f"{API}/{plural}", namespace, name)


async def ready(api, plural: str, name: str, *, namespace: str, timeout: float = 20.0):
    return await eventually(lambda: condition(read(api, plural, name, namespace))["status"] == "True"
                            and read(api, plural, name, namespace), timeout=timeout,
                            what=f"{plural} {namespace}/{name} Ready")


def env_for(kubeconfig, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFGRID_", "KUBERNETES_SERVICE"))}
    return {**env, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": os.pathsep.join(sys.path), **extra}


async def run_fails(kubeconfig, tmp_path, *args: str) -> str:
    """`tfgrid-operator run` against an unusable cluster: non-zero, one line on stderr, the ledger untouched —
    both the one on the command line and the one in the environment."""
    named, from_env = tmp_path / "named.db", tmp_path / "env.db"
    named.write_bytes(b"a ledger file that must stay byte-identical")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tfgrid_operator", "run", f"--ledger-url=sqlite:///{named}", *args,
        env=env_for(kubeconfig, TFGRID_LEDGER_URL=f"sqlite:///{from_env}"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot use the cluster at "), err.decode()
    assert named.read_bytes() == b"a ledger file that must stay byte-identical" and not from_env.exists()
    assert b"sandbox" not in out + err
    return lines[0]


async def test_run_fails_closed_with_one_line_naming_the_cause(cluster, tmp_path):
    (tmp_path / "other").mkdir()
    stranger = Cluster(tmp_path / "other")  # a CA this cluster's certificate does not come from
    untrusted = cluster.kubeconfig(cluster.token_user(), name="untrusted", ca=False, extra={
        "certificate-authority-data": base64.b64encode(stranger.ca.cert_pem.bytes()).decode()})
    line = await run_fails(untrusted, tmp_path)
    assert "TLS: the server's certificate is not trusted" in line and str(untrusted) in line
    assert 'context "untrusted"' in line
    assert "unauthorised (401)" in await run_fails(cluster.kubeconfig({"token": "stolen"}, name="wrong"), tmp_path)
    with socket.socket() as s:  # bound, not listening: refused, and no one else can take the port meanwhile
        s.bind(("127.0.0.1", 0))
        down = cluster.kubeconfig({}, server=f"https://127.0.0.1:{s.getsockname()[1]}", name="down")
        assert "connection refused" in await run_fails(down, tmp_path)
    # --context picks another context of the same kubeconfig; a context that does not exist is named
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tfgrid_operator", "run", "--context", "nope", env=env_for(untrusted),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and err.decode().count("\n") == 1 and 'context "nope"' in err.decode()


async def test_the_cli_tools_fail_with_the_same_line(cluster, tmp_path):
    key = tmp_path / "k.key"
    env = env_for(cluster.kubeconfig({"token": "stolen"}, name="wrong"))
    for args in (["keygen", str(key)],
                 ["node-agent", "--node", "n1", "--key-file", str(key), "--count", "1"],
                 ["vote", "--proposal", "p", "--farm", "f", "--yes", "--key-file", str(key)],
                 ["council", "veto", "--proposal", "p", "--key-file", str(key)]):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tfgrid_operator", *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        if args[0] == "keygen":
            assert proc.returncode == 0
            continue
        text = err.decode()
        assert proc.returncode == 1 and text.count("\n") == 1 and "unauthorised (401)" in text, (args, text)
        assert "Traceback" not in text


async def test_run_logs_in_like_kubectl_and_survives_a_token_rotation(cluster, tmp_path):
    """The real entry point with a tokenFile kubeconfig: kopf's login and our client read the same file; the
    token is rotated while it runs (the old one is refused from then on) and work in a second namespace goes on."""
    kubeconfig = cluster.kubeconfig({"tokenFile": str(cluster.token_file)}, name="rotating")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tfgrid_operator", "run", "--liveness=http://127.0.0.1:0/healthz",
        env=env_for(kubeconfig, TFGRID_LEDGER_URL=f"sqlite:///{tmp_path / 'ledger.db'}", TFGRID_METRICS_PORT="0",
                    TFGRID_TICK_S="0.2"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await create(cluster.emulator, farm("f1"), namespace="team-a")
        await ready(cluster.emulator, "farms", "f1", timeout=60, namespace="team-a")
        cluster.token_file.write_text("rotating-token-2")
        await create(cluster.emulator, farm("f2"), namespace="team-b")
        await ready(cluster.emulator, "farms", "f2", timeout=60, namespace="team-b")
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert set(cluster.emulator.users) - {"kubernetes-admin"} == {"rotating"}  # the operator: only the file's token


async def test_deleting_a_namespace_with_objects_in_it(apiserver, operator, ledger, caplog):
    """Two namespaces with farms, nodes and deployments; one namespace is deleted with everything in it. Its
    objects are closed on the ledger (the farm waits for its node), the namespace goes, the other one is untouched;
    Events refused into the terminating namespace (403) are not errors, nor is the farm's wait for its node."""
    await payer_in(ledger, apiserver, "team-a", "team-b")
    for ns in ("team-a", "team-b"):
        # farms and nodes are grid-wide names on the ledger; deployments are per namespace
        await create(apiserver, farm(f"f-{ns}"), node(f"n-{ns}", f"f-{ns}"),
                     deployment("d", payer="payer", public_ips=0, node=f"n-{ns}"), namespace=ns)
        await ready(apiserver, "deployments", "d", namespace=ns)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert (await apiserver.delete("/api/v1/namespaces/team-a")).status == 200
        await eventually(lambda: apiserver.read("namespaces", None, "team-a") is None, timeout=30,
                         what="the namespace gone with its objects")
    assert (await ledger.observe_contract(key="team-a/d")).state == "Deleted"
    assert (await ledger.observe_contract(key="team-b/d")).state == "Created"
    assert condition(read(apiserver, "farms", "f-team-b", "team-b"))["status"] == "True"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    refused = [r.getMessage() for r in caplog.records if "403" in r.getMessage()]
    assert len(refused) <= 3, refused  # said once per object, not retried nine times


async def test_a_node_carrying_another_tenants_deployment_outlives_its_namespace_until_that_goes(apiserver, operator,
                                                                                              ledger):
    """team-a's namespace is deleted while its Node carries a Deployment of team-b: the Node is not closed under it
    (DeleteBlocked; the namespace waits), and team-b's delete of that Deployment finishes the Node, then its Farm."""
    await payer_in(ledger, apiserver, "team-b")
    await create(apiserver, farm("fa"), node("na", "fa"), namespace="team-a")
    await ready(apiserver, "nodes", "na", namespace="team-a")
    await create(apiserver, deployment("d", payer="payer", public_ips=0, node="na"), namespace="team-b")
    await ready(apiserver, "deployments", "d", namespace="team-b")
    assert (await apiserver.delete("/api/v1/namespaces/team-a")).status == 200
    await eventually(lambda: condition(read(apiserver, "nodes", "na", "team-a"))["reason"] == "DeleteBlocked",
                     what="the node waits for team-b's deployment")
    assert (await ledger.observe_node(name="na")).state == "Active"
    assert (await ledger.observe_contract(key="team-b/d")).state == "Created"
    assert apiserver.read("namespaces", None, "team-a") is not None
    calls0 = len(apiserver.calls)
    resp = await apiserver.delete("/apis/grid.threefold.io/v1alpha1/namespaces/team-b/deployments/d")
    assert resp.status == 200, await resp.text()
    await eventually(lambda: apiserver.read("namespaces", None, "team-a") is None, timeout=30,
                     what="the namespace gone with its node and farm")
    node_writes = [c.agent.split("/")[0] for c in apiserver.calls[calls0:]
                   if c.verb == "patch" and c.resource == "nodes" and not c.subresource]
    assert node_writes == ["tfgrid-operator"], node_writes  # finished by the deployment's close, not a kopf retry
    assert (await ledger.observe_contract(key="team-b/d")).state == "Deleted"
    assert (await ledger.observe_node(name="na")).state == "Closed"
    assert (await ledger.observe_farm(name="fa")).state == "Closed"


async def test_the_api_server_restarts_under_a_running_operator(cluster, operator, ledger):
    api = cluster.emulator
    await payer_in(ledger, api, "team-b")
    await create(api, farm("f"), node("n", "f"), namespace="team-a")
    await ready(api, "nodes", "n", namespace="team-a")
    await cluster.restart()  # every connection and watch drops; the store (etcd) stays
    await create(api, farm("g"), node("m", "g"), deployment("d", payer="payer", public_ips=0), namespace="team-b")
    await ready(api, "deployments", "d", namespace="team-b", timeout=60)
    assert (await ledger.observe_contract(key="team-b/d")).state == "Created"


async def test_observed_generation_stays_behind_until_the_edit_is_applied(apiserver, operator, ledger):
    """observedGeneration (top-level and each condition's) means "a reconcile of this generation finished": an
    edit that needs capacity that is not there keeps it at the generation the ledger holds, through any number
    of loop ticks, until room appears and the resize is applied."""
    await payer_in(ledger, apiserver, "team-a")
    await create(apiserver, farm("fa"), node("na", "fa"), namespace="team-a")  # 8 cores
    await create(apiserver, deployment("grow", payer="payer", public_ips=0, node="na"),
                 deployment("other", payer="payer", public_ips=0, node="na", cru=4), namespace="team-a")
    await ready(apiserver, "deployments", "grow", namespace="team-a")
    await ready(apiserver, "deployments", "other", namespace="team-a")
    url = f"/apis/{API}/namespaces/team-a/deployments"
    seen: list[tuple[int, int]] = []  # (observedGeneration, reserved cru) of every status read meanwhile

    def sample(reason: str):
        d = read(apiserver, "deployments", "grow", "team-a")
        status = d.get("status") or {}
        seen.append((status.get("observedGeneration"), status.get("reserved", {}).get("cru")))
        return condition(d).get("reason") == reason and d

    resp = await apiserver.patch(f"{url}/grow", json={"spec": {"resources": {"cru": 6}}},  # 6 + 4 > 8 cores
                                 headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status == 200
    d = await eventually(lambda: sample("ResizeBlocked"), what="ResizeBlocked")
    runs = _loop_runs(operator)
    await eventually(lambda: _loop_runs(operator) >= runs + 5 and sample("ResizeBlocked"), what="five loop ticks")
    d = read(apiserver, "deployments", "grow", "team-a")
    assert d["metadata"]["generation"] == 2
    assert d["status"]["observedGeneration"] == 1 and d["status"]["reserved"]["cru"] == 2
    assert {c["type"]: c.get("observedGeneration") for c in d["status"]["conditions"]} == {"Ready": 1, "Synced": 1}
    assert (await ledger.observe_contract(key="team-a/grow")).resources.cru == 2
    assert (await apiserver.delete(f"{url}/other")).status == 200  # room appears
    d = await eventually(lambda: sample("Available"), timeout=30, what="the resize applied")
    assert d["status"]["observedGeneration"] == 2 and d["status"]["reserved"]["cru"] == 6
    assert all(c["observedGeneration"] == 2 for c in d["status"]["conditions"])
    assert (await ledger.observe_contract(key="team-a/grow")).resources.cru == 6
    assert all(cru == 6 for gen, cru in seen if gen == 2), seen  # generation 2 was never claimed before it was applied


def _loop_runs(op) -> float:
    """How many times the batched loop's refresh has run (its duration histogram's count)."""
    for metric in op.rt.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "controller_runtime_reconcile_time_seconds_count" and sample.labels.get("controller") == "periodic":
                return sample.value
    return 0.0


async def test_a_namespace_that_does_not_exist_is_a_404(cluster):
    body = {**farm("nowhere"), "metadata": {"name": "nowhere", "namespace": "no-such-ns"}}
    resp = await cluster.emulator.post(f"/apis/{API}/namespaces/no-such-ns/farms", json=body)
    assert resp.status == 404 and (await resp.json())["message"] == 'namespaces "no-such-ns" not found'
