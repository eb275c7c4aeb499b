"""The command line: run the operator, inspect and fund the ledger, run a node agent, make keys.

    python -m tfgrid_operator --help
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from tfgrid_operator import backend
from tfgrid_operator.backend import errors
from tfgrid_operator.domain import identity, money
from tfgrid_operator.settings import Settings


def _run(coro: Awaitable[Any]) -> Any:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except errors.LedgerError as err:
        click.echo(f"error: {err.reason}: {err.message}", err=True)
        sys.exit(2)


@click.group(help="tfgrid-operator: run a ThreeFold-style grid declaratively on Kubernetes.")
def main() -> None:
    pass


@main.command(help="Run the operator against the cluster in the kubeconfig (or in-cluster).")
@click.option("--namespace", "-n", default="", help="watch one namespace; default: all namespaces")
@click.option("--ledger-url", envvar="TFGRID_LEDGER_URL", default=None, help="sqlite:///file.db or postgresql://…")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True, help="kopf liveness endpoint")
@click.option("--priority", type=int, default=None, help="peering priority (multi-replica standby); off by default")
def run(namespace: str, ledger_url: str | None, liveness: str, priority: int | None) -> None:
    import os

    import kopf

    import tfgrid_operator.handlers  # noqa: F401  (registers the handlers)

    if ledger_url:
        os.environ["TFGRID_LEDGER_URL"] = ledger_url
    asyncio.run(kopf.operator(
        registry=kopf.get_default_registry(), clusterwide=not namespace, namespaces=[namespace] if namespace else [],
        standalone=priority is None, priority=priority or 0, liveness_endpoint=liveness))


@main.group(help="Inspect and change the ledger of record (accounts, farms, nodes, contracts).")
@click.option("--ledger-url", envvar="TFGRID_LEDGER_URL", default=lambda: Settings().ledger_url, show_default="settings",
              help="sqlite:///file.db (created on first use) or postgresql://…")
@click.pass_context
def ledger(ctx: click.Context, ledger_url: str) -> None:
    ctx.obj = ledger_url


def _with_ledger(ctx: click.Context, fn: Callable[[backend.GridBackend], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        lg = await backend.open_backend(ctx.obj)
        try:
            return await fn(lg)
        finally:
            await lg.close()
    return _run(go())


@ledger.command("create-account", help="Create a twin account (idempotent: an existing one is shown). With "
                "--key-file, the twin's key (from `keygen`) identifies it: a Deployment's payer.secretRef holds that key.")
@click.argument("name")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), help="the twin's ed25519 key file")
@click.pass_context
def create_account(ctx: click.Context, name: str, key_file: str | None) -> None:
    public_key = _load_key(pathlib.Path(key_file)).public_key if key_file else ""
    acc = _with_ledger(ctx, lambda lg: lg.ensure_account(name=name, public_key=public_key))
    click.echo(f"{acc.name}\t{money.tft(acc.balance)} TFT")


@ledger.command(help="Add TFT to an account, e.g. `fund alice 1000` or `fund alice 0.5`.")
@click.argument("name")
@click.argument("amount")
@click.pass_context
def fund(ctx: click.Context, name: str, amount: str) -> None:
    try:
        units = money.parse_tft(amount)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="AMOUNT") from exc
    acc = _with_ledger(ctx, lambda lg: lg.fund(name=name, amount=units))
    click.echo(f"{acc.name}\t{money.tft(acc.balance)} TFT")


@ledger.command(help="Show accounts, farms, nodes and contracts (add --json for machine output).")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    async def collect(lg: backend.GridBackend) -> dict[str, Any]:
        return {
            "accounts": [{"name": a.name, "balance": a.balance} for a in await lg.list_accounts()],
            "farms": [{"name": f.name, "id": f.id, "state": f.state, "payout": f.payout_account} for f in await lg.list_farms()],
            "nodes": [{"name": s.name, "farm": s.farm, "used": s.used.as_dict(), "minted": s.minted_total}
                      for s in (await lg.node_summaries(now=0)).values()],
            "contracts": [{"key": c.key, "id": c.id, "node": c.node, "state": c.state, "billed": c.billed_total}
                          for c in (await lg.contract_summaries()).values()],
        }
    data = _with_ledger(ctx, collect)
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
        return
    for section, rows in data.items():
        click.echo(f"{section}:")
        for row in rows:
            click.echo("  " + "  ".join(f"{k}={money.tft(v) if k in ('balance', 'minted', 'billed') else v}"
                                        for k, v in row.items()))


@main.command(help="Create an ed25519 key file (base64 seed) and print its public key.")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=pathlib.Path))
def keygen(key_file: pathlib.Path) -> None:
    if key_file.exists():
        raise click.ClickException(f"{key_file} exists; refusing to overwrite a key")
    key = identity.KeyPair.generate()
    key_file.write_text(key.to_text() + "\n")
    key_file.chmod(0o600)
    click.echo(key.public_key)


def _load_key(path: pathlib.Path) -> identity.KeyPair:
    try:
        return identity.KeyPair.from_text(path.read_text())
    except (OSError, identity.BadSignature) as exc:
        raise click.ClickException(f"cannot read an ed25519 key from {path}: {exc}") from exc


@main.command("node-agent", help="Renew the node's Lease with a signed uptime report every --interval seconds.")
@click.option("--node", required=True, help="the Node object's name")
@click.option("--namespace", default="default", show_default=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--interval", default=2400.0, show_default=True, help="seconds between reports (Zero-OS: 40 min)")
@click.option("--count", type=int, default=None, help="stop after this many reports")
def node_agent(node: str, namespace: str, key_file: pathlib.Path, interval: float, count: int | None) -> None:
    from tfgrid_operator import agent, clock
    from tfgrid_operator.kube.client import ApiError, ConfigError, KubeClient

    key = _load_key(key_file)

    async def go() -> None:
        async with KubeClient() as kube:
            await agent.run(kube, key, namespace=namespace, node=node, clock=clock.SystemClock(),
                            interval_s=interval, count=count)
    try:
        asyncio.run(go())
    except (ConfigError, ApiError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(help="Print the signed vote for a proposal (to add to the Proposal's spec.votes).")
@click.option("--proposal", required=True)
@click.option("--farm", required=True)
@click.option("--yes/--no", "approve", required=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
def vote(proposal: str, farm: str, approve: bool, key_file: pathlib.Path) -> None:
    key = _load_key(key_file)
    sig = key.sign(identity.VOTE, {"proposal": proposal, "farm": farm, "approve": approve})
    click.echo(json.dumps({"farm": farm, "approve": approve, "signature": sig}))
