"""The CustomResourceDefinitions, as data: crds/*.yaml and the chart's copy are rendered from here
(scripts/generate_crds.py), and the sandbox registers them from here. A test fails when the committed files
differ from this output, and another checks that every spec field here is a field of crd_models.py.
"""

from __future__ import annotations

from typing import Any

import yaml

from tfgrid_operator.domain import money, names, voting

GROUP = "grid.threefold.io"

S = dict[str, Any]


def obj(props: S, required: list[str] | None = None, **kw: Any) -> S:
    out: S = {"type": "object", "properties": props, **kw}
    if required:
        out["required"] = required
    return out


def integer(minimum: int | None = 0, maximum: int | None = None, **kw: Any) -> S:
    out: S = {"type": "integer", "format": "int64", **kw}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def string(**kw: Any) -> S:
    return {"type": "string", **kw}


def immutable(schema: S, message: str) -> S:
    """A field that cannot change once created: a CEL transition rule, enforced by the API server (422)."""
    return {**schema, "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": message}]}


def described(schema: S, description: str) -> S:
    """A copy of a shared schema with its own description (kubectl explain shows it)."""
    return {**schema, "description": description}


def boolean(description: str, **kw: Any) -> S:
    return {"type": "boolean", **kw, "description": description}


RULES = "docs/grid-rules.md"
BOOL: S = {"type": "boolean"}
ED25519 = string(pattern=r"^[A-Za-z0-9+/]{43}=$", description="base64 ed25519 public key (32 bytes)")
NAME = string(pattern=names.DNS_LABEL_PATTERN, maxLength=63)
# a ledger account name: lower case, so a base64 key pasted by mistake is refused, never stored or echoed
ACCOUNT = string(pattern=names.ACCOUNT_PATTERN, minLength=1, maxLength=names.ACCOUNT_MAX_LEN)
TFT = integer(description="TFT smallest units (1 TFT = 10^7 units)")


def tft(what: str) -> S:
    """A TFT amount the operator writes: integer smallest units."""
    return described(TFT, f"{what}, in TFT smallest units (1 TFT = 10^7 units; {RULES} §0); written by the operator")


CONDITIONS: S = {
    "type": "array",
    "description": "the standard Kubernetes conditions, written by the operator: Ready and Synced "
                   "(and Attested on a Node)",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
    "items": obj({
        "type": string(maxLength=316, description="the condition's type: Ready, Synced or Attested"),
        "status": string(enum=["True", "False", "Unknown"], description="whether the condition holds: True, False or "
                                                                        "Unknown"),
        "reason": string(minLength=1, maxLength=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                         description="a CamelCase word for why the condition is in its status"),
        "message": string(maxLength=32768, description="what the operator has to say about it, for humans"),
        "lastTransitionTime": string(format="date-time", description="when the status last changed (RFC 3339)"),
        "observedGeneration": integer(description="the metadata.generation the condition was set for"),
    }, ["type", "status", "reason", "message", "lastTransitionTime"], description="one condition"),
}

RESOURCE_UNITS = {"cru": "logical CPU cores", "mru": "memory, GiB", "sru": "SSD storage, GiB",
                  "hru": "HDD storage, GiB"}


def capacity(description: str) -> S:
    """A {cru, mru, sru, hru} the operator writes (cores and GiB)."""
    return obj({k: integer(description=v) for k, v in RESOURCE_UNITS.items()},
               description=f"{description} (cru cores, mru/sru/hru GiB); written by the operator")

def crd(kind: str, plural: str, short: list[str], spec: S, status: S, columns: list[S], description: str) -> S:
    common_cols = [
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "Synced", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Synced\")].status"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    status["properties"]["conditions"] = CONDITIONS
    status["properties"]["observedGeneration"] = integer(
        description="the metadata.generation this status reflects; written by the operator")
    status["properties"]["lastHandledConfiguration"] = string(
        description="the operator's (kopf's) record of the last spec it handled, which an update is diffed against")
    status["properties"]["kopf"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                    "description": "the operator's (kopf's) handler progress: retries and delays"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "shortNames": short,
                      "categories": ["grid"], "listKind": f"{kind}List"},
            "versions": [{
                "name": "v1alpha1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns + common_cols,
                "schema": {"openAPIV3Schema": obj({
                    "apiVersion": string(), "kind": string(), "metadata": {"type": "object"},
                    "spec": spec, "status": status,
                }, ["spec"], description=description)},
            }],
        },
    }


