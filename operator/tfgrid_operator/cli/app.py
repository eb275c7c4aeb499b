"""The command group and what its commands share: one-line errors for ledger and cluster failures, key files."""

from __future__ import annotations

import asyncio
import pathlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from tfgrid_operator.backend import errors
from tfgrid_operator.domain import identity


def _run(coro: Awaitable[Any]) -> Any:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except errors.LedgerError as err:
        click.echo(f"error: {err.reason}: {err.message}", err=True)
        sys.exit(2)


@click.group(help="tfgrid-operator: run a ThreeFold-style grid declaratively on Kubernetes.")
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
