"""`grant` and `farm-consent`: the signed statements that let another namespace spend or join (design.md "Trust
model"). Both are signed with a key file locally; nothing is sent anywhere, the output is applied by the tenant.
`ledger revoke-grant`: the ledger's keeper withdraws a grant at its twin's request."""

from __future__ import annotations

import base64
import binascii
import json
import pathlib
from typing import IO

import click
import yaml

from tfgrid_operator import clock
from tfgrid_operator.cli.app import _load_key, main
from tfgrid_operator.cli.ledger_cmds import _with_ledger, ledger
from tfgrid_operator.domain import names
from tfgrid_operator.handlers import tenancy


@main.command(help="Let the Deployments of one namespace bill a twin account: sign a grant with the twin's key "
                   "and print it as a Secret to apply in that namespace. Deployments then name "
                   "`payer: {account: ACCOUNT, grantRef: {name: SECRET}}`.")
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
    if not names.DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise click.BadParameter(f"{namespace!r} is not a namespace name", param_hint="--namespace")
    secret = secret_name or f"{account.replace('_', '-').replace('.', '-')}-grant"
    if not names.DNS_LABEL.match(secret) or len(secret) > 253:
        raise click.BadParameter(f"{secret!r} is not a Secret name", param_hint="--secret")
    signed = names.Grant(account, namespace, clock.SystemClock().now() + days * 86400).signed(_load_key(key_file))
    click.echo(f"# account {account} pays for Deployments of namespace {namespace} for {days} days; "
               f"kubectl apply -f this, then payer: {{account: {account}, grantRef: {{name: {secret}}}}}")
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


def _grant_in(text: str) -> dict[str, object]:
    """The grant in what `grant` printed (its Secret), or in the grant's JSON itself."""
    try:
        doc = yaml.safe_load(text)
        if isinstance(doc, dict) and doc.get("kind") == "Secret":
            doc = json.loads(base64.b64decode(doc["data"]["grant"], validate=True))
        if isinstance(doc, dict) and isinstance(doc.get("account"), str) and isinstance(doc.get("signature"), str):
            return doc
    except (yaml.YAMLError, ValueError, binascii.Error, KeyError, TypeError):
        pass
    raise click.ClickException("that is not a grant: give the Secret `tfgrid-operator grant` printed, or its JSON")


@ledger.command("revoke-grant", help="Withdraw a grant (the Secret `tfgrid-operator grant` printed, or - for stdin): "
                                     "it is never accepted again, and the contracts resting on it are closed now "
                                     "with their final bill.")
@click.argument("grant_file", type=click.File("r"))
@click.pass_context
def revoke_grant(ctx: click.Context, grant_file: IO[str]) -> None:
    grant = _grant_in(grant_file.read())
    closed = _with_ledger(ctx, lambda lg: lg.revoke_grant(account=str(grant["account"]), signature=str(grant["signature"]),
                                                          now=clock.SystemClock().now()))
    click.echo(f"grant of account {grant['account']} for namespace {grant.get('namespace')} revoked; "
               f"{len(closed)} contract(s) closed with a final bill" + "".join(f"\n  {c.key}" for c in closed))
