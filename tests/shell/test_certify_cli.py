"""`council certify`: a council member's signature over one ledger node (§1.2 set_node_certification)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tfgrid_operator import cli
from tfgrid_operator.domain import identity
from tfgrid_operator.domain.attestation import certification_payload
from tfgrid_operator.domain.units import Resources


def test_certify_and_revoke_print_a_signature_over_the_ledger_node(tmp_path):
    runner = CliRunner()
    key = tmp_path / "c.key"
    assert runner.invoke(cli.main, ["keygen", str(key)]).exit_code == 0
    pub = identity.KeyPair.from_text(key.read_text()).public_key
    for flags, certified in ((["--capacity", "8,32,1000,0"], True), (["--revoke"], False)):
        out = runner.invoke(cli.main, ["council", "certify", "--node", "node2", "--node-id", "3", "--key-file", str(key),
                                       "--print", *flags])
        assert out.exit_code == 0, out.output
        entry = json.loads(out.output)
        assert (entry["node"], entry["nodeId"], entry["certified"], entry["memberKey"]) == ("node2", 3, certified, pub)
        held = Resources(cru=8, mru=32, sru=1000) if certified else None  # a certification names the capacity
        identity.verify(pub, identity.CERTIFICATION, certification_payload(
            node="node2", node_id=3, certified=certified, ts=entry["ts"], resources=held), entry["signature"])
    out = runner.invoke(cli.main, ["council", "certify", "--node", "node2", "--node-id", "3", "--key-file", str(key),
                                   "--print"])
    assert out.exit_code == 2 and "--capacity" in out.output


def test_certify_without_a_cluster_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    key = tmp_path / "c.key"
    runner = CliRunner()
    assert runner.invoke(cli.main, ["keygen", str(key)]).exit_code == 0
    out = runner.invoke(cli.main, ["council", "certify", "--node", "node2", "--key-file", str(key)])
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1 and out.output.startswith("Error:")
