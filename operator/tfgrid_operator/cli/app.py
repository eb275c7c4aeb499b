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



def _with_cluster(user_agent: str, fn: Callable[[Any], Awaitable[Any]]) -> None:
    """Run ``fn`` with a client of the cluster in the kubeconfig; a missing cluster or an API error is a
    one-line message, never a traceback."""
    from tfgrid_operator.kube.client import ApiError, ConfigError, KubeClient

    async def go() -> None:
        async with KubeClient(user_agent=user_agent) as kube:
            await fn(kube)
    try:
        asyncio.run(go())
    except (ConfigError, ApiError) as exc:
        raise click.ClickException(str(exc)) from exc


