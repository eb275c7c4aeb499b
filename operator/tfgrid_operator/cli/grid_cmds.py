"""What farmers, node agents and the council do against the cluster: node-agent, vote, council sign/veto."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import click

from tfgrid_operator.cli.app import _load_key, _with_cluster, main


@main.command("node-agent", help="Renew the node's Lease with a signed uptime report and a signed capacity report "
                                  "every --interval seconds. The capacity is measured on this machine (cores, "
                                  "/proc/meminfo, the --ssd/--hdd filesystems) unless --capacity or --capacity-file "
                                  "states it (simulations).")
@click.option("--node", required=True, help="the Node object's name")
@click.option("--namespace", default="default", show_default=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--interval", default=2400.0, show_default=True, help="seconds between reports (Zero-OS: 40 min)")
@click.option("--count", type=int, default=None, help="stop after this many reports")
@click.option("--context", default=None, help="the kubeconfig context to use; default: its current context")
@click.option("--wait", default=60.0, show_default=True, help="seconds to wait for the operator to register the Node")
@click.option("--ssd", multiple=True, default=("/",), show_default=True, help="a path on an SSD filesystem (repeatable)")
@click.option("--hdd", multiple=True, help="a path on an HDD filesystem (repeatable)")
@click.option("--capacity", "capacity_text", default=None, help="state the capacity instead: cru=8,mru=32,sru=1000,hru=0")
@click.option("--capacity-file", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path), default=None,
              help="state the capacity from a JSON/YAML mapping of cru, mru, sru, hru")
def node_agent(node: str, namespace: str, key_file: pathlib.Path, interval: float, count: int | None,
               context: str | None, wait: float, ssd: tuple[str, ...], hdd: tuple[str, ...],
               capacity_text: str | None, capacity_file: pathlib.Path | None) -> None:
    from tfgrid_operator import agent, clock

    key = _load_key(key_file)
    if capacity_text and capacity_file:
        raise click.UsageError("give --capacity or --capacity-file, not both")
    try:
        capacity = (agent.parse_capacity(capacity_text) if capacity_text else agent.load_capacity(capacity_file)
                    if capacity_file else agent.measure(ssd=ssd, hdd=hdd))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    async def report(kube: Any) -> None:
        await _registered(kube, namespace, node, wait)
        click.echo(f"node {node}: reporting capacity {capacity.as_dict()}", err=True)
        await agent.run(kube, key, namespace=namespace, node=node, clock=clock.SystemClock(), interval_s=interval,
                        count=count, capacity=capacity)
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



@main.command(help="Sign a farm's vote on a Proposal (bound to the proposal as the operator opened it, with a "
                   "sequence number), add it to the object's spec.votes and wait for the operator's verdict "
                   "(--print only prints it, e.g. for a Git pull request).")
@click.option("--proposal", required=True, help="the Proposal object's name")
@click.option("--namespace", default="default", show_default=True)
@click.option("--farm", required=True)
@click.option("--yes/--no", "approve", required=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
              help="the farm owner's key (its public key is the Farm's spec.ownerKey)")
@click.option("--print", "print_only", is_flag=True, help="print the signed vote instead of patching the object")
@click.option("--context", default=None, help="the kubeconfig context to use; default: its current context")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path), default=None,
              help="with --print: sign for this Proposal (YAML as `kubectl get -o yaml` shows it, with its status) "
                   "without reaching the cluster")
@click.option("--wait", "wait_s", default=30.0, show_default=True, help="seconds to wait for the verdict (0: none)")
def vote(proposal: str, namespace: str, farm: str, approve: bool, key_file: pathlib.Path, print_only: bool,
         context: str | None, manifest: pathlib.Path | None, wait_s: float) -> None:
    from tfgrid_operator import ballot

    key = _load_key(key_file)
    verdict: dict[str, str] = {}
    if manifest is not None:
        import yaml

        if not print_only:
            raise click.UsageError("--manifest signs offline: use it with --print")
        try:
            body = yaml.safe_load(manifest.read_text())
            body.setdefault("metadata", {}).setdefault("namespace", namespace)
            click.echo(json.dumps(ballot.vote_on(body, key, farm=farm, approve=approve)))
        except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
            raise click.ClickException(f"{manifest}: not an open Proposal ({exc})") from exc
        return

    async def go(kube: Any) -> None:
        body = await _read_proposal(kube, namespace, proposal)
        try:
            entry = ballot.vote_on(body, key, farm=farm, approve=approve)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        if print_only:
            click.echo(json.dumps(entry))
            return
        await ballot.add_entry(kube, namespace=namespace, name=proposal, field="votes", entry=entry, same="farm")
        click.echo(f"added to proposal {namespace}/{proposal} spec.votes: farm {farm} "
                   f"{'yes' if approve else 'no'} (sequence {entry['seq']})")
        if wait_s > 0:
            verdict.update(await ballot.verdict(kube, namespace=namespace, name=proposal, farm=farm, seq=entry["seq"],
                                                timeout_s=wait_s))

    _with_cluster("tfgrid-cli", go, context)
    if verdict.get("reason"):
        raise click.ClickException(f"the vote of farm {farm} does not count: {verdict['reason']}")
    if verdict:
        click.echo(verdict["message"])


async def _read_proposal(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    from tfgrid_operator import runtime
    from tfgrid_operator.kube.client import ApiError

    try:
        body: dict[str, Any] = await kube.request("GET", kube.path(runtime.GROUP, runtime.VERSION, "proposals",
                                                                  namespace, name))
    except ApiError as err:
        if err.status == 404:
            raise click.ClickException(f"proposal {namespace}/{name} does not exist") from None
        raise
    return body


@main.group(help="What a council member signs: proposals and vetoes (§5).")
def council() -> None:
    pass


@council.command(help="Sign a Proposal manifest (YAML): sets spec.councilKey, a fresh spec.nonce and spec.councilSignature "
                      "and prints it. The ledger opens one proposal per signature, once.")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--namespace", default=None, help="the namespace it will live in (default: metadata.namespace or default)")
def sign(manifest: pathlib.Path, key_file: pathlib.Path, namespace: str | None) -> None:
    import yaml

    from tfgrid_operator import api, ballot

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
    try:  # a fresh nonce each time: the signature opens this proposal once, and never again once withdrawn
        doc["spec"] = ballot.sign_proposal(key, {k: v for k, v in (doc.get("spec") or {}).items() if k != "nonce"},
                                           f"{ns}/{doc['metadata']['name']}")
    except api.InvalidSpec as exc:
        raise click.ClickException(f"{manifest}: {exc}") from exc
    click.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)


@council.command(help="Sign a veto of a Proposal and add it to the object's spec.vetoes (--print only prints it).")
@click.option("--proposal", required=True)
@click.option("--namespace", default="default", show_default=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--print", "print_only", is_flag=True)
@click.option("--proposal-id", type=int, default=None,
              help="with --print: the proposal's ledger id (its status.proposalId), without reaching the cluster")
@click.option("--nonce", default="", help="with --proposal-id: the proposal's spec.nonce (the council signature's)")
@click.option("--context", default=None, help="the kubeconfig context to use; default: its current context")
def veto(proposal: str, namespace: str, key_file: pathlib.Path, print_only: bool, proposal_id: int | None,
         nonce: str, context: str | None) -> None:
    from tfgrid_operator import ballot

    key, name = _load_key(key_file), f"{namespace}/{proposal}"
    if print_only and proposal_id is not None:
        click.echo(json.dumps(ballot.signed_veto(key, proposal=name, proposal_id=proposal_id, nonce=nonce)))
        return

    async def go(kube: Any) -> None:
        body = await _read_proposal(kube, namespace, proposal)
        try:  # bound to this proposal's ledger id and council nonce, not its name: never counts on another one
            entry = ballot.veto_on(body, key)
        except ValueError as exc:
            raise click.ClickException(f"{exc} (no status.proposalId)") from exc
        pid = body["status"]["proposalId"]
        if print_only:
            click.echo(json.dumps(entry))
            return
        await ballot.add_entry(kube, namespace=namespace, name=proposal, field="vetoes", entry=entry, same="memberKey")
        click.echo(f"added to proposal {name} spec.vetoes: the veto of {key.public_key[:12]}… (proposal {pid})")
    _with_cluster("tfgrid-cli", go, context)


@council.command(help="Certify a node (or with --revoke make it DIY again), §1.2 set_node_certification: signs the "
                      "node's ledger id (its status.nodeId) and the capacity its agent attested (status.attested), and "
                      "puts the signature on the Node as an annotation; the operator applies it while the node attests "
                      "that capacity (--print only prints it).")
@click.option("--node", required=True, help="the Node object's name")
@click.option("--namespace", default="default", show_default=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--revoke", is_flag=True, help="decertify: the node is DIY from now on")
@click.option("--node-id", type=int, default=None, help="with --print: the node's ledger id, without reaching the cluster")
@click.option("--capacity", default=None, metavar="CRU,MRU,SRU,HRU",
              help="with --node-id: the capacity certified (what the node attests), e.g. 8,32,1000,0")
@click.option("--print", "print_only", is_flag=True)
@click.option("--context", default=None, help="the kubeconfig context to use; default: its current context")
def certify(node: str, namespace: str, key_file: pathlib.Path, revoke: bool, node_id: int | None,
            capacity: str | None, print_only: bool, context: str | None) -> None:
    from tfgrid_operator import ballot, clock, runtime
    from tfgrid_operator.domain.units import Resources
    from tfgrid_operator.kube.client import ApiError

    key = _load_key(key_file)

    if print_only and node_id is not None:
        resources = None
        if not revoke:
            try:
                fields = [int(x) for x in (capacity or "").split(",")]
                if len(fields) != 4:
                    raise ValueError
                resources = Resources(*fields)
            except ValueError:
                raise click.UsageError("--capacity CRU,MRU,SRU,HRU: a certification names the capacity it "
                                       "certifies (the node's status.attested)") from None
        click.echo(json.dumps(ballot.signed_certification(key, node=node, node_id=node_id, certified=not revoke,
                                                          ts=clock.SystemClock().now(), resources=resources)))
        return

    async def go(kube: Any) -> None:
        try:
            body = await kube.request("GET", kube.path(runtime.GROUP, runtime.VERSION, "nodes", namespace, node))
        except ApiError as err:
            if err.status == 404:
                raise click.ClickException(f"node {namespace}/{node} does not exist") from None
            raise
        try:
            signed = ballot.certification_on(body, key, certified=not revoke, ts=clock.SystemClock().now())
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        nid = signed["nodeId"]
        if print_only:
            click.echo(json.dumps(signed))
            return
        await ballot.certify(kube, namespace=namespace, node=node, entry=signed)
        click.echo(f"node {namespace}/{node}: {'decertification' if revoke else 'certification'} signed for ledger "
                   f"node {nid}; the operator applies it (status.attested.certified)")

    _with_cluster("tfgrid-cli", go, context)
