"""`grant` and `farm-consent`: the signed statements that let another namespace spend or join (design.md "Trust
model"). Both are signed with a key file locally; nothing is sent anywhere, the output is applied by the tenant."""

from __future__ import annotations

import pathlib
import re
import time

import click
import yaml

from tfgrid_operator.cli.app import _load_key, main
from tfgrid_operator.domain import names
from tfgrid_operator.handlers import tenancy

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@main.command(help="Let the Deployments of one namespace bill a twin account: sign a grant with the twin's key "
                   "and print it as a Secret to apply in that namespace. Deployments then name "
                   "`payer: {account: ACCOUNT, secretRef: {name: SECRET, key: grant}}`.")
@click.option("--account", required=True, help="the twin account that pays")
@click.option("--namespace", required=True, help="the namespace whose Deployments may bill it")
@click.option("--key-file", required=True, type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="the twin's key file (the key registered with `ledger create-account --key-file`)")
@click.option("--days", type=click.IntRange(1, names.MAX_GRANT_S // 86400), default=90, show_default=True,
              help="how long the grant lasts; contracts resting on it are closed when it ends unless renewed")
@click.option("--secret", "secret_name", help="the Secret's name [default: ACCOUNT-grant]")
def grant(account: str, namespace: str, key_file: pathlib.Path, days: int, secret_name: str | None) -> None:
    if not names.is_account_name(account):
        raise click.BadParameter(f"{account!r} is not an account name ({names.ACCOUNT_PATTERN})", param_hint="--account")
    if not DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise click.BadParameter(f"{namespace!r} is not a namespace name", param_hint="--namespace")
    secret = secret_name or f"{account.replace('_', '-').replace('.', '-')}-grant"
    if not DNS_LABEL.match(secret) or len(secret) > 253:
        raise click.BadParameter(f"{secret!r} is not a Secret name", param_hint="--secret")
    signed = names.Grant(account, namespace, int(time.time()) + days * 86400).signed(_load_key(key_file))
    click.echo(f"# account {account} pays for Deployments of namespace {namespace} for {days} days; "
               f"kubectl apply -f this, then payer: {{account: {account}, secretRef: {{name: {secret}, key: grant}}}}")
    click.echo(yaml.safe_dump(tenancy.grant_secret(signed, secret), sort_keys=False), nl=False)


@main.command("farm-consent", help="As a farm's owner, let a Node of another namespace join the farm: print the "
                                   "annotation (signed with the farm owner key) to put on that Node.")
@click.option("--farm", required=True)
@click.option("--namespace", required=True, help="the Node's namespace")
@click.option("--node", required=True, help="the Node's name")
@click.option("--node-key", required=True, help="the Node's spec.publicKey")
@click.option("--key-file", required=True, type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="the farm owner's key file (its public half is the Farm's spec.ownerKey)")
def farm_consent(farm: str, namespace: str, node: str, node_key: str, key_file: pathlib.Path) -> None:
    signature = _load_key(key_file).sign(names.FARM_CONSENT, names.consent_payload(
        farm=farm, namespace=namespace, node=node, node_key=node_key))
    click.echo(yaml.safe_dump({"metadata": {"annotations": {tenancy.CONSENT_ANNOTATION: signature}}}, sort_keys=False), nl=False)
