"""Key files are private from their first byte and never follow a planted path; grants and farm consents made on
the command line are what the ledger verifies (design.md "Trust model")."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import pytest
import yaml
from click.testing import CliRunner

from tfgrid_operator import cli
from tfgrid_operator.cli import keys
from tfgrid_operator.domain import identity, names


def keygen(path) -> tuple[int, str]:
    out = CliRunner().invoke(cli.main, ["keygen", str(path)])
    return out.exit_code, out.output


def one_line_error(output: str, *words: str) -> None:
    assert "Traceback" not in output and output.strip().count("\n") == 0, output
    assert output.startswith("Error: ") and all(w in output for w in words), output


def test_keygen_creates_mode_0600_from_the_first_byte(tmp_path, monkeypatch):
    created = []
    real_open = os.open

    def watching_open(path, flags, mode=0o777, *args, **kwargs):
        created.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(keys.os, "open", watching_open)
    old = os.umask(0)  # even with no umask at all, the file is never readable by others
    try:
        code, out = keygen(tmp_path / "k.key")
    finally:
        os.umask(old)
    assert code == 0 and identity.is_public_key(out.strip())
    (flags, mode), = created
    assert mode == 0o600 and flags & os.O_CREAT and flags & os.O_EXCL and flags & os.O_NOFOLLOW
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    identity.KeyPair.from_text((tmp_path / "k.key").read_text())


def test_keygen_refuses_an_existing_file_a_planted_symlink_and_a_missing_folder(tmp_path):
    existing = tmp_path / "existing.key"
    existing.write_text("keep me")
    code, out = keygen(existing)
    assert code != 0 and existing.read_text() == "keep me"
    one_line_error(out, "exists")
    target = tmp_path / "victim"
    for dangling in (False, True):
        link = tmp_path / f"planted-{dangling}.key"
        if not dangling:
            target.write_text("victim's file")
        link.symlink_to(tmp_path / ("nowhere" if dangling else "victim"))
        code, out = keygen(link)
        assert code != 0 and link.is_symlink()
        one_line_error(out, "exists")
    assert target.read_text() == "victim's file" and not (tmp_path / "nowhere").exists()
    code, out = keygen(tmp_path / "no-such-folder" / "k.key")
    assert code != 0
    one_line_error(out, "does not exist")


def test_grant_prints_a_secret_the_ledger_verifies_for_that_namespace_only(tmp_path):
    runner = CliRunner()
    key_file = tmp_path / "alice.key"
    assert keygen(key_file)[0] == 0
    twin = identity.KeyPair.from_text(key_file.read_text())
    out = runner.invoke(cli.main, ["grant", "--account", "alice", "--namespace", "team-a", "--key-file", str(key_file),
                                   "--days", "30"])
    assert out.exit_code == 0, out.output
    secret = yaml.safe_load(out.output)
    assert secret["kind"] == "Secret" and secret["metadata"] == {"name": "alice-grant", "namespace": "team-a"}
    g = json.loads(base64.b64decode(secret["data"]["grant"]))
    grant = names.Grant(g["account"], g["namespace"], g["expires"], g["signature"])
    now = int(time.time())
    assert grant.problem(public_key=twin.public_key, namespace="team-a", now=now) is None
    assert 29 * 86400 < grant.expires - now <= 30 * 86400
    assert "another namespace" in grant.problem(public_key=twin.public_key, namespace="team-b", now=now)
    assert "not signed" in grant.problem(public_key=identity.KeyPair.generate().public_key, namespace="team-a", now=now)
    assert "expired" in grant.problem(public_key=twin.public_key, namespace="team-a", now=grant.expires)
    assert str(twin.seed) not in out.output and key_file.read_text().strip() not in out.output


@pytest.mark.parametrize("args", [
    ["--account", "Alice", "--namespace", "team-a"],
    ["--account", "alice", "--namespace", "Team_A"],
    ["--account", "alice", "--namespace", "team-a", "--days", "400"],
    ["--account", "alice", "--namespace", "team-a", "--days", "0"],
])
def test_a_bad_grant_request_is_a_one_line_error(tmp_path, args):
    key_file = tmp_path / "k.key"
    assert keygen(key_file)[0] == 0
    out = CliRunner().invoke(cli.main, ["grant", *args, "--key-file", str(key_file)])
    assert out.exit_code == 2 and "Traceback" not in out.output


def test_farm_consent_signs_exactly_the_node_it_names(tmp_path):
    key_file = tmp_path / "farmer.key"
    assert keygen(key_file)[0] == 0
    farmer = identity.KeyPair.from_text(key_file.read_text())
    node_key = identity.KeyPair.generate().public_key
    out = CliRunner().invoke(cli.main, ["farm-consent", "--farm", "freefarm", "--namespace", "team-b", "--node", "n9",
                                        "--node-key", node_key, "--key-file", str(key_file)])
    assert out.exit_code == 0, out.output
    signature = yaml.safe_load(out.output)["metadata"]["annotations"]["grid.threefold.io/farm-consent"]
    common = dict(owner_key=farmer.public_key, farm="freefarm", node_key=node_key, signature=signature)
    assert names.consent_holds(namespace="team-b", node="n9", **common)
    assert not names.consent_holds(namespace="team-c", node="n9", **common)
    assert not names.consent_holds(namespace="team-b", node="n8", **common)


def test_create_account_with_a_key_another_account_has_is_a_one_line_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    key_file = tmp_path / "k.key"
    assert keygen(key_file)[0] == 0
    runner = CliRunner()
    ok = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "create-account", "alice", "--key-file", str(key_file)])
    assert ok.exit_code == 0, ok.output
    out = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "create-account", "mallory", "--key-file",
                                   str(key_file)])
    assert out.exit_code != 0 and "Traceback" not in out.output and "already identifies account" in out.output
    bad = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "fund", "alice", str(10**12)])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "a balance is at most" in bad.output and bad.output.startswith("Error: ")


def test_revoke_grant_withdraws_what_grant_printed(tmp_path):
    import asyncio

    from tfgrid_operator import backend
    from tfgrid_operator.backend import errors, records

    url = f"sqlite:///{tmp_path / 'l.db'}"
    key_file = tmp_path / "alice.key"
    assert keygen(key_file)[0] == 0
    runner = CliRunner()
    assert runner.invoke(cli.main, ["ledger", "--ledger-url", url, "create-account", "alice", "--key-file",
                                    str(key_file)]).exit_code == 0
    printed = runner.invoke(cli.main, ["grant", "--account", "alice", "--namespace", "team-a", "--key-file",
                                       str(key_file)]).output
    (tmp_path / "grant.yaml").write_text(printed)
    out = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "revoke-grant", str(tmp_path / "grant.yaml")])
    assert out.exit_code == 0 and "revoked; 0 contract(s) closed" in out.output, out.output
    again = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "revoke-grant", "-"], input=printed)
    assert again.exit_code == 0, again.output  # idempotent, and from stdin
    junk = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "revoke-grant", "-"], input="kind: Secret\n")
    assert junk.exit_code != 0 and "not a grant" in junk.output and "Traceback" not in junk.output
    g = json.loads(base64.b64decode(yaml.safe_load(printed)["data"]["grant"]))
    proof = records.PayerProof(kind="grant", namespace="team-a", account="alice", expires=g["expires"],
                               signature=g["signature"])

    async def open_with_it() -> None:
        lg = await backend.open_backend(url)
        try:
            with pytest.raises(errors.NotAuthorized, match="revoked"):
                from tfgrid_operator.domain import scheduling
                from tfgrid_operator.domain.units import Resources

                await lg.open_contract(key="team-a/d", owner_uid="u", proof=proof,
                                       request=scheduling.Request(resources=Resources(1, 1)), now=int(time.time()))
        finally:
            await lg.close()
    asyncio.run(open_with_it())
