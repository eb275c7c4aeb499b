"""What farmers, node agents and the council do against the cluster: node-agent, vote, council sign/veto."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import click

from tfgrid_operator.cli.app import _load_key, _with_cluster, main
from tfgrid_operator.domain import identity


@main.command("node-agent", help="Renew the node's Lease with a signed uptime report every --interval seconds.")
@click.option("--node", required=True, help="the Node object's name")
@click.option("--namespace", default="default", show_default=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--interval", default=2400.0, show_default=True, help="seconds between reports (Zero-OS: 40 min)")
@click.option("--count", type=int, default=None, help="stop after this many reports")
@click.option("--context", default=None, help="the kubeconfig context to use; default: its current context")
@click.option("--wait", default=60.0, show_default=True, help="seconds to wait for the operator to register the Node")
def node_agent(node: str, namespace: str, key_file: pathlib.Path, interval: float, count: int | None,
               context: str | None, wait: float) -> None:
    from tfgrid_operator import agent, clock

    key = _load_key(key_file)

    async def report(kube: Any) -> None:
        await _registered(kube, namespace, node, wait)
        await agent.run(kube, key, namespace=namespace, node=node, clock=clock.SystemClock(), interval_s=interval,
                        count=count)
    _with_cluster("tfgrid-node-agent", report, context)


async def _registered(kube: Any, namespace: str, node: str, wait: float) -> None:
    """Wait (bounded) until the Node exists and the operator registered it: reports before that are refused."""
    import asyncio

    from tfgrid_operator import runtime
    from tfgrid_operator.kube.client import ApiError

    path = kube.path(runtime.GROUP, runtime.VERSION, "nodes", namespace, node)
    loop = asyncio.get_running_loop()
    deadline, seen = loop.time() + wait, False
    while True:
        try:
            status = (await kube.request("GET", path)).get("status") or {}
            seen = True
            if status.get("nodeId") is not None:
                return
        except ApiError as err:
            if err.status == 403:
                return  # an agent may only renew its own Lease (the chart's node agents): it cannot look
            if err.status != 404:
                raise
        if loop.time() >= deadline:
            raise click.ClickException(
                f"node {namespace}/{node} " + ("is not registered by the operator" if seen else "does not exist")
                + f" after {wait:g} s: create the Node (kubectl get gnode -n {namespace}) and check its status")
        await asyncio.sleep(min(2.0, max(0.1, deadline - loop.time())))



def _to_proposal(namespace: str, name: str, field: str, entry: dict[str, Any], same: str, context: str | None) -> None:
    from tfgrid_operator import ballot

    _with_cluster("tfgrid-cli", lambda kube: ballot.add_entry(kube, namespace=namespace, name=name, field=field,
                                                              entry=entry, same=same), context)
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
@click.option("--context", default=None, help="the kubeconfig context to use; default: its current context")
def vote(proposal: str, namespace: str, farm: str, approve: bool, key_file: pathlib.Path, print_only: bool,
         context: str | None) -> None:
    from tfgrid_operator import ballot

    entry = ballot.signed_vote(_load_key(key_file), proposal=f"{namespace}/{proposal}", farm=farm, approve=approve)
    if print_only:
        click.echo(json.dumps(entry))
        return
    _to_proposal(namespace, proposal, "votes", entry, "farm", context)


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
    try:
        docs = [d for d in yaml.safe_load_all(manifest.read_bytes().decode("utf-8")) if d is not None]
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{manifest} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{manifest} is not valid YAML: {' '.join(str(exc).split())}") from None
    if len(docs) != 1:
        raise click.ClickException(f"{manifest} holds {len(docs)} YAML documents; sign one Proposal at a time")
    doc = docs[0]
    if not isinstance(doc, dict) or doc.get("kind") != "Proposal" or not isinstance(doc.get("metadata"), dict) \
            or not doc["metadata"].get("name"):
        raise click.ClickException(f"{manifest} is not a Proposal manifest")
    ns = namespace or doc["metadata"].get("namespace") or "default"
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
@click.option("--context", default=None, help="the kubeconfig context to use; default: its current context")
def veto(proposal: str, namespace: str, key_file: pathlib.Path, print_only: bool, context: str | None) -> None:
    from tfgrid_operator import ballot

    entry = ballot.signed_veto(_load_key(key_file), proposal=f"{namespace}/{proposal}")
    if print_only:
        click.echo(json.dumps(entry))
        return
    _to_proposal(namespace, proposal, "vetoes", entry, "memberKey", context)
