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


PEERING_NAME = "tfgrid-operator"  # the ClusterKopfPeering/KopfPeering the chart creates for standby replicas


def configure_logging(log_format: str, verbose: bool = False) -> None:
    """kopf's logging, with one JSON object per line when asked (for log shippers)."""
    import logging

    import kopf

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
                   log_refkey="k8s" if log_format == "json" else None)
    # kopf logs two INFO lines per object and reconcile ("Handler … succeeded", "Creation is processed"): 20,000
    # lines each time a grid's 10,000 deployments resume. They show with --verbose; warnings and errors always do.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)


def peering_priority(explicit: int | None) -> int:
    """kopf peering is not leader election: equal priorities all pause. Replicas of one Deployment share their
    settings, so the default priority comes from the pod's own name (stable for the pod, distinct across pods)."""
    import os
    import socket
    import zlib

    if explicit is not None:
        return explicit
    return 1 + zlib.crc32((os.environ.get("POD_NAME") or socket.gethostname()).encode()) % 1_000_000


def cluster_reachable() -> bool:
    from tfgrid_operator.kube.client import KubeClient

    async def probe() -> bool:
        try:
            async with KubeClient() as kube:
                await kube.request("GET", "/version")
            return True
        except Exception:  # no kubeconfig (ConfigError), refused, DNS, TLS, 401 …: not usable
            return False
    return asyncio.run(probe())


@main.command(help="Run the operator against the cluster in the kubeconfig (or in-cluster). With no cluster "
                   "reachable it runs the local sandbox instead (see `sandbox --help`).")
@click.option("--namespace", "-n", default="", help="watch one namespace; default: all namespaces")
@click.option("--ledger-url", envvar="TFGRID_LEDGER_URL", default=None, help="sqlite:///file.db or postgresql://…")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True, help="kopf liveness endpoint")
@click.option("--peering/--standalone", envvar="TFGRID_PEERING", default=False, show_default=True,
              help="join kopf's peering of standby replicas (PostgreSQL ledger): the highest priority runs, the others "
                   "wait. Standalone by default: one replica.")
@click.option("--priority", type=int, envvar="TFGRID_PEERING_PRIORITY", default=None,
              help="this replica's peering priority; default: derived from the pod name, so replicas differ")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="TFGRID_LOG_FORMAT", default="text",
              show_default=True)
@click.option("--verbose", is_flag=True)
def run(namespace: str, ledger_url: str | None, liveness: str, peering: bool, priority: int | None,
        log_format: str, verbose: bool) -> None:
    import os

    import kopf

    import tfgrid_operator.handlers  # noqa: F401  (registers the handlers)

    if not cluster_reachable():
        click.echo("no cluster reachable in the kubeconfig: running the local sandbox instead", err=True)
        from tfgrid_operator import sandbox as sandbox_mod

        sandbox_mod.main(ledger_url=ledger_url)
        return
    configure_logging(log_format, verbose)
    if ledger_url:
        os.environ["TFGRID_LEDGER_URL"] = ledger_url
    asyncio.run(kopf.operator(
        registry=kopf.get_default_registry(), clusterwide=not namespace, namespaces=[namespace] if namespace else [],
        liveness_endpoint=liveness,
        # naming a peering makes it mandatory in kopf, so standalone runs must not name one
        **({"peering_name": PEERING_NAME, "priority": peering_priority(priority)} if peering else {"standalone": True})))


@main.command(help="The local sandbox, no cluster needed: the real operator against a local Kubernetes API emulator "
                   "and the SQLite ledger, examples/ applied, node agents reporting, a month of grid life in under a "
                   "minute, with a live table and a summary checked against the ledger.")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 366))
@click.option("--examples", default="examples", show_default=True,
              type=click.Path(file_okay=False, path_type=pathlib.Path))
