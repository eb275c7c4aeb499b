"""`quote` and `ledger bills`: the quote equals the first full bill; receipts are readable; bad input is one line."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from click.testing import CliRunner

import ledger_setup
from tfgrid_operator import backend, cli
from tfgrid_operator.backend import records
from tfgrid_operator.domain import identity, money, scheduling
from tfgrid_operator.domain.units import Resources

H = 3600
ALICE = identity.KeyPair.generate()  # the payer's twin key
OWN = records.Owner("ns1", "farm-uid")
PROOF = records.PayerProof(kind="key", namespace="ns1", public_key=ALICE.public_key)  # as a Secret of ns1 holds it


async def _grid(url: str, *, certified: bool, balance: int) -> None:
    """A farm with node n1 (capacity attested by its key; certified by a council member's signature when asked:
    a Node's spec cannot make it certified, §1.2), and the payer alice."""
    lg = await backend.open_backend(url)
    try:
        node, capacity = identity.KeyPair.generate(), Resources(cru=8, mru=32, sru=1000, hru=4000)
        await ledger_setup.farm_and_node(lg, owner=OWN, owner_key=identity.KeyPair.generate(), node_key=node, node="n1",
                                         resources=capacity, public_ips=2, country="BE", city="Ghent",
                                         certified=certified)
        await ledger_setup.attest(lg, node="n1", resources=capacity, ts=0, key=node)  # the agent measured the spec
        if certified:  # spec.certified is only what the farmer expects: a council member certifies
            await ledger_setup.certify(lg, node="n1", certified=True, ts=0, key=identity.KeyPair.generate())
        await lg.ensure_account(name="alice", public_key=ALICE.public_key)
        await lg.fund(name="alice", amount=balance, now=0)
    finally:
        await lg.close()


async def _first_full_bill(url: str, spec: dict) -> int:
    lg = await backend.open_backend(url)
    try:
        r = spec["resources"]
        await lg.open_contract(key="ns1/web", owner_uid="web-uid", proof=PROOF, now=0, request=scheduling.Request(
            resources=Resources(cru=r["cru"], mru=r["mru"], sru=r.get("sru", 0)), public_ips=spec.get("publicIPs", 0),
            node=spec["placement"]["node"], dedicated=spec["placement"].get("dedicated", False)))
        return (await lg.bill_period(period=0, now=H)).amount
    finally:
        await lg.close()


@pytest.mark.parametrize(("certified", "balance_tft"), [(False, 100), (False, 2000), (True, 1000), (True, 10_000)])
def test_the_quote_equals_the_first_full_bill(tmp_path, certified, balance_tft):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(_grid(url, certified=certified, balance=balance_tft * money.UNITS_PER_TFT))
    spec = {"resources": {"cru": 2, "mru": 4, "sru": 50}, "publicIPs": 1, "payer": {"account": "alice"},
            "placement": {"node": "n1"}}
    manifest = yaml.safe_dump({"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Deployment",
                               "metadata": {"name": "web", "namespace": "ns1"}, "spec": spec})
    out = CliRunner().invoke(cli.main, ["quote", "-", "--ledger-url", url, "--json"], input=manifest)
    assert out.exit_code == 0, out.output
    quoted = json.loads(out.output)
    assert quoted["monthly"] == 720 * quoted["hourly"] and quoted["certified"] is certified
    assert [x["resource"] for x in quoted["breakdown"]] == ["CU", "SU", "IPv4"]
    assert quoted["hourly"] == asyncio.run(_first_full_bill(url, spec))
    if (certified, balance_tft) == (False, 2000):  # §2.6 worked example at 20 mUSD: Bronze, 0.53375 TFT an hour
        assert (quoted["discount"], quoted["hourly"], quoted["grossHourly"]) == ("Bronze", 5_337_500, 7_625_000)
    text = CliRunner().invoke(cli.main, ["quote", "-", "--ledger-url", url], input=manifest)
    assert text.exit_code == 0 and f"hourly:  {money.tft(quoted['hourly'])} TFT" in text.output


def test_the_quote_of_a_rented_node_equals_its_first_full_bill(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(_grid(url, certified=False, balance=100 * money.UNITS_PER_TFT))
    spec = {"resources": {"cru": 1, "mru": 2}, "publicIPs": 1, "payer": {"account": "alice"},
            "placement": {"node": "n1", "dedicated": True}}
    out = CliRunner().invoke(cli.main, ["quote", "-", "--ledger-url", url, "--json"], input=yaml.safe_dump(spec))
    assert out.exit_code == 0, out.output
    quoted = json.loads(out.output)
    assert quoted["dedicated"] and [x["resource"] for x in quoted["breakdown"]] == ["Rent", "IPv4"]
    assert quoted["hourly"] == asyncio.run(_first_full_bill(url, spec))


def test_ledger_bills_shows_each_bill_and_the_payout(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(_grid(url, certified=False, balance=2000 * money.UNITS_PER_TFT))

    async def bill_and_close() -> None:
        lg = await backend.open_backend(url)
        try:
            await lg.open_contract(key="ns1/web", owner_uid="web-uid", proof=PROOF, now=0, request=scheduling.Request(
                resources=Resources(cru=2, mru=4, sru=50), public_ips=1))
            await lg.bill_period(period=0, now=H)
            await lg.close_contract(key="ns1/web", owner_uid="web-uid", now=H + H // 2, reason="CanceledByUser")
        finally:
            await lg.close()
    asyncio.run(bill_and_close())
    runner = CliRunner()
    out = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "bills", "--deployment", "ns1/web", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [(b["period"], b["seconds"], b["amount"]) for b in data["bills"]] == [(0, H, 5_337_500), (1, H // 2, 2_668_750)]
    assert data["bills"][0]["receipt"]["tftPrice"]["usedMusd"] == 20
    [payout] = data["payouts"]
    assert (payout["amount"], payout["farmer"], payout["reason"]) == (8_006_250, 4_003_125, "Deleted")
    table = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "bills", "--deployment", "ns1/web"])
    assert table.exit_code == 0 and "Bronze" in table.output and "2 bills, 0.800625 TFT billed" in table.output
    assert "payout" in table.output and "farmer ns1/farmer 0.4003125" in table.output
    one = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "bills", "--deployment", "ns1/web", "--period", "7"])
    assert one.exit_code == 0 and "no bills for ns1/web in period 7" in one.output


def test_ledger_fund_pays_a_closed_contracts_debt_first_and_says_so(tmp_path):
    """Debt follows the payer (§2.7): alice's deployment closed in grace owes its final bill; `ledger fund` pays
    that first (and says how much), `ledger show` shows what is still owed."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(_grid(url, certified=False, balance=1))

    async def close_in_grace() -> int:
        lg = await backend.open_backend(url)
        try:
            await lg.open_contract(key="ns1/web", owner_uid="web-uid", proof=PROOF, now=0,
                                   request=scheduling.Request(resources=Resources(cru=2, mru=4, sru=50)))
            await lg.bill_period(period=0, now=H)
            closed = await lg.close_contract(key="ns1/web", owner_uid="web-uid", now=H + 60, reason="CanceledByUser")
            return closed.overdraft
        finally:
            await lg.close()
    owed = asyncio.run(close_in_grace())
    runner = CliRunner()
    shown = json.loads(runner.invoke(cli.main, ["ledger", "--ledger-url", url, "show", "--json"]).output)
    assert {"name": "alice", "balance": 0, "debt": owed} in shown["accounts"]
    part = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "fund", "alice", money.tft(owed // 2)])
    assert part.exit_code == 0, part.output
    assert part.output.strip() == (f"alice\t0 TFT ({money.tft(owed // 2)} TFT paid what it owed on closed contracts); "
                                   f"still owes {money.tft(owed - owed // 2)} TFT")
    rest = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "fund", "alice", "1"])
    assert rest.output.strip() == (f"alice\t{money.tft(money.UNITS_PER_TFT - (owed - owed // 2))} TFT "
                                   f"({money.tft(owed - owed // 2)} TFT paid what it owed on closed contracts)")
    bills = json.loads(runner.invoke(cli.main, ["ledger", "--ledger-url", url, "bills", "--deployment", "ns1/web",
                                                "--json"]).output)
    assert [p["reason"] for p in bills["payouts"]] == ["Deleted", "Debt", "Debt"]


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["quote", "-"], "a: [", "not YAML"),
    (["quote", "-"], "- 1", "a YAML mapping"),
    (["quote", "-"], "kind: Farm\nspec: {}", "expected kind Deployment"),
    (["quote", "-"], "resources: {cru: 2, mru: 4}\npayer: {account: alice}\nbogus: 1", "invalid Deployment spec"),
    (["quote", "-"], "resources: {cru: 2, mru: 4}\npayer: {secretRef: {name: s}}", "name the account with --payer"),
    (["quote", "-"], "resources: {cru: 2, mru: 4}\npayer: {account: nobody}", "account 'nobody' does not exist"),
    (["quote", "-"], "resources: {cru: 2, mru: 4}\npayer: {account: alice}\nplacement: {dedicated: true}",
     "set placement.node"),
    (["ledger", "bills", "--deployment", "web"], "", "expected NAMESPACE/NAME"),
])
def test_bad_input_is_one_line(tmp_path, args, stdin, message):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(_grid(url, certified=False, balance=1))
    args = ["ledger", "--ledger-url", url, *args[1:]] if args[0] == "ledger" else [*args, "--ledger-url", url]
    out = CliRunner().invoke(cli.main, args, input=stdin)
    assert out.exit_code != 0 and message in out.output and "Traceback" not in out.output, out.output


def test_a_file_of_several_deployments_quotes_each(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(_grid(url, certified=False, balance=100 * money.UNITS_PER_TFT))
    docs = "\n---\n".join(yaml.safe_dump({"kind": "Deployment", "metadata": {"name": name}, "spec": {
        "resources": {"cru": cru, "mru": 4, "sru": 50}, "payer": {"account": "alice"}}}) for name, cru in (("a", 2), ("b", 4)))
    out = CliRunner().invoke(cli.main, ["quote", "-", "--ledger-url", url, "--json"], input=docs)
    assert out.exit_code == 0, out.output
    # no discount at 100 TFT: a = CU 1, SU 0.25 → 5,625,000; b = CU min(max(1, 2), max(0.5, 4), max(2, 1)) = 2 → 10,625,000
    assert [(q["name"], q["hourly"]) for q in json.loads(out.output)] == [("a", 5_625_000), ("b", 10_625_000)]
    text = CliRunner().invoke(cli.main, ["quote", "-", "--ledger-url", url], input=docs)
    assert text.exit_code == 0 and text.output.count("hourly:") == 2 and text.output.startswith("a: payer alice")
