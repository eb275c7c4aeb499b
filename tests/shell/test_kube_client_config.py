"""Logging in like kubectl: every credential kind the `kubernetes` package resolves, against the emulator over
HTTPS with authentication (tests/kube_emulator.py), and the one-line causes when the cluster cannot be used."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sys

import pytest
import yaml

from kube_emulator import Cluster
from tfgrid_operator.api import crds
from tfgrid_operator.kube import client

PROBE = "/apis/grid.threefold.io/v1alpha1"


async def login_works(c: Cluster, monkeypatch, kubeconfig, user: str) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    c.emulator.users.clear()
    async with client.KubeClient() as kube:
        await kube.probe()
        listed = await kube.request("GET", "/apis/grid.threefold.io/v1alpha1/namespaces/a/farms")
    assert listed["items"] == []
    assert set(c.emulator.users) == {user}


async def test_client_certificate_data_as_kind_writes_it(tls, monkeypatch):
    await login_works(tls, monkeypatch, tls.kubeconfig(tls.cert_user("kind-admin")), "kind-admin")


async def test_client_certificate_and_ca_files(tls, monkeypatch, tmp_path):
    cert = tls.ca.issue_cert("file-user", common_name="file-user")
    (tmp_path / "ca.crt").write_bytes(tls.ca.cert_pem.bytes())
    (tmp_path / "user.crt").write_bytes(cert.cert_chain_pems[0].bytes())
    (tmp_path / "user.key").write_bytes(cert.private_key_pem.bytes())
    kubeconfig = tls.kubeconfig({"client-certificate": "user.crt", "client-key": "user.key"}, ca=False,
                                extra={"certificate-authority": "ca.crt"})  # relative to the kubeconfig, as kubectl reads
    await login_works(tls, monkeypatch, kubeconfig, "file-user")


async def test_bearer_token(tls, monkeypatch):
    await login_works(tls, monkeypatch, tls.kubeconfig(tls.token_user()), "system:serviceaccount:tfgrid-system:tfgrid-operator")


async def test_a_token_file_that_rotates_while_running(tls, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tls.kubeconfig({"tokenFile": str(tls.token_file)})))
    async with client.KubeClient() as kube:
        await kube.probe()
        tls.token_file.write_text("rotating-token-2")  # the server now accepts only the new token
        await kube.probe()  # the old one gets a 401; the client resolves its credentials again and retries once
        assert kube.login.authorization() == "Bearer rotating-token-2"
        tls.token_file.write_text("")  # revoked: no token at all is a 401 that stays one
        with pytest.raises(client.ClusterUnusable, match=r"unauthorised \(401\)"):
            await kube.probe()


async def test_exec_plugin(tls, monkeypatch, tmp_path):
    plugin = tmp_path / "plugin.py"  # what `aws eks get-token` or `gke-gcloud-auth-plugin` do, reading the token file
    plugin.write_text(
        "import json, pathlib, sys\n"
        f"token = pathlib.Path({str(tls.token_file)!r}).read_text().strip()\n"
        "json.dump({'apiVersion': 'client.authentication.k8s.io/v1beta1', 'kind': 'ExecCredential',"
        " 'status': {'token': token}}, sys.stdout)\n")
    kubeconfig = tls.kubeconfig({"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                          "command": sys.executable, "args": [str(plugin)]}})
    await login_works(tls, monkeypatch, kubeconfig, "rotating")
    tls.token_file.write_text("rotating-token-3")
    async with client.KubeClient() as kube:
        await kube.probe()
        tls.token_file.write_text("rotating-token-4")
        await kube.probe()  # 401, the plugin runs again, the new token works


async def test_insecure_skip_tls_verify(tls, monkeypatch):
    kubeconfig = tls.kubeconfig(tls.token_user(), ca=False, extra={"insecure-skip-tls-verify": True})
    await login_works(tls, monkeypatch, kubeconfig, "system:serviceaccount:tfgrid-system:tfgrid-operator")


async def test_several_kubeconfig_files_and_a_named_context(tls, monkeypatch, tmp_path):
    good = yaml.safe_load(tls.kubeconfig(tls.cert_user("second-file"), name="good").read_text())
    first = tmp_path / "first"
    first.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "broken",
        "clusters": [{"name": "broken", "cluster": {"server": "https://no-such-host.invalid"}}],
        "contexts": [{"name": "broken", "context": {"cluster": "broken", "user": "nobody"}}],
        "users": [{"name": "nobody", "user": {}}]}))
    second = tmp_path / "second"
    second.write_text(yaml.safe_dump({**good, "current-context": "good"}))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")  # merged as kubectl does: the first file's current-context
    with pytest.raises(client.ClusterUnusable, match="DNS"):
        async with client.KubeClient() as kube:
            await kube.probe()
    client.use_context("good")
    try:
        await login_works(tls, monkeypatch, f"{first}:{second}", "second-file")
    finally:
        client.use_context(None)
    with pytest.raises(client.ConfigError, match='context "missing"'):
        client.KubeClient(context="missing")


async def test_in_cluster_service_account_with_a_rotating_token(tls, monkeypatch, tmp_path):
    from kubernetes.config import incluster_config

    (tmp_path / "ca.crt").write_bytes(tls.ca.cert_pem.bytes())
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tls.token_file))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(tls.port))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))  # in a pod the service account wins
    async with client.KubeClient() as kube:
        assert kube.login.source == "the in-cluster service account"
        await kube.probe()
        tls.token_file.write_text("rotating-token-5")  # the kubelet rotates projected tokens
        await kube.probe()
    assert set(tls.emulator.users) >= {"rotating"}


# ---------------------------------------------------------------- what cannot be used, and why


def closed_port() -> socket.socket:
    """A port bound but not listening: connecting is refused, and nothing else can take it meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