@click.option("--ledger-url", default=None, help="default: a fresh SQLite file in a temporary folder")
def sandbox(days: int, examples: pathlib.Path, ledger_url: str | None) -> None:
    from tfgrid_operator import sandbox as sandbox_mod

    try:
        summary = sandbox_mod.main(days=days, ledger_url=ledger_url, examples=examples)
    except sandbox_mod.SandboxError as exc:
        raise click.ClickException(str(exc)) from exc
    if not summary.matches:
        sys.exit(1)


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

    key = _load_key(key_file)
    _with_cluster("tfgrid-node-agent", lambda kube: agent.run(
        kube, key, namespace=namespace, node=node, clock=clock.SystemClock(), interval_s=interval, count=count))


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


def _to_proposal(namespace: str, name: str, field: str, entry: dict[str, Any], same: str) -> None:
    from tfgrid_operator import ballot

    _with_cluster("tfgrid-cli", lambda kube: ballot.add_entry(kube, namespace=namespace, name=name, field=field,
                                                              entry=entry, same=same))
    click.echo(f"added to proposal {namespace}/{name} spec.{field}: {json.dumps(entry)}")


@main.command(help="Sign a farm's vote on a Proposal and add it to the object's spec.votes "
                   "(--print only prints it, e.g. for a Git pull request).")
@click.option("--proposal", required=True, help="the Proposal object's name")
@click.option("--namespace", default="default", show_default=True)
@click.option("--farm", required=True)
@click.option("--yes/--no", "approve", required=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
              help="the farm owner's key (its public key is the Farm's spec.ownerKey)")
@click.option("--print", "print_only", is_flag=True, help="print the signed vote instead of patching the object")
def vote(proposal: str, namespace: str, farm: str, approve: bool, key_file: pathlib.Path, print_only: bool) -> None:
    from tfgrid_operator import ballot

    entry = ballot.signed_vote(_load_key(key_file), proposal=f"{namespace}/{proposal}", farm=farm, approve=approve)
    if print_only:
        click.echo(json.dumps(entry))
        return
    _to_proposal(namespace, proposal, "votes", entry, "farm")


@main.group(help="What a council member signs: proposals and vetoes (§5).")
def council() -> None:
    pass


@council.command(help="Sign a Proposal manifest (YAML): sets spec.councilKey and spec.councilSignature and prints it.")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--namespace", default=None, help="the namespace it will live in (default: metadata.namespace or default)")
def sign(manifest: pathlib.Path, key_file: pathlib.Path, namespace: str | None) -> None:
    import yaml

    from tfgrid_operator import crd_models

    key = _load_key(key_file)
    doc = yaml.safe_load(manifest.read_text())
    if not isinstance(doc, dict) or doc.get("kind") != "Proposal":
        raise click.ClickException(f"{manifest} is not a Proposal manifest")
    ns = namespace or doc.get("metadata", {}).get("namespace") or "default"
    spec = {**doc.get("spec", {}), "councilKey": key.public_key, "councilSignature": "-"}
    try:
        parsed = crd_models.parse(crd_models.ProposalSpec, spec)
    except crd_models.InvalidSpec as exc:
        raise click.ClickException(f"{manifest}: {exc}") from exc
    spec["councilSignature"] = key.sign(identity.PROPOSAL, parsed.signed_payload(f"{ns}/{doc['metadata']['name']}"))
    doc["spec"] = spec
    click.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)


@council.command(help="Sign a veto of a Proposal and add it to the object's spec.vetoes (--print only prints it).")
@click.option("--proposal", required=True)
@click.option("--namespace", default="default", show_default=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--print", "print_only", is_flag=True)
def veto(proposal: str, namespace: str, key_file: pathlib.Path, print_only: bool) -> None:
    from tfgrid_operator import ballot

    entry = ballot.signed_veto(_load_key(key_file), proposal=f"{namespace}/{proposal}")
    if print_only:
        click.echo(json.dumps(entry))
        return
    _to_proposal(namespace, proposal, "vetoes", entry, "memberKey")
