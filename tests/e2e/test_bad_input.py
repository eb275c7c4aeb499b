"""Malformed and hostile objects, table-driven, across the four kinds: each one is refused by the schema (the
API server's 422, before the operator ever sees it) or gets a clear condition and a Warning Event — and the
operator keeps running and nothing on the ledger changes."""

from __future__ import annotations

import base64
import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from e2e.conftest import COUNCIL, condition
from e2e.objects import NS, create, deployment, farm, node, obj, proposal, ready, twin_account
from polling import eventually
from tfgrid_operator import ballot
from tfgrid_operator.backend import errors
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain import identity

pytestmark = pytest.mark.e2e
OWNER = identity.KeyPair.generate()
SEED = identity.KeyPair.generate().to_text()  # key material someone might paste into a spec
PRICING = {"type": "SetPricingPolicy", "pricing": {"cu": 90_000}}


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    body: Callable[[], dict[str, Any]]
    schema: str | None = None  # the 422's message names this
    reason: str | None = None  # else: the Ready condition's reason (and a Warning Event with it)
    message: str = ""  # ... whose message says this
    event: str | None = None  # an Event reason to expect instead of a Ready reason (rejected votes)


def edit(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with ``path`` (dots; "-" deletes) set to ``value``."""
    out = copy.deepcopy(body)
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target.setdefault(p, {})
    if value == "-":
        target.pop(last, None)
    else:
        target[last] = value
    return out


def named(body: dict[str, Any], name: str) -> dict[str, Any]:
    return edit(body, "metadata.name", name)


F = lambda name="bad-farm": farm(name, owner=OWNER.public_key)  # noqa: E731
N = lambda name="bad-node": node(name, "good-farm")  # noqa: E731
D = lambda name="bad-dep": deployment(name, payer="payer", public_ips=0)  # noqa: E731


def P(name="bad-prop", signer=COUNCIL[0], action=PRICING, **kw):
    return proposal(name, signer, action, **kw)


def _forged_council(name="forged"):
    body = P(name)
    body["spec"]["title"] = "a different title than the one signed"
    return body


def _vote(name: str, farm_name: str, key: identity.KeyPair, proposal_name: str | None = None) -> dict[str, Any]:
    """Signed before the proposal opened: its ledger id and deadline are guesses, so it binds to nothing real."""
    return ballot.signed_vote(key, proposal=f"default/{proposal_name or name}", proposal_id=1, action=PRICING,
                              threshold=5, end_ts=0, farm=farm_name, approve=True, seq=1)


def _unbound_vote(name: str) -> dict[str, Any]:
    """The old form: signs neither the proposal's digest nor a sequence number."""
    sig = OWNER.sign(identity.VOTE, {"proposal": f"default/{name}", "farm": "good-farm", "approve": True})
    return {"farm": "good-farm", "approve": True, "signature": sig}


CASES = [
    # Farm
    Case("farm-missing-owner-key", lambda: edit(F(), "spec.ownerKey", "-"), schema="ownerKey"),
    Case("farm-owner-key-not-base64", lambda: edit(F(), "spec.ownerKey", "not a key!"), schema="ownerKey"),
    Case("farm-negative-ips", lambda: edit(F(), "spec.publicIPs", -1), schema="publicIPs"),
    Case("farm-too-many-ips", lambda: edit(F(), "spec.publicIPs", 513), schema="publicIPs"),
    Case("farm-ips-wrong-type", lambda: edit(F(), "spec.publicIPs", "two"), schema="publicIPs"),
    Case("farm-empty-payout", lambda: edit(F(), "spec.payoutAccount", ""), schema="payoutAccount"),
    Case("farm-key-material-as-payout", lambda: edit(F(), "spec.payoutAccount", SEED), schema="payoutAccount"),
    Case("farm-odd-name", lambda: named(F(), "Farm_1!"), schema="metadata.name"),
    Case("farm-certified-wrong-type", lambda: edit(F(), "spec.certified", "yes"), schema="certified"),
    Case("farm-spec-not-object", lambda: edit(F(), "spec", ["farm"]), schema="spec"),
    # Node
    Case("node-missing-farm", lambda: edit(N(), "spec.farm", "-"), schema="farm"),
    Case("node-zero-cores", lambda: edit(N(), "spec.resources.cru", 0), schema="cru"),
    Case("node-negative-cores", lambda: edit(N(), "spec.resources.cru", -4), schema="cru"),
    Case("node-huge-cores", lambda: edit(N(), "spec.resources.cru", 10**9), schema="cru"),
    Case("node-cores-wrong-type", lambda: edit(N(), "spec.resources.cru", "8"), schema="cru"),
    Case("node-too-little-memory", lambda: edit(N(), "spec.resources.mru", 1), schema="mru"),
    Case("node-bad-public-key", lambda: edit(N(), "spec.publicKey", "AAAA"), schema="publicKey"),
    Case("node-long-country", lambda: edit(N(), "spec.location.country", "X" * 65), schema="country"),
    Case("node-odd-farm-name", lambda: edit(N(), "spec.farm", "Farm!"), schema="farm"),
    Case("node-odd-name", lambda: named(N(), "node/../../etc"), schema="metadata.name"),
    Case("node-unknown-farm", lambda: edit(N("orphan"), "spec.farm", "no-such-farm"), reason="FarmNotReady",
         message="farm 'no-such-farm' is not registered"),
    # Deployment
    Case("dep-missing-payer", lambda: edit(D(), "spec.payer", "-"), schema="payer"),
    Case("dep-missing-resources", lambda: edit(D(), "spec.resources", "-"), schema="resources"),
    Case("dep-resources-wrong-type", lambda: edit(D(), "spec.resources", [1, 2]), schema="resources"),
    Case("dep-negative-cores", lambda: edit(D(), "spec.resources.cru", -1), schema="cru"),
    Case("dep-huge-memory", lambda: edit(D(), "spec.resources.mru", 10**9), schema="mru"),
    Case("dep-too-many-ips", lambda: edit(D(), "spec.publicIPs", 65), schema="publicIPs"),
    Case("dep-odd-farm", lambda: edit(D(), "spec.placement", {"farm": "Bad_Name"}), schema="farm"),
    Case("dep-self-healing-wrong-type", lambda: edit(D(), "spec.selfHealing", "yes"), schema="selfHealing"),
    Case("dep-key-material-as-account", lambda: edit(D(), "spec.payer", {"account": SEED}), schema="account"),
    # the CRD's CEL rule refuses an empty payer at admission (the operator still reports it as InvalidSpec where a
    # cluster's CRDs predate the rule: test_deployments.py)
    Case("dep-empty-payer", lambda: edit(D("empty-payer"), "spec.payer", {}),
         schema="spec.payer: Invalid value"),
    Case("dep-two-payers", lambda: edit(D("two-payers"), "spec.payer", {"account": "payer", "secretRef": {"name": "s"}}),
         schema="exactly one of payer.account and payer.secretRef"),
    Case("dep-grant-without-account", lambda: edit(D("grant-alone"), "spec.payer", {"grantRef": {"name": "s"},
                                                                                    "secretRef": {"name": "t"}}),
         schema="payer.grantRef needs payer.account"),
    Case("dep-grant-secret-missing", lambda: edit(D("grant-missing"), "spec.payer",
                                                  {"account": "payer", "grantRef": {"name": "s"}}),
         reason="PayerNotFound", message="secret 's' does not exist"),
    Case("dep-bare-account", lambda: edit(D("bare-account"), "spec.payer", {"account": "payer"}),
         reason="PayerNotAuthorized", message="is only named"),
    Case("dep-grid-account-pays", lambda: edit(D("foundation-pays"), "spec.payer", {"account": "foundation"}),
         reason="PayerNotAuthorized", message="is only named"),
    Case("dep-bigger-than-any-node", lambda: edit(D("too-big"), "spec.resources.cru", 1000), reason="Unschedulable",
         message="Capacity: no matching node has room"),
    Case("dep-unknown-node", lambda: edit(D("nowhere"), "spec.placement", {"node": "no-such-node"}),
         reason="Unschedulable", message="Node: node 'no-such-node' is not a Ready node"),
    Case("dep-more-ips-than-farm", lambda: edit(D("ip-hungry"), "spec.publicIPs", 3), reason="Unschedulable",
         message="PublicIPs"),
    Case("dep-unknown-payer", lambda: edit(D("nobody-pays"), "spec.payer", {"account": "nobody"}),
         reason="PayerNotFound", message="account 'nobody' does not exist"),
    Case("dep-missing-secret", lambda: edit(D("no-secret"), "spec.payer", {"secretRef": {"name": "nope"}}),
         reason="PayerNotFound", message="secret 'nope' does not exist"),
    # Proposal
    Case("prop-missing-signature", lambda: edit(P(), "spec.councilSignature", "-"), schema="councilSignature"),
    Case("prop-threshold-too-low", lambda: edit(P(), "spec.threshold", 4), schema="threshold"),
    Case("prop-too-short", lambda: edit(P(), "spec.durationHours", 10), schema="durationHours"),
    Case("prop-too-long", lambda: edit(P(), "spec.durationHours", 10_000), schema="durationHours"),
    Case("prop-unknown-action", lambda: edit(P(), "spec.action.type", "MintEverything"), schema="type"),
    Case("prop-certified-factor-below-100", lambda: edit(P(), "spec.action.pricing", {"certifiedFactorPercent": 99}),
         schema="certifiedFactorPercent"),
    Case("prop-forged-council-signature", _forged_council, reason="Unauthorized", message="does not verify"),
    Case("prop-not-council", lambda: P("outsider", signer=identity.KeyPair.generate()), reason="Unauthorized",
         message="not a council member's key"),
    Case("prop-action-without-pricing", lambda: P("no-pricing", action={"type": "SetPricingPolicy"}),
         reason="InvalidSpec", message="needs action.pricing"),
    Case("prop-action-changes-nothing", lambda: P("empty-change", action={"type": "SetPricingPolicy", "pricing": {}}),
         reason="InvalidSpec", message="changes nothing"),
    Case("vote-forged", lambda: P("open-a", votes=[_vote("open-a", "good-farm", identity.KeyPair.generate())]),
         event="VoteRejected", message="BadSignature"),
    Case("vote-replayed-from-another-proposal",
         lambda: P("open-b", votes=[_vote("open-b", "good-farm", OWNER, proposal_name="some-other")]),
         event="VoteRejected", message="BadSignature"),
    Case("vote-unknown-farm", lambda: P("open-c", votes=[_vote("open-c", "ghost-farm", OWNER)]),
         event="VoteRejected", message="UnknownFarm"),
    Case("vote-unbound", lambda: P("open-d", votes=[_unbound_vote("open-d")]), event="VoteRejected",
         message="Unbound"),
]


async def snapshot(lg) -> Any:
    """Everything on the ledger that a bad object could touch (balances, farms, nodes, contracts, votes)."""
    return ([(a.name, a.balance) for a in await lg.list_accounts()],
            [(f.name, f.state) for f in await lg.list_farms()],
            sorted((await lg.node_summaries(now=0)).keys()),
            sorted((k, c.state, c.node) for k, c in (await lg.contract_summaries()).items()),
            sorted((k, p.votes) for k, p in (await lg.proposal_summaries()).items()), await lg.policies())


def test_the_table_is_large_and_covers_every_kind():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {c.id.split("-")[0] for c in CASES} >= {"farm", "node", "dep", "prop", "vote"}


async def test_bad_input_is_refused_or_reported_and_the_ledger_never_changes(apiserver, operator, ledger):
    lg = ledger  # the test's own connection (the operator's belongs to its event loop)
    await create(apiserver, farm("good-farm", owner=OWNER.public_key, public_ips=2), node("good-node", "good-farm"))
    await ready(apiserver, "nodes", "good-node")
    await twin_account(lg, apiserver, "payer")
    proposals_before = {}
    before = await snapshot(lg)
    failures: list[str] = []
    for case in CASES:
        body = case.body()
        plural = f"{body['kind'].lower()}s"
        resp = await apiserver.post(f"{NS}/{plural}", json=body)
        text = await resp.text()
        if case.schema is not None:
            if resp.status != 422 or case.schema not in text:
                failures.append(f"{case.id}: expected a 422 naming {case.schema}, got {resp.status} {text[:200]}")
            continue
        if resp.status != 201:
            failures.append(f"{case.id}: the schema refused what the operator should report: {text[:200]}")
            continue
        name = body["metadata"]["name"]
        reason = case.event or case.reason
        try:
            if case.reason:
                got = await eventually(lambda p=plural, n=name, c=case: condition(obj(apiserver, p, n)).get("reason")
                                       == c.reason and obj(apiserver, p, n), what=f"{case.id} {case.reason}")
                assert case.message in condition(got)["message"], condition(got)["message"]
            await eventually(lambda n=name, r=reason, m=case.message: [
                e for e in apiserver.read_all("events") if e.get("reason") == r and e["involvedObject"]["name"] == n
                and e["type"] == "Warning" and m in e["message"]],
                             what=f"{case.id} Warning Event {reason}")
        except AssertionError as exc:
            failures.append(f"{case.id}: {exc}")
        if plural == "proposals" and case.event:
            proposals_before[f"default/{name}"] = ()  # a valid proposal opens; its bad votes must not count
    assert not failures, "\n".join(failures)
    after = await snapshot(lg)
    opened = [(k, v) for k, v in after[4] if k in proposals_before]
    assert opened == sorted(proposals_before.items())  # open, with no vote counted
    assert after[:4] == before[:4] and after[5] == before[5]
    assert [x for x in after[4] if x[0] not in proposals_before] == before[4]
    # the operator is alive and well: a good deployment is placed after all of that
    await create(apiserver, deployment("after-all", payer="payer", public_ips=0))
    await ready(apiserver, "deployments", "after-all")
    assert not any(base64.b64decode(SEED) and SEED in str(o) for o in apiserver.read_all("events"))
    # every reason on a condition or an Event comes from the documented, enumerated sets
    known = {str(r) for r in Reason} | {cls.reason for cls in errors.LedgerError.__subclasses__()} | {"Logging"}
    seen = {e["reason"] for e in apiserver.read_all("events")}
    for plural in ("farms", "nodes", "deployments", "proposals"):
        seen |= {c["reason"] for o in apiserver.read_all(f"grid.threefold.io/v1alpha1/{plural}")
                 for c in (o.get("status") or {}).get("conditions") or []}
    assert seen <= known, seen - known