FARM = crd(
    "Farm", "farms", ["farm", "gfarm"],
    obj({
        "ownerKey": described(ED25519, f"the farm owner's (twin's) base64 ed25519 public key (32 bytes); set by the "
                                       f"user ({RULES} §1.2)"),
        "payoutAccount": described(ACCOUNT, f"ledger account that receives the farm's minting rewards ({RULES} §3.6) "
                                            f"and the farmer's share of contract payouts ({RULES} §2.7)"),
        "certified": boolean(f"whether the farm is certified ({RULES} §1.2); set by the user, default false",
                             default=False),
        "dedicated": boolean("the farm's dedicated flag, recorded on its ledger record; set by the user, default false",
                             default=False),
        "publicIPs": integer(0, 512, description=f"public IPv4 addresses the farm offers, at most 512 ({RULES} §1.2); "
                                                 f"set by the user"),
    }, ["ownerKey", "payoutAccount"], description="the farm as its farmer declares it; written by the user"),
    obj({
        "farmId": integer(description=f"the farm's id on the ledger ({RULES} §1.2); written by the operator"),
        "nodes": integer(description="how many Nodes of this farm are registered on the ledger; written by the "
                                     "operator"),
        "capacity": capacity("the total resources its registered nodes offer"),
        "used": capacity("the resources contracts reserve on its nodes"),
        "mintedLastPeriod": tft(f"minted to its nodes for the latest minting period any of them was minted for "
                                f"({RULES} §3.5)"),
        "mintedTotal": tft(f"minted to its nodes in all ({RULES} §3.6)"),
        "lastMintPeriod": integer(description=f"the index of that latest minting period ({RULES} §3.1); written by "
                                              f"the operator"),
    }, description="the farm as the ledger has it; written by the operator"),
    [{"name": "Nodes", "type": "integer", "jsonPath": ".status.nodes"},
     {"name": "CRU", "type": "integer", "jsonPath": ".status.capacity.cru"},
     {"name": "Minted", "type": "integer", "jsonPath": ".status.mintedLastPeriod", "description": "TFT units"}],
    "A farmer's farm on the grid. The operator registers it on the ledger.",
)

