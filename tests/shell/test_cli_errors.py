"""Every CLI mistake a newcomer makes is one line `Error: …`, a non-zero exit and no traceback (table-driven).

Each case builds what it needs in a temporary folder, runs the command and checks the one line. The `vote`
verdict, `keygen`'s file safety and the vote messages are tested with the trust model."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import re
import sqlite3
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from tfgrid_operator import cli
from tfgrid_operator.sandbox import local

# names of exception classes a message must never show (the message says what happened instead)
LEAKS = re.compile(r"\b(\w+Error|\w+Exception|NotFound|InvalidRequest|Traceback)\b")


@dataclasses.dataclass
class Case:
    name: str
    args: Callable[[pathlib.Path], list[str]]  # the command line, given the case's folder
    says: str  # a regular expression the one line must match
    setup: Callable[[pathlib.Path], None] = lambda _: None


def ledger(tmp: pathlib.Path, *args: str) -> list[str]:
    return ["ledger", "--ledger-url", f"sqlite:///{tmp / 'l.db'}", *args]


def _key(tmp: pathlib.Path, name: str) -> pathlib.Path:
    assert CliRunner().invoke(cli.main, ["keygen", str(tmp / name)]).exit_code == 0
    return tmp / name


def _alice(tmp: pathlib.Path) -> None:
    assert CliRunner().invoke(cli.main, ledger(tmp, "create-account", "alice")).exit_code == 0


def _alice_keyed(tmp: pathlib.Path) -> None:
    out = CliRunner().invoke(cli.main, ledger(tmp, "create-account", "alice", "--key-file", str(_key(tmp, "a.key"))))
    assert out.exit_code == 0, out.output
    _key(tmp, "other.key")


def _write(name: str, data: bytes) -> Callable[[pathlib.Path], None]:
    def setup(tmp: pathlib.Path) -> None:
        _key(tmp, "c.key")
        (tmp / name).write_bytes(data)
    return setup


def _bad_example(tmp: pathlib.Path) -> None:
    (tmp / "ex").mkdir()
    (tmp / "ex" / "farm.yaml").write_text(
        "apiVersion: grid.threefold.io/v1alpha1\nkind: Farm\nmetadata: {name: f}\n"
        "spec: {ownerKey: x, payoutAccount: f-payout}\n")
    (tmp / "ex" / "nodes.yaml").write_text(
        "apiVersion: grid.threefold.io/v1alpha1\nkind: Node\nmetadata: {name: n1}\n"
        "spec: {farm: f, publicKey: x, resources: {cru: lots, mru: 4, sru: 10}, location: {country: BE, city: Ghent}}\n")


PROPOSAL = b"kind: Proposal\nmetadata: {name: p}\nspec: {title: t, action: {type: SetPricingPolicy, pricing: {cu: 1}}}\n"
CASES = [
    Case("keygen into a folder that does not exist", lambda t: ["keygen", "/no/such/dir/k.key"],
         r"/no/such/dir does not exist"),
    Case("council sign on malformed YAML", lambda t: ["council", "sign", str(t / "p.yaml"), "--key-file", str(t / "c.key")],
         r"p\.yaml is not valid YAML", _write("p.yaml", b"kind: Proposal\nmetadata: [\n")),
    Case("council sign on a file that is not UTF-8",
         lambda t: ["council", "sign", str(t / "p.yaml"), "--key-file", str(t / "c.key")],
         r"p\.yaml is not UTF-8 text", _write("p.yaml", b"kind: Proposal\ntitle: \xff\xfe\n")),
    Case("council sign on two documents", lambda t: ["council", "sign", str(t / "p.yaml"), "--key-file", str(t / "c.key")],
         r"p\.yaml holds 2 YAML documents", _write("p.yaml", PROPOSAL + b"---\n" + PROPOSAL)),
    Case("fund beyond the maximum balance", lambda t: ledger(t, "fund", "alice", "100000000001"),
         r"a balance is at most 100000000000 TFT", _alice),
    Case("fund a negative amount", lambda t: ledger(t, "fund", "alice", "-5"), r"'-5' is not a positive TFT amount", _alice),
    Case("fund 1e30", lambda t: ledger(t, "fund", "alice", "1e30"), r"'1e30' is not a positive TFT amount", _alice),
    Case("fund nothing", lambda t: ledger(t, "fund", "alice", "0"), r"'0' is not a positive TFT amount", _alice),
    Case("fund an account that does not exist", lambda t: ledger(t, "fund", "bob", "1"), r"account 'bob' does not exist"),
    Case("an unsupported ledger URL", lambda t: ["ledger", "--ledger-url", "mysql://x", "show"], r"unsupported ledger URL"),
    Case("an account name no Deployment could use", lambda t: ledger(t, "create-account", "Bad Name!"),
         r"'Bad Name!' is not an account name"),
    Case("two accounts sharing one key", lambda t: ledger(t, "create-account", "bob", "--key-file", str(t / "a.key")),
         r"that key already identifies account 'alice'", _alice_keyed),
    Case("an existing account given another key",
         lambda t: ledger(t, "create-account", "alice", "--key-file", str(t / "other.key")),
         r"account 'alice' exists with another key", _alice_keyed),
    Case("a key file that is not UTF-8", lambda t: ledger(t, "create-account", "eve", "--key-file", str(t / "bin.key")),
         r"not UTF-8 text", lambda t: (t / "bin.key").write_bytes(b"\xff\xfe\xfd")),
    Case("a sandbox on a ledger URL it cannot use", lambda t: ["sandbox", "--days", "1", "--ledger-url", "mysql://x"],
         r"unsupported ledger URL 'mysql'"),
    Case("a sandbox on a PostgreSQL ledger that is not there",
         lambda t: ["sandbox", "--days", "1", "--ledger-url", "postgresql://nobody@127.0.0.1:1/none"],
         r"cannot open the ledger at postgresql://nobody@127\.0\.0\.1:1/none"),
    Case("a sandbox example the schema refuses", lambda t: ["sandbox", "--days", "1", "--examples", str(t / "ex"),
                                                             "--picture", str(t / "m.svg")],
         r"nodes\.yaml: Node default/n1 was refused: .*spec\.resources\.cru", _bad_example),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_mistake_is_one_line(case: Case, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "unused"))
    monkeypatch.delenv("TFGRID_LEDGER_URL", raising=False)
    case.setup(tmp_path)
    out = CliRunner().invoke(cli.main, case.args(tmp_path))
    lines = out.output.strip().splitlines()
    assert out.exit_code != 0 and isinstance(out.exception, SystemExit), out.output  # an exit, not a crash
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.output
    assert re.search(case.says, lines[0]), lines[0]
    assert not LEAKS.search(lines[0].removeprefix("Error: ")), lines[0]


def test_the_ledger_stays_readable_after_a_refused_funding(tmp_path):
    runner = CliRunner()
    _alice(tmp_path)
    assert runner.invoke(cli.main, ledger(tmp_path, "fund", "alice", "99999999999")).exit_code == 0
    assert runner.invoke(cli.main, ledger(tmp_path, "fund", "alice", "2")).exit_code == 1
    with sqlite3.connect(tmp_path / "l.db") as conn:
        assert conn.execute("SELECT typeof(balance) FROM accounts WHERE name = 'alice'").fetchone() == ("integer",)
    shown = runner.invoke(cli.main, ledger(tmp_path, "show"))
    assert shown.exit_code == 0 and "balance=99999999999" in shown.output


def test_the_same_key_again_is_idempotent(tmp_path):
    _alice_keyed(tmp_path)
    again = CliRunner().invoke(cli.main, ledger(tmp_path, "create-account", "alice", "--key-file", str(tmp_path / "a.key")))
    assert again.exit_code == 0 and again.output.startswith("alice\t")


def test_version():
    out = CliRunner().invoke(cli.main, ["--version"])
    assert out.exit_code == 0 and re.fullmatch(r"tfgrid-operator \d+\.\d+\.\d+\S*\n", out.output)


async def test_a_node_agent_for_a_node_that_does_not_exist_stops_after_its_wait(tmp_path):
    key = _key(tmp_path, "ghost.key")
    async with local.local_api(record_requests=False):  # a real API server with the CRDs, no Node named ghost
        out = await asyncio.to_thread(CliRunner().invoke, cli.main, ["node-agent", "--node", "ghost", "--key-file", str(key),
                                                                     "--wait", "0.5", "--count", "1"])
    lines = out.output.strip().splitlines()
    assert out.exit_code == 1 and lines == ["Error: node default/ghost does not exist after 0.5 s: create the Node "
                                            "(kubectl get gnode -n default) and check its status"], out.output
