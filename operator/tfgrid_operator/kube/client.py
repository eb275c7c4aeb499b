"""A small async Kubernetes client for what kopf's handlers do not cover: the batched status loop
patching many objects, Events outside handlers, and the node agent renewing its Lease.

Credentials: in-cluster service account, else the current context of $KUBECONFIG (token or none).
"""

from __future__ import annotations

import json
import os
import pathlib
import ssl
from typing import Any

import aiohttp
import yaml

SA_DIR = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """No in-cluster service account and no usable kubeconfig."""


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def _config() -> tuple[str, dict[str, str], ssl.SSLContext | bool]:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (SA_DIR / "token").exists():
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
        return f"https://{host}:{port}", {"Authorization": f"Bearer {(SA_DIR / 'token').read_text().strip()}"}, ctx
    path = pathlib.Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]).expanduser()
    try:
        cfg = yaml.safe_load(path.read_text())
        current = cfg.get("current-context") or cfg["contexts"][0]["name"]
        context = next(c["context"] for c in cfg["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == context["cluster"])
    except (OSError, yaml.YAMLError, AttributeError, KeyError, IndexError, StopIteration, TypeError) as exc:
        raise ConfigError(f"no usable cluster in kubeconfig {path} (and not running in a cluster): "
                          f"{type(exc).__name__}: {exc}") from exc
    user = next((u["user"] for u in cfg.get("users", []) if u["name"] == context.get("user")), {})
    headers = {"Authorization": f"Bearer {user['token']}"} if user.get("token") else {}
    verify: ssl.SSLContext | bool = not cluster.get("insecure-skip-tls-verify")
    if cluster.get("certificate-authority"):
        verify = ssl.create_default_context(cafile=cluster["certificate-authority"])
    return cluster["server"].rstrip("/"), headers, verify


class KubeClient:
    def __init__(self, user_agent: str = "tfgrid-operator") -> None:
        self.server, self.headers, self.ssl = _config()
        self.headers = {**self.headers, "User-Agent": user_agent}  # the API server's audit log tells us apart
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self.headers)
        return self._session

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body)
        async with self._http().request(method, self.server + path, data=data, ssl=self.ssl,
                                        headers={"Content-Type": content_type}) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise ApiError(resp.status, text)
            return json.loads(text) if text else None

    @staticmethod
    def path(group: str, version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    async def patch_status(self, group: str, version: str, plural: str, namespace: str, name: str, status: Any) -> Any:
        path = self.path(group, version, plural, namespace, name) + "/status"
        return await self.request("PATCH", path, {"status": status}, "application/merge-patch+json")

    async def apply_lease(self, namespace: str, name: str, labels: dict[str, str], annotations: dict[str, str],
                          holder: str, renew_time: str) -> Any:
        path = self.path("coordination.k8s.io", "v1", "leases", namespace, name)
        body = {"metadata": {"labels": labels, "annotations": annotations},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 2460, "renewTime": renew_time}}
        try:
            return await self.request("PATCH", path, body, "application/merge-patch+json")
        except ApiError as err:
            if err.status != 404:
                raise
            body["metadata"]["name"] = name
            return await self.request("POST", self.path("coordination.k8s.io", "v1", "leases", namespace),
                                      {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **body})

    async def post_event(self, ref: dict[str, Any], *, type: str, reason: str, message: str, now: str) -> None:
        """A core/v1 Event about ``ref`` (used outside kopf handlers, e.g. by the batched loop)."""
        meta = ref.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {"apiVersion": ref.get("apiVersion"), "kind": ref.get("kind"), "name": meta.get("name"),
                               "namespace": namespace, "uid": meta.get("uid")},
            "reason": reason, "message": message[:1024], "type": type, "source": {"component": "tfgrid-operator"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "reportingComponent": "tfgrid-operator",
        }
        await self.request("POST", self.path("", "v1", "events", namespace), body)