async def unusable(monkeypatch, kubeconfig) -> str:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(client.ClusterUnusable) as info:
        async with client.KubeClient() as kube:
            await kube.probe()
    text = str(info.value)
    assert "\n" not in text and str(kubeconfig) in text
    return text


async def test_each_cause_is_named(tls, monkeypatch):
    (tls.folder / "other").mkdir()
    other = Cluster(tls.folder / "other")  # another cluster's CA
    untrusted = tls.kubeconfig(tls.token_user(), name="untrusted", ca=False,
                               extra={"certificate-authority-data": base64.b64encode(other.ca.cert_pem.bytes()).decode()})
    assert "TLS: the server's certificate is not trusted" in await unusable(monkeypatch, untrusted)
    assert "unauthorised (401)" in await unusable(monkeypatch, tls.kubeconfig({"token": "wrong"}, name="bad-token"))
    assert "unauthorised (401)" in await unusable(monkeypatch, tls.kubeconfig({}, name="anonymous"))
    with closed_port() as s:
        refused = tls.kubeconfig({}, server=f"https://127.0.0.1:{s.getsockname()[1]}", name="refused")
        assert "connection refused" in await unusable(monkeypatch, refused)
    dns = tls.kubeconfig({}, server="https://no-such-host.invalid:6443", name="dns")
    assert "DNS" in await unusable(monkeypatch, dns)


async def test_missing_crds_are_named(tls, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tls.kubeconfig(tls.token_user())))
    async with client.KubeClient() as kube:
        with pytest.raises(client.ClusterUnusable, match="CRDs are not installed"):
            await kube.probe("/apis/nothing.example.com/v1")


@pytest.mark.parametrize("text", ["", "not: [a, kubeconfig", "apiVersion: v1\nkind: Config\ncontexts: []\n",
                                  json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "x",
                                              "contexts": [{"name": "x", "context": {"cluster": "y", "user": "z"}}]})])
def test_unusable_kubeconfig_is_a_clear_error(tmp_path, monkeypatch, text):
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(client.ConfigError, match="no usable cluster in kubeconfig"):
        client.KubeClient()


def test_missing_kubeconfig_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(client.ConfigError, match="absent"):
        client.KubeClient()


def test_no_hand_written_kubeconfig_parser_remains():
    import inspect

    source = inspect.getsource(client)
    for key in ("certificate-authority", "client-certificate", "client-key", "tokenFile", "insecure-skip-tls-verify"):
        assert f'"{key}"' not in source and f"'{key}'" not in source  # credentials are the kubernetes package's


async def test_wait_for_cluster_retries_a_server_that_is_not_up_yet_with_backoff(tmp_path, monkeypatch):
    """In a pod the API server may still be starting: refused is retried (each wait twice the last, one line
    each), within the budget; the injected sleep brings the server up on the port that refused."""
    from tfgrid_operator.cli.operate import wait_for_cluster

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    c = Cluster(tmp_path)
    reserved = closed_port()
    c.port = reserved.getsockname()[1]
    monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig(c.token_user())))
    waits: list[float] = []
    lines: list[str] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # the server comes up during the third wait
            reserved.close()
            emu = await c.start()
            for crd in crds.ALL.values():
                await emu.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)

    try:
        await wait_for_cluster(None, 60, sleep=sleep, echo=lines.append)
    finally:
        reserved.close()
        if c.server is not None:
            await c.stop()
    assert waits == [1, 2, 4] and len(lines) == 3 and all("connection refused" in line for line in lines)
    # the budget bounds it, and what waiting cannot fix (401) is not waited for
    with closed_port() as s:
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig({}, server=f"https://127.0.0.1:{s.getsockname()[1]}")))
        waits.clear()
        with pytest.raises(client.ClusterUnusable, match="connection refused"):
            await wait_for_cluster(None, 3, sleep=lambda s: asyncio.sleep(0, waits.append(s)), echo=lines.append)
        assert waits == [1, 2]
