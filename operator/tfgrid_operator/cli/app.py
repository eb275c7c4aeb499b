"""The command group and what its commands share: one-line errors for ledger and cluster failures, key files."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import click

from tfgrid_operator.backend import errors
from tfgrid_operator.domain import identity


class LedgerFailure(click.ClickException):
    """A ledger error as one line; exit code 2 (the ledger refused, or is unreachable)."""

    exit_code = 2


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return asyncio.run(coro)
    except errors.LedgerError as err:
        raise LedgerFailure(err.message) from None


class Cli(click.Group):
    """The command group: a file that cannot be read or written, or is not UTF-8 text, is one line
    `Error: …`, never a traceback (every command reads or writes files)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            raise click.ClickException(f"{exc.filename or 'a file'}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"a file is not UTF-8 text (byte {exc.start})") from None


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tfgrid-operator")
    except metadata.PackageNotFoundError:
        return "unknown"


@click.group(cls=Cli, help="tfgrid-operator: run a ThreeFold-style grid declaratively on Kubernetes.")
@click.version_option(_version(), "--version", prog_name="tfgrid-operator", message="%(prog)s %(version)s")
def main() -> None:
    pass


def _load_key(path: pathlib.Path) -> identity.KeyPair:
    try:
        return identity.KeyPair.from_text(path.read_text())
    except (OSError, identity.BadSignature) as exc:
        raise click.ClickException(f"cannot read an ed25519 key from {path}: {exc}") from exc



def _with_cluster(user_agent: str, fn: Callable[[Any], Awaitable[Any]], context: str | None = None) -> None:
    """Run ``fn`` with a client of the cluster in the kubeconfig (``context``, else its current one); a missing
    or unusable cluster (TLS, 401/403, refused, DNS) or an API error is one line, never a traceback."""
    import ssl

    import aiohttp

    from tfgrid_operator.kube.client import ApiError, ClusterUnusable, ConfigError, KubeClient, explain

    async def go() -> None:
        async with KubeClient(user_agent=user_agent, context=context) as kube:
            try:
                await fn(kube)
            except (ApiError, aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError) as exc:
                if isinstance(exc, ApiError) and exc.status not in (401, 403):
                    raise
                raise ClusterUnusable(kube.login, exc) from exc
    try:
        asyncio.run(go())
    except (ConfigError, ClusterUnusable) as exc:
        raise click.ClickException(str(exc)) from exc
    except ApiError as exc:
        raise click.ClickException(explain(exc)) from exc
