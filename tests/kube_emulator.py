"""The strict emulator as tests meet a cluster: over HTTPS with a test CA, authenticating every request, with
kubeconfigs written the way kind writes them (certificate-authority-data, client-certificate-data,
client-key-data). kmock's pytest plugin also loads its server class from this top-level module (see pyproject):
the plain-HTTP ``kmock`` fixture stays for the emulator's own strictness tests, which are about API semantics,
not transport.
"""

from __future__ import annotations

import base64
import pathlib
import ssl
from typing import Any

import trustme
import yaml
from kmock._internal.apps import Server

from tfgrid_operator.sandbox.emulator import StrictApiServer
from tfgrid_operator.sandbox.transport import Authn, serve

__all__ = ["Cluster", "StrictApiServer"]

OPERATOR_USER = "system:serviceaccount:tfgrid-system:tfgrid-operator"
NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Cluster:
    """One emulated API server: its CA, its TLS listener (restartable on the same port) and its users."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.admin = self.ca.issue_cert("kubernetes-admin", common_name="kubernetes-admin")
        self.token = "operator-token-1"
        self.token_file = folder / "token"  # rotatable: the server reads it on every request
        self.token_file.write_text("rotating-token-1")
        self.authn = Authn(tokens={self.token: OPERATOR_USER}, token_files={str(self.token_file): "rotating"})
        self.emulator = StrictApiServer(authn=self.authn, require_namespaces=True)
        self.server: Server | None = None
        self.port: int | None = None

    def server_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(ctx)
        self.ca.configure_trust(ctx)  # client certificates are verified against the same CA, as kind does
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        self.admin.configure_cert(ctx)
        return ctx

    async def start(self) -> StrictApiServer:
        await self.emulator.__aenter__()
        await self._listen()
        for ns in NAMESPACES:  # what every cluster has; others are created, or creating in them is a 404
            await self.namespace(ns)
        return self.emulator

    async def install_crds(self) -> None:
        """Our CRDs, as `kubectl apply -f crds/` installs them."""
        from tfgrid_operator.api import crds

        for crd in crds.ALL.values():
            resp = await self.emulator.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
            assert resp.status == 201, await resp.text()

    async def namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        resp = await self.emulator.post("/api/v1/namespaces", json=body)
        assert resp.status in (201, 409), await resp.text()

    async def _listen(self) -> None:
        self.server = serve(self.emulator, ssl_context=self.server_ssl(), client=self.admin_ssl(), port=self.port)
        await self.server.__aenter__()
        self.port = self.server.port

    async def restart(self) -> None:
        """Stop listening (every connection and watch drops) and listen again on the same port; the store, like
        etcd, survives."""
        assert self.server is not None
        self.emulator.drop_watches()  # end the open watch streams, or aiohttp waits a minute for them to finish
        await self.server.__aexit__(None, None, None)
        await self._listen()

    async def stop(self) -> None:
        if self.server is not None:
            self.emulator.drop_watches()
            await self.server.__aexit__(None, None, None)
            self.server = None
        await self.emulator.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(self, user: dict[str, Any], *, server: str | None = None, ca: bool = True, name: str = "kind-emu",
                   extra: dict[str, Any] | None = None) -> pathlib.Path:
        """A kubeconfig as kind writes it: the CA embedded, the credentials in the user entry."""
        cluster: dict[str, Any] = {"server": server or self.url}
        if ca:
            cluster["certificate-authority-data"] = _b64(self.ca.cert_pem.bytes())
        cluster.update(extra or {})
        path = self.folder / f"kubeconfig-{name}"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": name,
            "clusters": [{"name": name, "cluster": cluster}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "users": [{"name": name, "user": user}],
        }))
        return path

    def cert_user(self, common_name: str = "kind-user") -> dict[str, str]:
        cert = self.ca.issue_cert(common_name, common_name=common_name)
        return {"client-certificate-data": _b64(cert.cert_chain_pems[0].bytes()),
                "client-key-data": _b64(cert.private_key_pem.bytes())}

    def token_user(self) -> dict[str, str]:
        return {"token": self.token}
