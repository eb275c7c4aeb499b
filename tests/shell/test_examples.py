import pathlib

import jsonschema
import yaml

from tfgrid_operator import api

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = {"Farm": api.FarmSpec, "Node": api.NodeSpec, "Deployment": api.DeploymentSpec,
          "Proposal": api.ProposalSpec}


def test_examples_validate_against_crds_and_models():
    schemas = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        schemas[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    docs = [d for p in sorted((ROOT / "examples").rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert {d["kind"] for d in docs} >= {"Farm", "Node", "Deployment", "Proposal"}
    for doc in docs:
        if doc["kind"] not in MODELS:
            continue  # core kinds (the payer's Secret)
        spec_schema = schemas[doc["kind"]]["properties"]["spec"]
        jsonschema.validate(doc["spec"], spec_schema)
        api.parse(MODELS[doc["kind"]], doc["spec"])


def test_example_proposal_is_signed_by_its_council_key():
    from tfgrid_operator.domain import identity, voting

    doc = yaml.safe_load((ROOT / "examples" / "proposal.yaml").read_text())
    spec = api.parse(api.ProposalSpec, doc["spec"])
    assert spec.nonce and voting.is_nonce(spec.nonce)  # a signature opens one proposal, once (issue 13)
    identity.verify(spec.council_key, voting.PROPOSAL_V2, spec.signed_payload(f"default/{doc['metadata']['name']}"),
                    spec.council_signature)
