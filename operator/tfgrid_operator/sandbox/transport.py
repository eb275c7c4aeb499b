"""How the emulator is reached as a cluster is: authentication (client certificates, bearer tokens, rotating
token files) and an HTTPS listener that can be stopped and rebound on the same port."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import aiohttp.test_utils
import aiohttp.web
import attrs
from kmock._internal.apps import Server

if TYPE_CHECKING:
    from tfgrid_operator.sandbox.emulator import StrictApiServer


@attrs.define
class Authn:
    """Who may call: a request authenticates with a client certificate (verified by the TLS layer against the
    server's client CA; the user is its CN) or a bearer token (a fixed one, or the current content of a file,
    read on every request so that a test can rotate it). Anything else is 401 Unauthorized."""

    tokens: dict[str, str] = attrs.field(factory=dict)  # token → user
    token_files: dict[str, str] = attrs.field(factory=dict)  # path of a file holding a token → user
    client_certificates: bool = True

    def user(self, raw: aiohttp.web.BaseRequest | None, headers: Any) -> str | None:
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
            if token in self.tokens:
                return self.tokens[token]
            for path, user in self.token_files.items():
                try:
                    with open(path) as f:
                        if f.read().strip() == token:
                            return user
                except OSError:
                    continue
            return None  # a wrong token is 401 even with a valid certificate, as on kube-apiserver
        if self.client_certificates and raw is not None and raw.transport is not None:
            cert = raw.transport.get_extra_info("peercert")
            for rdn in (cert or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
        return None


def serve(handler: StrictApiServer, *, ssl_context: Any = None, client: Any = None, port: int | None = None) -> Server:
    """A kmock Server for ``handler``: HTTPS when ``ssl_context`` (a server-side ssl.SSLContext) is given.
    ``client`` is the ssl.SSLContext of the handler's own client (``handler.post(…)``, for tests and the sandbox);
    ``port`` rebinds a port, e.g. to restart the API server under a running operator."""

    class TlsTestServer(aiohttp.test_utils.RawTestServer):
        async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
            await super().start_server(loop=loop, ssl=ssl_context, **kwargs)

        async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web.ServerRunner:
            # stopping cuts the open requests (watches) at once, as a restarting API server does: aiohttp would
            # otherwise wait up to a minute for them to end
            srv = aiohttp.web.Server(self._handler, loop=self._loop, debug=debug, **kwargs)
            return aiohttp.web.ServerRunner(srv, debug=debug, shutdown_timeout=0.1, **kwargs)

    def session(url: Any) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=client if client is not None else True))

    return Server(handler, port=port, server_cls=TlsTestServer, client_fct=session)