NODE = crd(
    "Node", "nodes", ["gnode", "gn"],
    obj({
        "farm": immutable(described(NAME, f"the name of the Farm this node belongs to ({RULES} §1.3); set by the "
                                          f"user, cannot change"),
                          "a Node's farm cannot change: delete the Node and create it under the other farm"),
        "publicKey": described(ED25519, f"the node's own base64 ed25519 public key (32 bytes): its agent signs uptime "
                                        f"and capacity reports with it ({RULES} §1.3); set by the user"),
        "resources": obj({
            "cru": integer(1, 1024, description=f"logical CPU cores ({RULES} §1.3: at least 1)"),
            "mru": integer(2, 1 << 20, description=f"memory, GiB ({RULES} §1.3: at least 2)"),
            "sru": integer(0, 1 << 24, description=f"SSD storage, GiB ({RULES} §1.3: sru or hru at least 100)"),
            "hru": integer(0, 1 << 24, description=f"HDD storage, GiB ({RULES} §1.3: sru or hru at least 100)"),
        }, ["cru", "mru", "sru"], description=f"the capacity the node offers, set by the user; minting and DAO weight "
                                               f"use what its key attested instead ({RULES} §3.2)"),
        "location": obj({"country": string(maxLength=64, description="the country the node is in"),
                         "city": string(maxLength=64, description="the city the node is in")},
                        description="where the node is, for Deployments' placement; set by the user"),
        "certified": boolean(f"whether the node should be certified; minted as DIY until the council certifies it "
                             f"({RULES} §1.3, §3.4); set by the user, default false", default=False),
    }, ["farm", "publicKey", "resources"], description="the node as its farmer declares it; written by the user"),
    obj({
        "nodeId": integer(description=f"the node's id on the ledger ({RULES} §1.3); written by the operator"),
        "farm": string(description="the name of the farm the ledger has it under; written by the operator"),
        "cu": string(description=f"farming compute units of its resources, a decimal ({RULES} §3.2); written by the "
                                 f"operator"),
        "su": string(description=f"farming storage units of its resources, a decimal ({RULES} §3.2); written by the "
                                 f"operator"),
        "used": capacity("the resources contracts reserve on the node"),
        "free": capacity("the resources not reserved: spec.resources minus used"),
        "usedPercent": integer(0, 100, description="the most-used resource's reserved share, percent; written by the "
                                                   "operator"),
        "deployments": integer(description="how many contracts the node holds; written by the operator"),
        "uptimeSeconds": integer(description=f"uptime credited from signed reports in the current minting period, "
                                             f"seconds ({RULES} §3.3); written by the operator"),
        "uptimePercent": integer(0, 100, description=f"that uptime against the period so far, percent, rounded down "
                                                     f"({RULES} §3.3); written by the operator"),
        "lastReportAt": string(format="date-time", description=f"when its last valid uptime report came; it is down "
                                                               f"80 minutes later without one ({RULES} §1.3); written "
                                                               f"by the operator"),
        "violation": string(description=f"the uptime violation that zeroes this period's minting: UptimeTooHigh, "
                                        f"UptimeTooLow, ClockSkew or InvalidReboot ({RULES} §3.3); written by the "
                                        f"operator"),
        "minting": obj({
            "period": integer(description=f"the index of the minting period last minted for ({RULES} §3.1)"),
            "reward": tft(f"minted for that period ({RULES} §3.5)"),
            "reason": string(description=f"the outcome of the last mint (the SLA's, {RULES} §3.4), Pending before "
                                         f"the first"),
            "total": tft(f"minted to the node in all ({RULES} §3.6)"),
            "uptimePermille": integer(description=f"the last minted period's uptime, per mille ({RULES} §3.4)"),
            "cu": string(description=f"the farming compute units the last mint used, a decimal ({RULES} §3.2)"),
            "su": string(description=f"the farming storage units the last mint used, a decimal ({RULES} §3.2)"),
            "certified": boolean(f"whether the last mint counted the node as certified ({RULES} §3.5)"),
            "receipt": string(description="the command that shows the last mint's inputs"),
        }, description=f"the node's minting, Proof-of-Capacity ({RULES} §3); written by the operator"),
        "attested": obj({
            "cru": integer(description="logical CPU cores the node's key attested"),
            "mru": integer(description="memory the node's key attested, GiB"),
            "sru": integer(description="SSD storage the node's key attested, GiB"),
            "hru": integer(description="HDD storage the node's key attested, GiB"),
            "certified": boolean(f"whether the council certified the node ({RULES} §1.3)"),
            "since": string(format="date-time", description="since when the node has held this capacity"),
        }, description="what the node's key attested and the council certified (minting uses it); written by the "
                       "operator"),
    }, description="the node as the ledger has it; written by the operator"),
    [{"name": "Farm", "type": "string", "jsonPath": ".spec.farm"},
     {"name": "CU", "type": "string", "jsonPath": ".status.cu"},
     {"name": "SU", "type": "string", "jsonPath": ".status.su"},
     {"name": "Used%", "type": "integer", "jsonPath": ".status.usedPercent"},
     {"name": "Uptime%", "type": "integer", "jsonPath": ".status.uptimePercent"},
     {"name": "Minted", "type": "integer", "jsonPath": ".status.minting.total", "description": "TFT units"}],
    "A node of a farm. Capacity is minted for (Proof-of-Capacity) from signed uptime reports.",
)


def secret_ref(what: str, default_key: str) -> S:
    return obj({"name": described(NAME, "the Secret's name, in the Deployment's namespace"),
                "key": string(minLength=1, maxLength=253, default=default_key,
                              description=f"the key in the Secret's data, default {default_key}")},
               ["name"], description=what)


