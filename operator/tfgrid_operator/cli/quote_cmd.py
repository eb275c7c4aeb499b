"""`quote`: price a Deployment spec for a payer without creating anything — the same code billing runs."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import click
import yaml

from tfgrid_operator import api, backend
from tfgrid_operator.cli.app import _run, main
from tfgrid_operator.domain import money, pricing
from tfgrid_operator.settings import Settings

HOURS_PER_MONTH = pricing.SECONDS_PER_MONTH // pricing.SECONDS_PER_HOUR  # §2.6: 30 days


def _specs(text: str) -> list[tuple[str, api.DeploymentSpec]]:
    """Every Deployment in the YAML (a manifest, several separated by ---, or a bare spec), with its name."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise click.ClickException(f"not YAML: {str(exc).splitlines()[0]}") from exc
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise click.ClickException("expected a Deployment (or its spec) as a YAML mapping")
    out = []
    for doc in docs:
        name = "spec"
        if "spec" in doc:
            if doc.get("kind", "Deployment") != "Deployment":
                raise click.ClickException(f"expected kind Deployment, got {doc.get('kind')!r}")
            name = str((doc.get("metadata") or {}).get("name", "deployment"))
            doc = doc["spec"]
        try:
            out.append((name, api.parse(api.DeploymentSpec, doc)))
        except api.InvalidSpec as exc:
            raise click.ClickException(f"invalid Deployment spec ({name}): {exc}") from exc
    return out


async def price(lg: backend.GridBackend, spec: api.DeploymentSpec, payer: str,
                tft_price: pricing.TftPrice) -> dict[str, Any]:
    """The quote as data: an hour's bill as billing would make it now (the payer's balance, the ledger's pricing
    policy, the TFT price), the month at that rate, and the per-resource breakdown."""
    account = await lg.get_account(name=payer)
    policy, _ = await lg.policies()
    p = spec.placement
    certified, dedicated_node = p.certified_only, None
    if p.node is not None:
        node = await lg.observe_node(name=p.node)
        if node is None:
            raise click.ClickException(f"placement.node {p.node!r} is not on the ledger")
        certified, dedicated_node = node.certified, node.resources if p.dedicated else None
    elif p.dedicated:
        raise click.ClickException("a dedicated Deployment rents its whole node: set placement.node to quote it")
    hour = pricing.bill(resources=spec.capacity, public_ips=spec.public_ips, seconds=pricing.SECONDS_PER_HOUR,
                        certified=certified, dedicated_node=dedicated_node, balance=account.balance, policy=policy,
                        price=tft_price)
    lines = pricing.breakdown(resources=spec.capacity, public_ips=spec.public_ips, seconds=pricing.SECONDS_PER_HOUR,
                              dedicated_node=dedicated_node, policy=policy, price=tft_price)
    return {
        "payer": payer, "balance": account.balance, "certified": certified, "dedicated": dedicated_node is not None,
        "tftPriceMusd": tft_price.effective(), "hourly": hour.amount, "monthly": hour.amount * HOURS_PER_MONTH,
        "grossHourly": hour.gross, "discount": str(hour.discount), "discountPercent": hour.discount_percent,
        "certifiedPercent": hour.certified_percent, "costUnitsUsdHourly": hour.cost_units_usd,
        "breakdown": [{"resource": x.name, "units": _decimal(x.units), "priceUnitsUsdPerHour": x.price,
                       "tftHourly": x.tft} for x in lines],
    }


def _decimal(value: Fraction) -> str:
    """CU, SU and IP counts for reading: three decimals, exact values stay exact ("0.25", "1")."""
    whole, frac = divmod(money.round_half_up(value * 1000), 1000)
    return f"{whole}.{frac:03d}".rstrip("0").rstrip(".")


@main.command(help="Price a Deployment (a manifest or its spec, from FILE or - for stdin) for a payer without "
              "creating it: hourly and monthly (720 h) cost, the discount level the payer's balance gives, and "
              "the cost per resource. It runs the same code as billing: a Deployment created now is billed "
              "exactly the hourly amount for its first full hour, while the balance stays the same. The node's "
              "certification (×1.25) is known when placement.node is set, and assumed for certifiedOnly.")
@click.argument("file", type=click.File("r"), default="-")
@click.option("--payer", help="the twin account that would pay (default: the spec's payer.account)")
@click.option("--ledger-url", envvar="TFGRID_LEDGER_URL", default=lambda: Settings().ledger_url, show_default="settings",
              help="the ledger to read the balance and pricing policy from")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def quote(file: Any, payer: str | None, ledger_url: str, as_json: bool) -> None:
    specs = _specs(file.read())
    payers = [payer or spec.payer.account for _, spec in specs]
    if None in payers:
        raise click.ClickException("the spec pays through a secretRef: name the account with --payer")
    tft_price = pricing.TftPrice(average_musd=Settings().tft_price_musd)

    async def go() -> list[dict[str, Any]]:
        lg = await backend.open_backend(ledger_url)
        try:
            return [{"name": name, **await price(lg, spec, who, tft_price)}
                    for (name, spec), who in zip(specs, payers, strict=True) if who is not None]
        finally:
            await lg.close()
    quotes = _run(go())
    if as_json:  # one object for one Deployment, a list for several
        click.echo(json.dumps(quotes[0] if len(quotes) == 1 else quotes, sort_keys=True))
        return
    for data in quotes:
        discount = f"{data['discount']} (pays {data['discountPercent']} %)"
        click.echo(f"{data['name']}: payer {data['payer']}: balance {money.tft(data['balance'])} TFT → discount "
                   f"{discount}; TFT at {data['tftPriceMusd']} mUSD; certified node: "
                   f"{'yes ×1.25' if data['certified'] else 'no'}")
        click.echo("  resource  units       units USD/h   TFT/h (before discount)")
        for line in data["breakdown"]:
            click.echo(f"  {line['resource']:<9} {line['units']:<11} {line['priceUnitsUsdPerHour']:<13} "
                       f"{money.tft(line['tftHourly'])}")
        click.echo(f"  hourly:  {money.tft(data['hourly'])} TFT (gross {money.tft(data['grossHourly'])})")
        click.echo(f"  monthly: {money.tft(data['monthly'])} TFT ({HOURS_PER_MONTH} h at this rate; the discount "
                   f"level follows the balance)")
