"""`quickstart`: everything a cluster needs for a working grid in one namespace, with keys of its own.

It generates the keys (files 0600 in a folder 0700), creates and funds the payer on the ledger named on the
command line, and writes examples/-style manifests that carry the right public keys: the twin's Secret and the
Deployment paying with it, the Farm with its owner key, the Nodes with theirs (and a Secret of node keys for
the chart's simulated node agents), and a Proposal signed by the new council key for that namespace, plus
the Helm values that trust the council key and run the node agents.
"""

from __future__ import annotations

import base64
import os
import pathlib
from typing import Any

import click
import yaml

from tfgrid_operator import clock
from tfgrid_operator.cli.app import _run, main
from tfgrid_operator.domain import identity, money, names

GROUP = "grid.threefold.io/v1alpha1"

NODE_SHAPES = [  # as examples/nodes.yaml: one Ghent node, one certified Cairo node, a small Antwerp node
    {"resources": {"cru": 8, "mru": 32, "sru": 1000, "hru": 4000}, "location": {"country": "BE", "city": "Ghent"}},
    {"resources": {"cru": 16, "mru": 64, "sru": 2000}, "location": {"country": "EG", "city": "Cairo"}, "certified": True},
    {"resources": {"cru": 4, "mru": 16, "sru": 500}, "location": {"country": "BE", "city": "Antwerp"}},
]


