"""The CLI: clear one-line errors, never a traceback."""

from click.testing import CliRunner

from tfgrid_operator import cli


def test_ledger_fund_and_show(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    assert runner.invoke(cli.main, ["ledger", "--ledger-url", url, "create-account", "alice"]).exit_code == 0
    out = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "fund", "alice", "1.5"])
    assert out.exit_code == 0 and "alice\t1.5 TFT" in out.output
    shown = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "show", "--json"])
    assert '"balance": 15000000' in shown.output


def test_bad_amount_unknown_account_and_bad_url_are_one_line_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    bad = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "fund", "alice", "1.2.3"])
    assert bad.exit_code == 1 and "'1.2.3' is not a positive TFT amount" in bad.output
    missing = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "fund", "bob", "1"])
    assert missing.exit_code == 2 and "Error: account 'bob' does not exist" in missing.output
    wrong = runner.invoke(cli.main, ["ledger", "--ledger-url", "mysql://x", "show"])
    assert wrong.exit_code == 2 and "unsupported ledger URL" in wrong.output


def test_node_agent_without_a_cluster_or_with_a_bad_key(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    runner = CliRunner()
    key = tmp_path / "node.key"
    assert runner.invoke(cli.main, ["keygen", str(key)]).exit_code == 0
    again = runner.invoke(cli.main, ["keygen", str(key)])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output
    out = runner.invoke(cli.main, ["node-agent", "--node", "n1", "--key-file", str(key), "--count", "1"])
    assert out.exit_code == 1 and "no usable cluster in kubeconfig" in out.output
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not base64!")
    out = runner.invoke(cli.main, ["node-agent", "--node", "n1", "--key-file", str(bad_key)])
    assert out.exit_code == 1 and "cannot read an ed25519 key" in out.output


def test_create_account_with_a_twin_key(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    key = tmp_path / "bob.key"
    assert runner.invoke(cli.main, ["keygen", str(key)]).exit_code == 0
    out = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "create-account", "bob", "--key-file", str(key)])
    assert out.exit_code == 0, out.output
    bad = tmp_path / "bad.key"
    bad.write_text("xyz")
    out = runner.invoke(cli.main, ["ledger", "--ledger-url", url, "create-account", "eve", "--key-file", str(bad)])
    assert out.exit_code == 1 and "cannot read an ed25519 key" in out.output and "Traceback" not in out.output


def test_council_sign_and_print_only_vote_and_veto(tmp_path):
    import json

    import yaml

    from tfgrid_operator import api, ballot
    from tfgrid_operator.domain import identity, voting

    runner = CliRunner()
    key = tmp_path / "c.key"
    assert runner.invoke(cli.main, ["keygen", str(key)]).exit_code == 0
    draft = tmp_path / "p.yaml"
    draft.write_text(yaml.safe_dump({"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Proposal",
                                     "metadata": {"name": "p", "namespace": "gov"},
                                     "spec": {"title": "t", "action": {"type": "SetPricingPolicy", "pricing": {"su": 1}}}}))
    out = runner.invoke(cli.main, ["council", "sign", str(draft), "--key-file", str(key)])
    assert out.exit_code == 0, out.output
    spec = api.parse(api.ProposalSpec, yaml.safe_load(out.output)["spec"])
    identity.verify(spec.council_key, voting.PROPOSAL_V2, spec.signed_payload("gov/p"), spec.council_signature)
    assert voting.is_nonce(spec.nonce) and spec.signed_payload("gov/p")["nonce"] == spec.nonce
    # signed again (a proposal withdrawn, proposed anew): a fresh nonce, so the ledger opens it once more
    (tmp_path / "signed.yaml").write_text(out.output)
    resigned = runner.invoke(cli.main, ["council", "sign", str(tmp_path / "signed.yaml"), "--key-file", str(key)])
    assert resigned.exit_code == 0, resigned.output
    assert yaml.safe_load(resigned.output)["spec"]["nonce"] not in (None, spec.nonce)
    # a draft the schema would refuse is refused here, with the field named
    draft.write_text(yaml.safe_dump({"kind": "Proposal", "metadata": {"name": "p"},
                                     "spec": {"title": "t", "action": {"type": "SetPricingPolicy"}}}))
    out = runner.invoke(cli.main, ["council", "sign", str(draft), "--key-file", str(key)])
    assert out.exit_code == 1 and "needs action.pricing" in out.output
    draft.write_text("kind: Deployment\n")
    out = runner.invoke(cli.main, ["council", "sign", str(draft), "--key-file", str(key)])
    assert out.exit_code == 1 and "is not a Proposal manifest" in out.output
    # offline (a Git pull request): the vote signs the proposal as its status shows the operator opened it
    opened = tmp_path / "opened.yaml"
    opened.write_text(yaml.safe_dump({"kind": "Proposal", "metadata": {"name": "p", "namespace": "gov"},
                                      "spec": spec.model_dump(by_alias=True, exclude_none=True),
                                      "status": {"proposalId": 7, "deadline": "2026-01-02T00:00:00Z"}}))
    out = runner.invoke(cli.main, ["vote", "--proposal", "p", "--namespace", "gov", "--farm", "f1", "--no",
                                   "--key-file", str(key), "--print", "--manifest", str(opened)])
    assert out.exit_code == 0, out.output
    signed = json.loads(out.output)
    pub = identity.KeyPair.from_text(key.read_text()).public_key
    digest = voting.proposal_digest(proposal="gov/p", proposal_id=7, action=spec.action.ledger_action(),
                                    threshold=spec.threshold, end_ts=1_767_312_000, nonce=spec.nonce)
    identity.verify(pub, identity.VOTE_V2, voting.vote_payload(proposal="gov/p", digest=digest, farm="f1",
                                                               approve=False, seq=signed["seq"]), signed["signature"])
    draft.write_text(yaml.safe_dump({"kind": "Proposal", "metadata": {"name": "p"}, "spec": {"title": "t"}}))
    out = runner.invoke(cli.main, ["vote", "--proposal", "p", "--farm", "f1", "--no", "--key-file", str(key),
                                   "--print", "--manifest", str(draft)])
    assert out.exit_code == 1 and "not an open Proposal" in out.output
    out = runner.invoke(cli.main, ["council", "veto", "--proposal", "p", "--key-file", str(key), "--print",
                                   "--proposal-id", "7"])
    assert json.loads(out.output)["memberKey"] == pub
    # a veto binds the proposal's ledger identity: its id and the council signature's nonce (§5)
    out = runner.invoke(cli.main, ["council", "veto", "--proposal", "p", "--namespace", "gov", "--key-file", str(key),
                                   "--print", "--proposal-id", "7", "--nonce", spec.nonce])
    identity.verify(pub, identity.VETO, ballot.veto_payload(proposal="gov/p", proposal_id=7, nonce=spec.nonce),
                    json.loads(out.output)["signature"])


def test_json_log_format_configures_kopf():
    import logging

    cli.configure_logging("json")
    handler = logging.getLogger().handlers[-1]
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    assert '"message": "hello world"' in handler.format(record)
    cli.configure_logging("text")
