"""A small async Kubernetes client for what kopf's handlers do not cover: the batched status loop
patching many objects, Events outside handlers, the node agent renewing its Lease, votes and vetoes.

Credentials are never parsed here: the ``kubernetes`` package resolves them, exactly as for kopf's own
login (handlers/startup.py builds kopf's ConnectionInfo from the same ``load()``). In a pod: the service
account (its token file re-read when it rotates). Else ``$KUBECONFIG`` (several files merged, as kubectl
does) or ``~/.kube/config``, the current context or the one ``use_context()`` names: embedded or file CA,
client certificates (data or files), bearer tokens and ``tokenFile``, exec plugins, auth providers,
``insecure-skip-tls-verify``. A 401 re-resolves the credentials once (a rotated token file, an expired exec
token) before it is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kubernetes.client
import kubernetes.config
from kubernetes.config import incluster_config, kube_config

from tfgrid_operator.kube import jsonwire

LIST_CHUNK = 500  # objects per chunk of a LIST (kopf's initial listing too: handlers/startup.py)
_context: str | None = None  # the context `--context` names; None: the kubeconfig's current context


def use_context(name: str | None) -> None:
    """The kubeconfig context every client of this process (and kopf's login) uses from now on."""
    global _context
    _context = name or None


class ConfigError(Exception):
    """No in-cluster service account and no usable kubeconfig."""


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def in_cluster() -> bool:
    return bool(os.environ.get(incluster_config.SERVICE_HOST_ENV_NAME)) and \
        os.path.isfile(incluster_config.SERVICE_TOKEN_FILENAME)


def kubeconfig_paths() -> str:
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


@dataclasses.dataclass
class Login:
    """Where the credentials came from (for one-line errors) and the Configuration they resolved to."""

    source: str  # e.g. 'context "kind-tfgrid" in kubeconfig /home/me/.kube/config' or 'the in-cluster service account'
    config: kubernetes.client.Configuration
    context: str | None = None

    @property
    def server(self) -> str:
        return str(self.config.host).rstrip("/")

    def authorization(self) -> str | None:
        """The Authorization header's value; the package's refresh hook runs first (in-cluster token rotation,
        exec plugin and auth-provider expiry)."""
        header = self.config.get_api_key_with_prefix("BearerToken") or self.config.get_api_key_with_prefix("authorization")
        return header.strip() if header else None

    def ssl_context(self) -> ssl.SSLContext | bool:
        cfg = self.config
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def load(context: str | None = None) -> Login:
    """The credentials the ``kubernetes`` package resolves: in-cluster unless a context is named, else the
    kubeconfig. Every failure is a ConfigError naming where it looked."""
    context = context if context is not None else _context
    cfg = kubernetes.client.Configuration()
    if context is None and in_cluster():
        try:
            kubernetes.config.load_incluster_config(client_configuration=cfg, try_refresh_token=True)
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise ConfigError(f"the in-cluster service account is not usable: {exc}") from exc
        return Login("the in-cluster service account", cfg)
    paths = kubeconfig_paths()
    where = f"kubeconfig {paths}" + (f' (context "{context}")' if context else "")
    if not any(os.path.isfile(p) for p in paths.split(os.pathsep) if p):
        raise ConfigError(f"no usable cluster in {where} (and not running in a cluster): no such file")
    try:
        context = context or _first_current_context(paths)
        merged = kube_config.KubeConfigMerger(paths).config  # several files, as kubectl merges them
        if merged is None:
            raise kubernetes.config.ConfigException("no configuration found")
        # no base path: relative file names resolve against the kubeconfig file that names them, as in kubectl
        loader = kube_config.KubeConfigLoader(config_dict=merged, config_base_path=None, active_context=context)
        loader.load_and_set(cfg)
        name = loader.current_context["name"]
    except Exception as exc:  # the package raises ConfigException, but also KeyError/TypeError/YAML errors on junk
        raise ConfigError(f"no usable cluster in {where} (and not running in a cluster): "
                          f"{type(exc).__name__}: {exc}") from exc
    if not cfg.host or cfg.host == kubernetes.client.Configuration().host:
        raise ConfigError(f"no usable cluster in {where}: the context names no server")
    return Login(f'context "{name}" in kubeconfig {paths}', cfg, name)


def _first_current_context(paths: str) -> str | None:
    """kubectl's rule for several files: the first file that sets current-context decides (the package's merger
    lets the last one win). Only that key is read here; everything else is the package's."""
    import yaml

    for path in filter(None, paths.split(os.pathsep)):
        try:
            with open(os.path.expanduser(path)) as f:
                doc = yaml.safe_load(f)
        except OSError:
            continue
        if isinstance(doc, dict) and doc.get("current-context"):
            return str(doc["current-context"])
    return None


def explain(exc: BaseException) -> str:
    """The cause of a failed call in a few words: TLS, 401/403, refused, DNS, timeout."""
    if isinstance(exc, ApiError):
        return {401: "unauthorised (401): the server rejected the credentials",
                403: "forbidden (403): the credentials may not do this"}.get(exc.status, str(exc))
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS: the server's certificate is not trusted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError | ssl.SSLError):
        return f"TLS: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS: cannot resolve the server's host name ({exc.os_error})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect: {exc.os_error}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def transient(exc: BaseException) -> bool:
    """Failures a server that is starting (or restarting) gives: worth waiting for. TLS and 401/403 are not."""
    if isinstance(exc, ApiError):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
        return False
    return isinstance(exc, aiohttp.ClientConnectionError | asyncio.TimeoutError | TimeoutError)


class ClusterUnusable(Exception):
    """The one line a person reads when the cluster cannot be used: where the credentials came from, the
    server, and the cause."""

    def __init__(self, login: Login, cause: BaseException) -> None:
        super().__init__(f"cannot use the cluster at {login.server} ({login.source}): {explain(cause)}")
        self.cause = cause


AUTH_REUSE_S = 10.0  # how long one resolution of the Authorization header is sent before it is resolved again


class KubeClient:
    def __init__(self, user_agent: str = "tfgrid-operator", context: str | None = None) -> None:
        self.context = context
        self.login = load(context)
        self.user_agent = user_agent  # the API server's audit log tells us apart
        self._ssl: ssl.SSLContext | bool = self.login.ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._auth: tuple[str | None, float] | None = None  # the header and when (monotonic) it was resolved
        self._shared: dict[str, tuple[float, asyncio.Future[Any]]] = {}  # path → (when asked, its answer)

    @property
    def server(self) -> str:
        return self.login.server

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
            self._session = aiohttp.ClientSession(headers={"User-Agent": self.user_agent})
        return self._session

    def relogin(self) -> None:
        """Resolve the credentials again (a rotated token file, a new exec plugin token or client certificate)."""
        login = load(self.context)
        self.login, self._ssl, self._auth = login, login.ssl_context(), None

    def authorization(self) -> str | None:
        """The Authorization header, resolved at most every AUTH_REUSE_S: resolving runs the package's refresh hook
        (a token file read, an exec plugin's expiry check), which cost 5–8 % of a billing hour's write-back when it
        ran per request (issue 17). A rotated credential is still picked up: within AUTH_REUSE_S, or at once on the
        401 an expired one gets (request() resolves again and retries)."""
        now = time.monotonic()
        if self._auth is None or now - self._auth[1] >= AUTH_REUSE_S:
            self._auth = (self.login.authorization(), now)
        return self._auth[0]

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Content-Type": content_type} if content_type else {}
        auth = self.authorization()
        if auth:
            headers["Authorization"] = auth
        return headers

    def _extra(self) -> dict[str, Any]:
        return {"server_hostname": self.login.config.tls_server_name} if self.login.config.tls_server_name else {}

    async def _send(self, method: str, path: str, data: bytes | None, content_type: str) -> tuple[int, str]:
        async with self._http().request(method, self.server + path, data=data, ssl=self._ssl,
                                        headers=self._headers(content_type), **self._extra()) as resp:
            return resp.status, await resp.text()

    async def watch(self, path: str, read_timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch (``path`` with ``watch=true``), one JSON object a line, until the server ends it.
        A refusal raises ApiError (a 401 resolves the credentials again first, for the caller's next try)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=read_timeout_s)
        async with self._http().request("GET", self.server + path, ssl=self._ssl, headers=self._headers(None),
                                        timeout=timeout, **self._extra()) as resp:
            if resp.status >= 400:
                text = await resp.text()
                if resp.status == 401:
                    with contextlib.suppress(ConfigError):
                        self.relogin()
                raise ApiError(resp.status, text)
            pending = b""
            async for chunk in resp.content.iter_any():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield jsonwire.loads(line)

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else jsonwire.dumps(body)
        status, text = await self._send(method, path, data, content_type)
        if status == 401:  # credentials rotate (token files, exec plugins): resolve them again, once
            try:
                self.relogin()
            except ConfigError:
                pass
            else:
                status, text = await self._send(method, path, data, content_type)
        if status >= 400:
            raise ApiError(status, text)
        return jsonwire.loads(text) if text else None

    async def list_pages(self, path: str, limit: int | None = None) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        """A LIST in chunks of at most ``limit`` objects (``limit`` and ``continue``, as kubectl and client-go list):
        each chunk's items with the list's resourceVersion. One chunk is held at a time: a whole LIST of 10,000
        objects as served (managedFields and all) held ~150 MB at once, three of them at a restart. ``limit``: by
        default LIST_CHUNK."""
        token, limit = "", limit or LIST_CHUNK
        while True:
            page = await self.request("GET", f"{path}{'&' if '?' in path else '?'}limit={int(limit)}"
                                      + (f"&continue={urllib.parse.quote(token, safe='')}" if token else ""))
            meta = page.get("metadata") or {}
            yield page.get("items") or [], str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "")
            if not token:
                return

    async def get_shared(self, path: str, reuse_s: float = 0.0) -> Any:
        """A GET that callers asking while it is on its way share, and whose answer serves the same path for
        ``reuse_s`` after it was asked (a failure serves nobody after it: the next caller asks again). A thousand
        Deployments paying from one Secret, resumed together before the watch of Secrets is current, share a few
        reads, not a thousand."""
        now = time.monotonic()
        held = self._shared.get(path)
        fresh = held is not None and now - held[0] < reuse_s
        if held is None or (held[1].done() and (not fresh or held[1].cancelled() or held[1].exception() is not None)):
            if len(self._shared) > 10_000:  # bounded: paths name objects
                self._shared = {p: h for p, h in self._shared.items() if not h[1].done()}
            held = (now, asyncio.ensure_future(self.request("GET", path)))
            self._shared[path] = held
        return await asyncio.shield(held[1])

    async def probe(self, path: str = "/apis/grid.threefold.io/v1alpha1") -> None:
        """One authenticated call (discovery of our API group: it needs credentials, unlike /version, and
        says whether the CRDs are installed). Raises ClusterUnusable with the cause."""
        try:
            await self.request("GET", path)
        except ApiError as err:
            if err.status == 404:
                raise ClusterUnusable(self.login, ApiError(404, "the grid.threefold.io CRDs are not installed "
                                                                "(kubectl apply -f crds/)")) from err
            raise ClusterUnusable(self.login, err) from err
        except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError) as exc:
            raise ClusterUnusable(self.login, exc) from exc

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
        body: dict[str, Any] = {"metadata": {"labels": labels, "annotations": annotations},
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