DEPLOYMENT = crd(
    "Deployment", "deployments", ["gdeploy", "gd"],
    obj({
        "resources": obj({
            "cru": integer(0, 1024, description="logical CPU cores"), "mru": integer(0, 1 << 20, description="memory, GiB"),
            "sru": integer(0, 1 << 24, description="SSD storage, GiB"),
            "hru": integer(0, 1 << 24, description="HDD storage, GiB"),
        }, ["cru", "mru"], description=f"the capacity to reserve on a node, billed per hour ({RULES} §2.6); set by "
                                       f"the user"),
        "publicIPs": integer(0, 64, description=f"public IPv4 addresses to reserve, at most 64, billed per hour "
                                                f"({RULES} §2.6); set by the user"),
        "payer": obj({"account": described(ACCOUNT, "the paying twin's ledger account; proves itself with grantRef"),
                      "secretRef": secret_ref("a Secret holding the paying twin's ed25519 key (base64 seed); its "
                                              "account is derived from it", "twinKey"),
                      "grantRef": secret_ref("a Secret holding the grant the twin payer.account signed for this "
                                             "namespace (`tfgrid-operator grant`)", "grant")},
                     description=f"the twin that pays the contract's bills ({RULES} §2.7): secretRef, or account with "
                                 f"grantRef; set by the user",
                     **{"x-kubernetes-validations": [
                         {"rule": "!(has(self.account) && has(self.secretRef))",
                          "message": "exactly one of payer.account and payer.secretRef: a Secret with the twin's key "
                                     "names its account itself; a named account proves itself with payer.grantRef"},
                         {"rule": "has(self.account) || has(self.secretRef)",
                          "message": "payer needs secretRef (a Secret with the twin's key) or account with grantRef "
                                     "(a Secret with the grant the twin signed for this namespace)"},
                         {"rule": "!has(self.grantRef) || has(self.account)",
                          "message": "payer.grantRef needs payer.account, the twin that signed the grant"}]}),
        "placement": obj({
            "node": described(NAME, "only this Node"), "farm": described(NAME, "only nodes of this Farm"),
            "country": string(maxLength=64, description="only nodes in this country (spec.location.country)"),
            "city": string(maxLength=64, description="only nodes in this city (spec.location.city)"),
            "certifiedOnly": boolean("only certified nodes (a certified node's bills are ×1.25, "
                                     f"{RULES} §2.6)"),
            "dedicated": boolean(f"rent a whole empty node: billed for all its capacity at the dedication discount "
                                 f"({RULES} §2.6)")},
            description=f"constraints on the node the operator places the deployment on, the least-loaded that "
                        f"fits ({RULES} §6.3); set by the user"),
        "selfHealing": boolean(f"move the deployment to another node when its node goes down ({RULES} §2.7, a move); "
                               f"set by the user, default true", default=True),
    }, ["resources", "payer"], description="the reservation the user asks for; written by the user"),
    obj({
        "node": string(description="the name of the node the contract is on; written by the operator"),
        "farm": string(description="the name of that node's farm; written by the operator"),
        "contractId": integer(description="the contract's id on the ledger; written by the operator"),
        "contractState": string(enum=["Created", "GracePeriod", "Deleted"],
                                description=f"the contract's state: Created, GracePeriod (a bill could not be paid in "
                                            f"full) or Deleted ({RULES} §2.4); written by the operator"),
        "costPerHour": tft(f"one full hour's bill at today's prices, before the balance discount ({RULES} §2.6)"),
        "billedTotal": tft(f"billed over the contract's life ({RULES} §2.5)"),
        "lastBilledAt": string(format="date-time", description=f"when the contract was last billed ({RULES} §2.5); "
                                                               f"written by the operator"),
        "overdraft": tft(f"what the payer could not pay, carried to the next bill ({RULES} §2.7)"),
        "discount": string(description=f"the last bill's discount level: None, Default, Bronze, Silver or Gold "
                                       f"({RULES} §2.6); written by the operator"),
        "reserved": capacity("the resources the contract reserves on its node"),
        "publicIPs": integer(description="public IPv4 addresses the contract reserves; written by the operator"),
        "movedFrom": string(description=f"the node self-healing moved the deployment off ({RULES} §2.7); written by "
                                        f"the operator"),
        "deletedReason": string(description=f"why the contract was deleted, e.g. OutOfFunds, CanceledByUser or Moved "
                                            f"({RULES} §2.4); written by the operator"),
        "reserve": tft(f"paid by the payer and held for the farmer / foundation / staking pool payout ({RULES} §2.7)"),
        "lastBill": obj({
            "amount": tft(f"the last bill's amount ({RULES} §2.6)"),
            "discount": string(description=f"its discount level ({RULES} §2.6)"),
            "billedAt": string(format="date-time", description="when it was billed"),
        }, description="the last bill (receipts: `tfgrid-operator ledger bills --deployment NS/NAME`); written by the "
                       "operator"),
        "billingError": string(maxLength=512, description=f"why the contract is not billed, e.g. a bill beyond the "
                                                          f"ledger's bounds ({RULES} §0); written by the operator"),
    }, description="the contract as the ledger has it; written by the operator"),
    [{"name": "Node", "type": "string", "jsonPath": ".status.node"},
     {"name": "Contract", "type": "integer", "jsonPath": ".status.contractId"},
     {"name": "State", "type": "string", "jsonPath": ".status.contractState"},
     {"name": "Cost/h", "type": "integer", "jsonPath": ".status.costPerHour", "description": "TFT units"},
     {"name": "Billed", "type": "integer", "jsonPath": ".status.billedTotal", "description": "TFT units"}],
    "A user's workload reservation: placed on a node, billed per period (Proof-of-Utilization).",
)

