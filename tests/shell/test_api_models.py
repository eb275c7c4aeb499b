"""The api models and the CRDs rendered from them agree (tfgrid_operator/api).

What the parser (a Spec model) accepts, the API server accepts: the schema and the CEL rules, checked with the
strict emulator's validators on the examples and on hypothesis-generated objects at and around every bound,
pattern, enum and required field. The other way round the parser refuses only what its documented model-only
rules refuse. A CEL rule and its Python twin say the same on the same objects; the key pattern is exactly the
domain's key check; the statuses the operator writes pass their Status models, and a field a Status model lacks
fails here (not only at e2e time, when the API server would prune it); the printer columns point at fields.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from tfgrid_operator import api, conditions
from tfgrid_operator.api import common, crds
from tfgrid_operator.backend import records
from tfgrid_operator.domain import identity, pricing
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.sandbox import apimachinery as emulator
from tfgrid_operator.sandbox import cel

ROOT = pathlib.Path(__file__).resolve().parents[2]
KINDS = {k.plural: k for k in api.KINDS}
# what the parser refuses and the emulator's API server stores: in a spec, the Proposal action rules (the API
# server does not evaluate them: such a Proposal is stored and reported InvalidSpec); in a status, the date-time
# format and the one condition per type of a map list, which kube-apiserver checks and the emulator does not
MODEL_ONLY = {"spec": ("action needs action.", "the action changes nothing"),
              "status": ("not an RFC 3339 date-time", "two conditions of one type")}


def _part(plural: str, part: str) -> dict[str, Any]:
    return crds.ALL[plural]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][part]


# one wrapper schema per part, made once: the emulator caches a compiled validator per schema object
_WRAPPED = {(p, part): {"type": "object", "properties": {part: _part(p, part)}, "required": [part]}
            for p in KINDS for part in ("spec", "status")}


def server_problems(plural: str, part: str, value: Any) -> list[str]:
    """What the API server (the strict emulator's schema validation, then the CEL rules) says to this value."""
    try:
        emulator.validate({part: value}, _WRAPPED[(plural, part)], KINDS[plural].kind, "x")
    except emulator.ApiError as err:
        return [err.message]
    return cel.violations(_part(plural, part), value)


def parser_problems(plural: str, part: str, value: Any) -> str | None:
    k = KINDS[plural]
    try:
        if part == "spec":
            api.parse(k.spec, value)
        else:
            k.check_status(value)
    except (api.InvalidSpec, api.InvalidStatus) as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- objects near every edge of a schema
WRONG_TYPE = st.sampled_from(["1", 1.5, [], {}, True])  # never null: the API server drops a null before validation


def _iso(ts: datetime.datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nine in ten valid: an object of a dozen fields is then often valid as a whole, or broken in one place."""
    return st.sampled_from(range(10)).flatmap(lambda i: invalid if i == 9 else valid)  # shrinks to valid


def _string(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return _mostly(st.sampled_from(schema["enum"]), st.sampled_from(["Other", ""]))
    if schema.get("format") == "date-time":
        return _mostly(st.datetimes(min_value=datetime.datetime(1970, 1, 2)).map(_iso), st.text(max_size=4))
    lo, hi = schema.get("minLength", 0), schema.get("maxLength")
    if "pattern" in schema:
        valid = st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: lo <= len(s) <= (hi or len(s)))
    else:
        valid = st.text(alphabet="az09-_.A/+= ", min_size=lo, max_size=min(hi or 12, 12))
    edges = [n for b in (lo, hi) if b is not None for n in (b - 1, b, b + 1) if n >= 0]
    invalid = st.one_of(st.text(alphabet="az09-_.A/+=", max_size=6), st.sampled_from(edges or [0]).map(lambda n: "a" * n))
    return _mostly(valid, st.one_of(invalid, WRONG_TYPE))


def near(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of this schema's shape, mostly valid, else broken in a place or two: just past a bound, a bad
    pattern or enum, a wrong type, a required field missing."""
    t = schema.get("type")
    if t == "object":
        props = schema.get("properties") or {}
        if not props:  # x-kubernetes-preserve-unknown-fields: anything
            return st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
        required = list(schema.get("required", []))
        full = st.fixed_dictionaries({k: near(props[k]) for k in required},
                                     optional={k: near(v) for k, v in props.items() if k not in required})
        value = st.tuples(full, st.sampled_from([None] * 9 + required)).map(
            lambda p: {k: v for k, v in p[0].items() if k != p[1]})
        return _mostly(value, WRONG_TYPE) if required else value
    if t == "array":
        return st.lists(near(schema["items"]), max_size=3)
    if t == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        valid = st.one_of(st.integers(lo, hi), st.sampled_from([b for b in (lo, hi) if b is not None] or [0]))
        past = [x for x in ((lo - 1) if lo is not None else None, (hi + 1) if hi is not None else None) if x is not None]
        return _mostly(valid, st.one_of(st.sampled_from(past), WRONG_TYPE) if past else WRONG_TYPE)
    if t == "string":
        return _string(schema)
    if t == "boolean":
        return _mostly(st.booleans(), WRONG_TYPE)
    raise AssertionError(f"no strategy for {schema}")


CASES = [(p, part) for p in KINDS for part in ("spec", "status")]
NEAR = {case: near(_part(*case)) for case in CASES}  # built once: building a strategy costs more than drawing it


@pytest.mark.parametrize(("plural", "part"), CASES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_what_the_parser_accepts_the_api_server_accepts(plural, part, data):
    value = data.draw(NEAR[(plural, part)])
    parser = parser_problems(plural, part, value)
    server = server_problems(plural, part, value)
    if parser is None:
        assert not server, f"the model accepts {value!r}; the CRD refuses it: {server}"
    elif not server:  # the API server stores it; the parser may refuse it only by a model-only rule
        assert all(any(m in p for m in MODEL_ONLY[part]) for p in parser.split("; ")), (
            f"the CRD accepts {value!r}; the model refuses it: {parser}")


def test_examples_pass_both():
    docs = [d for p in sorted((ROOT / "examples").rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    plurals = {k.kind: k.plural for k in api.KINDS}
    checked = {d["kind"] for d in docs if d["kind"] in plurals}
    assert checked == set(plurals)
    for doc in docs:
        if doc["kind"] in plurals:
            plural = plurals[doc["kind"]]
            assert parser_problems(plural, "spec", doc["spec"]) is None
            assert server_problems(plural, "spec", doc["spec"]) == []


# ---------------------------------------------------------------- the rules written once
def _models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """The model and every model its fields hold, at any depth."""
    out = {model}
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            a = stack.pop()
            if isinstance(a, type) and issubclass(a, BaseModel):
                out |= _models(a)
            stack.extend(getattr(a, "__args__", ()))
    return out


WITH_RULES = sorted({m for k in api.KINDS for m in _models(k.spec) if m.rules}, key=lambda m: m.__name__)


RULED = {m: near(crds.schema_of(m)) for m in WITH_RULES}


def test_the_payer_rules_are_declared_once():
    assert [api.Payer] == WITH_RULES
    assert crds.schema_of(api.Payer)["x-kubernetes-validations"] == [
        {"rule": r.cel, "message": r.message} for r in api.Payer.rules]


@pytest.mark.parametrize("model", WITH_RULES, ids=lambda m: m.__name__)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_each_cel_rule_and_its_python_twin_agree(model, data):
    value = data.draw(RULED[model])
    if not isinstance(value, dict):
        return
    names = {f.alias or n: n for n, f in model.model_fields.items()}
    shell = model.model_construct(**{names[k]: v for k, v in value.items()})  # only presence matters to the rules
    for rule in model.rules:
        by_cel = not cel.violations({"x-kubernetes-validations": [{"rule": rule.cel, "message": rule.message}]}, value)
        assert by_cel == rule.holds(shell), (rule.cel, value)


KEY = TypeAdapter(common.PublicKey)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.builds(lambda: identity.KeyPair.generate().public_key),
    st.tuples(st.builds(lambda: identity.KeyPair.generate().public_key), st.sampled_from(B64)).map(
        lambda p: p[0][:42] + p[1] + "="),  # the last character's two unused bits
    st.text(alphabet=B64, min_size=43, max_size=43).map(lambda s: s + "="),
    st.text(alphabet=B64 + "=", max_size=46),
))
def test_the_key_pattern_is_the_domains_key_check(text):
    """The API server's pattern, the parser's and the ledger's identity.is_public_key accept the same texts."""
    by_pattern = re.fullmatch(common.ED25519_PATTERN, text) is not None
    assert by_pattern == identity.is_public_key(text), text
    try:
        KEY.validate_python(text)
        by_parser = True
    except ValidationError:
        by_parser = False
    assert by_parser == by_pattern, text


def test_a_spec_refused_names_every_field():
    with pytest.raises(api.InvalidSpec) as err:
        api.parse(api.NodeSpec, {"farm": "Farm!", "publicKey": "AAAA", "resources": {"cru": "8", "mru": 2}})
    text = str(err.value)
    assert "spec.farm:" in text and "spec.publicKey:" in text and "spec.resources.cru:" in text
    assert "spec.resources.sru:" in text  # required, as the CRD has it
    with pytest.raises(api.InvalidSpec, match=r"spec\.payer: .*payer needs secretRef"):
        api.parse(api.DeploymentSpec, {"resources": {"cru": 1, "mru": 1}, "payer": {}})


# ---------------------------------------------------------------- statuses
STAMP = conditions.timestamp(1_700_000_000)
READY = conditions.desired_status({}, generation=2, now=STAMP, ready=True, reason=conditions.Reason.AVAILABLE,
                                  message="m")


def test_a_status_field_the_model_lacks_fails_at_the_choke_point():
    ok = {**READY, "farmId": 3}
    assert api.check_status("farms", ok) is ok and api.check_status("Farm", ok) is ok
    for bad, where in (({**READY, "farmID": 3}, "status.farmID"), ({"farmId": "3"}, "status.farmId"),
                       ({"farmId": -1}, "status.farmId"), ({"capacity": {"cru": 1, "gpu": 1}}, "status.capacity.gpu"),
                       ({"conditions": [*READY["conditions"], READY["conditions"][0]]}, "two conditions of one type"),
                       ({"conditions": [{**READY["conditions"][0], "reason": "not camel"}]}, "reason")):
        with pytest.raises(api.InvalidStatus, match=re.escape(where)):
            api.check_status("farms", bad)
    assert api.check_status("deployments", {"node": None, "contractId": None})  # a merge patch that removes them


def _projections():
    """The status projections the handlers and the loop share (loop/status.py)."""
    from tfgrid_operator.loop import status as projections

    return projections


R = Resources(4, 8, 200, 0)
SUMMARY = records.NodeSummary(name="n1", farm="f1", resources=R, used=Resources(1, 2, 10, 0), contracts=1,
                              uptime_s=3600, uptime_permille=950, last_report_ts=1_700_000_000, violation="ClockSkew",
                              minted_total=10**7, last_mint=5, last_mint_period=3, last_mint_reason="Minted",
                              node_id=7)
CONTRACT = records.Contract(id=4, key="ns/d", payer="alice", node="n1", farm="f1", resources=Resources(1, 2, 10, 0),
                            public_ips=1, dedicated=False, state="GracePeriod", created_at=0, grace_since=100,
                            deleted_at=None, deleted_reason=None, overdraft=3, billed_total=900,
                            last_billed_at=1_700_000_000, last_discount="Gold", reserve=12, last_bill_amount=40,
                            billing_error="beyond the ledger's bounds")
PROPOSAL_SPEC = {"title": "t", "action": {"type": "SetPricingPolicy", "pricing": {"cu": 1}},
                 "councilKey": identity.KeyPair.generate().public_key, "councilSignature": "c2ln"}


def test_the_statuses_the_operator_builds_pass_their_models():
    p = _projections()
    node = p.node_status(SUMMARY, {}, 2, STAMP, 1_700_000_100, type("Cfg", (), {"node_down_after_s": 4800}))
    node = p.node_attestation(
        node, {"certified": True}, SUMMARY,
        records.Attestation(node="n1", resources=R, certified=False, since=1_600_000_000, source="agent"),
        records.MintReceipt(node="n1", period=3, amount=5, reason="Minted", uptime_permille=990,
                            inputs={"cu": "1.5", "su": "2", "certified": False}), 2, STAMP)
    assert {"attested", "minting", "lastReportAt", "violation"} <= set(api.check_status("nodes", node))
    farm = records.Farm(id=1, name="f1", owner_key="k", payout_account="p", certified=False, dedicated=False,
                        public_ips=0, state="Active")
    api.check_status("farms", p.farm_status(farm, [SUMMARY], {}, 2, STAMP))
    policy, price = pricing.PricingPolicy(), pricing.TftPrice()
    for c in (CONTRACT, dataclasses.replace(CONTRACT, state="Deleted", deleted_reason="OutOfFunds")):
        status = p.deployment_status(c, {"movedFrom": "n0"}, 2, STAMP, policy, price)
        assert {"lastBill", "movedFrom", "billingError"} <= set(api.check_status("deployments", status))
    for why in ("OutOfFunds", "GrantExpired", "GrantRevoked"):  # the Ready condition says why it ended
        status = p.deployment_status(dataclasses.replace(CONTRACT, state="Deleted", deleted_reason=why), {}, 2, STAMP,
                                     policy, price)
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", why)
    prop = records.Proposal(id=9, key="ns/p", action={"type": "SetPricingPolicy", "pricing": {"cu": 1}}, threshold=5,
                            end_ts=1_700_100_000, state="Executed", votes=(), vetoes=1, executed_at=1_700_000_000)
    rejected = {"rejectedVotes": [{"farm": "f", "seq": 1, "reason": "BadSignature"}],
                "rejectedVetoes": [{"memberKey": "k", "reason": "NotCouncil"}]}
    status = p.proposal_status(prop, api.parse(api.ProposalSpec, PROPOSAL_SPEC), {}, 2, STAMP, rejected)
    assert api.check_status("proposals", status)["state"] == "Executed"


# ---------------------------------------------------------------- columns
@pytest.mark.parametrize("plural", sorted(KINDS))
def test_printer_columns_point_at_fields_of_their_type(plural):
    root = crds.ALL[plural]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for column in crds.ALL[plural]["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"].split("[")[0].strip(".").split(".")
        if path[0] == "metadata":
            continue
        schema = root
        for name in path:
            schema = schema["properties"][name]
            schema = schema.get("items", schema)
        if column["jsonPath"].endswith(("].status", "].reason")):
            schema = schema["properties"][column["jsonPath"].rsplit(".", 1)[1]]
        assert schema["type"] == column["type"], column