def _meta(name: str, namespace: str, wave: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if wave is not None:
        meta["annotations"] = {"argocd.argoproj.io/sync-wave": str(wave)}
    return meta


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(name, namespace), "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def manifests(namespace: str, payer: str, farms: list[str], keys: dict[str, identity.KeyPair], nodes: list[str],
              council: identity.KeyPair, nonce: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """file name → its documents. Pure given a ``nonce`` (the same keys and nonce give the same manifests; without
    one, the council signature gets a fresh one). Node i belongs to farm i mod len(farms)."""
    from tfgrid_operator import ballot

    secrets = [_secret(f"{payer}-twin", namespace, {"twinKey": keys["twin"].to_text()}),
               _secret("tfgrid-node-keys", namespace, {f"{n}.key": keys[f"node/{n}"].to_text() for n in nodes})]
    farm_docs = [{"apiVersion": GROUP, "kind": "Farm", "metadata": _meta(f, namespace, 1),
                  "spec": {"ownerKey": keys[f"farm/{f}"].public_key, "payoutAccount": f"{f}-payout", "publicIPs": 4}}
                 for f in farms]
    node_docs = [{"apiVersion": GROUP, "kind": "Node", "metadata": _meta(n, namespace, 2),
                  "spec": {"farm": farms[i % len(farms)], "publicKey": keys[f"node/{n}"].public_key,
                           **NODE_SHAPES[i % len(NODE_SHAPES)]}}
                 for i, n in enumerate(nodes)]
    deployment = {"apiVersion": GROUP, "kind": "Deployment", "metadata": _meta("web", namespace, 3),
                  "spec": {"resources": {"cru": 2, "mru": 4, "sru": 50}, "publicIPs": 1,
                           "payer": {"secretRef": {"name": f"{payer}-twin", "key": "twinKey"}}}}
    spec = ballot.sign_proposal(council, {
        "title": "Lower the CU price to 80,000 units USD per hour",
        "description": "Compute is under-used; a lower CU price (§1.4) should attract workloads.",
        "action": {"type": "SetPricingPolicy", "pricing": {"cu": 80000}}, "durationHours": 168, "threshold": 5},
        f"{namespace}/cheaper-compute", nonce=nonce)
    proposal = {"apiVersion": GROUP, "kind": "Proposal", "metadata": _meta("cheaper-compute", namespace, 4), "spec": spec}
    return {"secrets.yaml": secrets, "farm.yaml": farm_docs, "nodes.yaml": node_docs,
            "deployment.yaml": [deployment], "proposal.yaml": [proposal]}


def helm_values(namespace: str, nodes: list[str], council: identity.KeyPair) -> dict[str, Any]:
    return {"operator": {"councilKeys": [council.public_key]},
            "nodeAgents": {"enabled": True, "namespace": namespace, "nodes": nodes, "keysSecret": "tfgrid-node-keys"}}


def _write(path: pathlib.Path, text: str, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@main.command(help="Generate keys, create and fund the payer on --ledger-url, and write manifests for a working grid "
                   "in --namespace (Secret with the twin key, Farm, Nodes, a Deployment, a council-signed Proposal) "
                   "plus Helm values for the chart's simulated node agents.")
@click.option("--namespace", "-n", required=True, help="the namespace the grid's objects go to")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="a new folder for the keys and manifests")
@click.option("--ledger-url", required=True, help="the operator's ledger: sqlite:///file.db or postgresql://…")
@click.option("--payer", default="alice", show_default=True, help="the twin account that pays")
@click.option("--fund", "amount", default="1000", show_default=True, help="TFT to fund the payer with")
@click.option("--farm", default="freefarm", show_default=True, help="the farm's name (with --farms N: NAME1 … NAMEN)")
@click.option("--farms", "farm_count", default=1, show_default=True, type=click.IntRange(1, 20),
              help="how many farms; a proposal passes only when at least 5 farms vote (§5)")
@click.option("--nodes", "count", default=3, show_default=True, type=click.IntRange(1, 50),
              help="how many nodes (at least one per farm)")
def quickstart(namespace: str, out: pathlib.Path, ledger_url: str, payer: str, amount: str, farm: str,
               farm_count: int, count: int) -> None:
    from tfgrid_operator import backend

    if len(namespace) > 63 or not names.DNS_LABEL.match(namespace):
        raise click.ClickException(f"{namespace!r} is not a namespace name (lower-case letters, digits and '-')")
    if not names.is_account_name(payer) or len(farm) > 40 or not names.DNS_LABEL.match(farm):
        raise click.ClickException(f"{payer!r} or {farm!r} is not a valid account or farm name")
    try:
        units = money.parse_tft(amount)
    except ValueError:
        units = 0
    if not 0 < units <= money.MAX_UNITS:
        raise click.ClickException(f"{amount!r} is not a TFT amount to fund with (positive, at most 7 decimals)")
    if out.exists() and any(out.iterdir()):
        raise click.ClickException(f"{out} is not empty: quickstart never overwrites keys")
    if count < farm_count:
        raise click.ClickException(f"--nodes {count} < --farms {farm_count}: every farm needs a node to vote with")
    farms = [farm] if farm_count == 1 else [f"{farm}{i}" for i in range(1, farm_count + 1)]
    nodes = [f"node{i}" for i in range(1, count + 1)]
    keys = {"twin": identity.KeyPair.generate(), **{f"farm/{f}": identity.KeyPair.generate() for f in farms},
            **{f"node/{n}": identity.KeyPair.generate() for n in nodes}}
    council = identity.KeyPair.generate()

    async def register(lg: backend.GridBackend) -> None:
        from tfgrid_operator.backend import errors

        try:
            holder = (await lg.account_by_key(public_key=keys["twin"].public_key)).name
        except errors.NotFound:
            holder = None
        if holder is not None or payer in {a.name for a in await lg.list_accounts()}:
            raise click.ClickException(f"account {payer!r} exists on the ledger: pick another --payer")
        await lg.ensure_account(name=payer, public_key=keys["twin"].public_key)
        await lg.fund(name=payer, amount=units, now=clock.SystemClock().now())

    async def with_ledger() -> None:
        lg = await backend.open_backend(ledger_url)
        try:
            await register(lg)
        finally:
            await lg.close()
    _run(with_ledger())

    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    (out / "keys").mkdir(mode=0o700)
    for ref, key in [("twin", keys["twin"]), ("council", council), *((f"farm-{f}", keys[f"farm/{f}"]) for f in farms),
                     *((n, keys[f"node/{n}"]) for n in nodes)]:
        _write(out / "keys" / f"{ref}.key", key.to_text() + "\n", private=True)
    for name, docs in manifests(namespace, payer, farms, keys, nodes, council).items():
        _write(out / name, yaml.safe_dump_all(docs, sort_keys=False), private=name == "secrets.yaml")
    _write(out / "values-quickstart.yaml", yaml.safe_dump(helm_values(namespace, nodes, council), sort_keys=False),
           private=False)
    click.echo(f"{payer} funded with {money.tft(units)} TFT on the ledger; keys and manifests in {out}. Next:")
    for line in next_steps(namespace, out, farms):
        click.echo(f"  {line}")


def next_steps(namespace: str, out: pathlib.Path, farms: list[str]) -> list[str]:
    """The commands after quickstart, in the order that works: the namespace and its Secrets before the chart's
    node agents (which mount the node keys), the grid's objects after."""
    return [
        f"kubectl create namespace {namespace}",
        f"kubectl apply -f {out / 'secrets.yaml'}",
        f"helm upgrade --install tfgrid charts/tfgrid-operator -n tfgrid-system --reuse-values "
        f"-f {out / 'values-quickstart.yaml'}",
        f"kubectl apply -f {out / 'farm.yaml'} -f {out / 'nodes.yaml'} -f {out / 'deployment.yaml'} "
        f"-f {out / 'proposal.yaml'}",
        f"kubectl wait -n {namespace} --for=condition=Ready gfarm --all gnode --all gdeploy/web gprop/cheaper-compute",
        *(f"tfgrid-operator vote --proposal cheaper-compute --namespace {namespace} --farm {f} --yes "
          f"--key-file {out / 'keys' / f'farm-{f}.key'}" for f in farms),
    ]