U32 = 1 << 32
PRICE = money.MAX_POLICY_PRICE  # a pricing policy field's bound, derived from the ledger's (money.py)
# what the council signed and the farms vote on (§5): changing it would change the question under the votes
FIXED_ONCE_PROPOSED = "the action, threshold and duration are fixed once proposed; create a new Proposal to change them"
SIGNATURE = string(minLength=1, maxLength=128, description="base64 ed25519 signature")
USD_H = f"units USD per hour (1 unit USD = 10^-7 USD, {RULES} §0)"
PROPOSAL = crd(
    "Proposal", "proposals", ["gprop"],
    obj({
        "title": string(minLength=1, maxLength=128, description="the proposal's title; set by the council member"),
        "description": string(maxLength=4096, description="what the proposal is for; set by the council member"),
        "action": immutable(obj({
            "type": string(enum=["SetPricingPolicy", "SetFarmingPolicy"],
                           description=f"SetPricingPolicy ({RULES} §1.4) or SetFarmingPolicy ({RULES} §1.5)"),
            "pricing": obj({
                "cu": integer(0, PRICE, description=f"price of a compute unit, {USD_H}"),
                "su": integer(0, PRICE, description=f"price of a storage unit, {USD_H}"),
                "nu": integer(0, PRICE, description=f"price of a network unit, {USD_H}"),
                "ipu": integer(0, PRICE, description=f"price of a public IPv4 address, {USD_H}"),
                "uniqueName": integer(0, PRICE, description=f"price of a unique name, {USD_H}"),
                "discountForDedicationNodes": integer(0, 100, description=f"the share of its full price a dedicated "
                                                                          f"node is billed, percent ({RULES} §2.6)"),
                "certifiedFactorPercent": integer(100, 1000, description=f"the factor on a certified node's bills, "
                                                                         f"percent: 125 is ×1.25 ({RULES} §2.6)"),
            }, description=f"{RULES} §1.4 pricing policy fields to change, units USD per hour; omitted ones stay"),
            "farming": obj({
                "cu": integer(0, U32, description=f"reward per farming compute unit per period, mUSD ({RULES} §3.5)"),
                "su": integer(0, U32, description=f"reward per farming storage unit per period, mUSD ({RULES} §3.5)"),
                "nu": integer(0, U32, description=f"reward per GB of network traffic, mUSD ({RULES} §3.5)"),
                "ipv4": integer(0, U32, description=f"reward per public IPv4 address-hour, mUSD ({RULES} §3.5)"),
                "minimalUptime": integer(0, 100, description=f"the SLA's minimum uptime, percent ({RULES} §3.4)"),
            }, description=f"{RULES} §1.5 farming policy fields to change, mUSD; omitted ones stay"),
            "policyId": integer(1, U32, description="the farming policy to change"),
        }, ["type"], description=f"the policy change the proposal makes if approved ({RULES} §5); set by the council "
                                 f"member, fixed once proposed"), FIXED_ONCE_PROPOSED),
        "durationHours": immutable(integer(24, 720, default=168, description=f"how long voting lasts, hours: 1 to 30 "
                                                                             f"days, 7 by default ({RULES} §5)"),
                                   FIXED_ONCE_PROPOSED),
        "threshold": immutable(integer(5, 100_000, default=5, description=f"the minimum number of farms that must vote, "
                                                                          f"at least 5 ({RULES} §5)"),
                               FIXED_ONCE_PROPOSED),
        "councilKey": described(ED25519, "the proposing council member's public key"),
        "councilSignature": described(SIGNATURE, "the council member's base64 ed25519 signature over the proposal "
                                                 "(all but the signatures, votes and vetoes)"),
        "nonce": immutable(string(pattern=voting.NONCE_PATTERN,
                                  description=f"the council signature's nonce, made by `tfgrid-operator council sign`: "
                                              f"the ledger opens one proposal per nonce, ever, so a deleted "
                                              f"(withdrawn) proposal is not opened again by the same signature "
                                              f"({RULES} §5); set by the council member"),
                           "the nonce is the council signature's; have the proposal signed again to change it"),
        "votes": {"type": "array", "maxItems": 10_000, "items": obj({
            "farm": described(NAME, "the voting Farm's name"),
            "approve": boolean("aye (true) or nay (false)"),
            "seq": integer(0, 1 << 53, description="sequence number: only a farm's newest vote counts"),
            "signature": described(SIGNATURE, "the farm owner's base64 ed25519 signature over the vote")},
            ["farm", "approve", "signature"], description="one farm's signed vote"),
            "description": f"the farms' signed votes, weighed by their nodes' capacity ({RULES} §5); added by the "
                           f"farmers"},
        "vetoes": {"type": "array", "maxItems": 100, "items": obj({
            "memberKey": described(ED25519, "the vetoing council member's public key"),
            "signature": described(SIGNATURE, "that member's base64 ed25519 signature over the veto")},
            ["memberKey", "signature"], description="one council member's signed veto"),
            "description": f"council members' signed vetoes: 3 close the proposal ({RULES} §4.4, §5)"},
    }, ["title", "action", "councilKey", "councilSignature"],
        description="the proposal, its votes and vetoes; written by the council member and the farmers"),
    obj({
        "proposalId": integer(description="the proposal's id on the ledger; written by the operator"),
        "state": string(enum=["Open", "Approved", "Rejected", "Executed", "Vetoed"],
                        description=f"Open, Approved, Rejected, Executed or Vetoed ({RULES} §5); written by the "
                                    f"operator"),
        "deadline": string(format="date-time", description="when voting ends; written by the operator"),
        "threshold": integer(description=f"the minimum number of voting farms, as opened on the ledger ({RULES} §5); "
                                         f"written by the operator"),
        "ayesWeight": integer(description=f"the aye voters' weight, captured at vote time ({RULES} §5); written by "
                                          f"the operator"),
        "naysWeight": integer(description=f"the nay voters' weight, captured at vote time ({RULES} §5); written by "
                                          f"the operator"),
        "ayes": integer(description="how many farms voted aye; written by the operator"),
        "nays": integer(description="how many farms voted nay; written by the operator"),
        "vetoes": integer(description=f"how many council vetoes count ({RULES} §5); written by the operator"),
        "executedAt": string(format="date-time", description="when the approved action was executed; written by the "
                                                             "operator"),
        "rejectedVotes": {"type": "array", "items": obj({
            "farm": string(description="the farm whose vote does not count"),
            "reason": string(description="why it does not count"),
            "seq": integer(description="the vote's sequence number")}, description="one vote not counted"),
            "description": "spec.votes the ledger does not count, and why; written by the operator"},
        "counted": {"type": "array",
                    "description": "the votes the ledger counts: each farm's newest; written by the operator",
                    "items": obj({
                        "farm": string(description="the voting farm"),
                        "approve": boolean("aye (true) or nay (false)"),
                        "weight": integer(description=f"the farm's weight captured at vote time ({RULES} §5)"),
                        "seq": integer(description="the counted vote's sequence number")},
                        description="one counted vote")},
        "rejectedVetoes": {"type": "array", "items": obj({
            "memberKey": string(description="the public key of the veto's signer"),
            "reason": string(description="why the veto does not count")}, description="one veto not counted"),
            "description": "spec.vetoes that do not count, and why; written by the operator"},
    }, description=f"the proposal as the ledger has it ({RULES} §5); written by the operator"),
    [{"name": "State", "type": "string", "jsonPath": ".status.state"},
     {"name": "Ayes", "type": "integer", "jsonPath": ".status.ayesWeight", "description": "aye weight (§5)"},
     {"name": "Nays", "type": "integer", "jsonPath": ".status.naysWeight", "description": "nay weight (§5)"},
     {"name": "Deadline", "type": "string", "jsonPath": ".status.deadline"}],
    "A DAO proposal (§5): proposed by a council member, voted by farms with signed votes, executed once if approved.",
)

ALL = {"farms": FARM, "nodes": NODE, "deployments": DEPLOYMENT, "proposals": PROPOSAL}


# kopf's own peering resource (kopf docs, "Peering"): standby replicas find each other through one
# ClusterKopfPeering object. Needed only when more than one replica runs (PostgreSQL ledger).
PEERING = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {
        "scope": "Cluster", "group": "kopf.dev",
        "names": {"kind": "ClusterKopfPeering", "plural": "clusterkopfpeerings", "singular": "clusterkopfpeering"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }}}],
    },
}


def render() -> dict[str, str]:
    docs = {f"{GROUP}_{plural}.yaml": doc for plural, doc in ALL.items()}
    docs["kopf.dev_clusterkopfpeerings.yaml"] = PEERING
    return {name: yaml.safe_dump(doc, sort_keys=False, width=120) for name, doc in docs.items()}
