"""The CustomResourceDefinitions, as data: crds/*.yaml and the chart's copy are rendered from here
(scripts/generate_crds.py), and the sandbox registers them from here. A test fails when the committed files
differ from this output, and another checks that every spec field here is a field of crd_models.py.
"""

from __future__ import annotations

from typing import Any

import yaml

from tfgrid_operator.domain import money

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


BOOL: S = {"type": "boolean"}
ED25519 = string(pattern=r"^[A-Za-z0-9+/]{43}=$", description="base64 ed25519 public key (32 bytes)")
NAME = string(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63)
# a ledger account name: lower case, so a base64 key pasted by mistake is refused, never stored or echoed
ACCOUNT = string(pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", minLength=1, maxLength=64)
TFT = integer(description="TFT smallest units (1 TFT = 10^7 units)")

CONDITIONS: S = {
    "type": "array",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
    "items": obj({
        "type": string(maxLength=316),
        "status": string(enum=["True", "False", "Unknown"]),
        "reason": string(minLength=1, maxLength=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
        "message": string(maxLength=32768),
        "lastTransitionTime": string(format="date-time"),
        "observedGeneration": integer(),
    }, ["type", "status", "reason", "message", "lastTransitionTime"]),
}
CAPACITY = obj({"cru": integer(), "mru": integer(), "sru": integer(), "hru": integer()})


def crd(kind: str, plural: str, short: list[str], spec: S, status: S, columns: list[S], description: str) -> S:
    common_cols = [
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "Synced", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Synced\")].status"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    status["properties"]["conditions"] = CONDITIONS
    status["properties"]["observedGeneration"] = integer()
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
        "ownerKey": ED25519,
        "payoutAccount": {**ACCOUNT, "description": "ledger account that receives rewards"},
        "certified": {**BOOL, "default": False},
        "dedicated": {**BOOL, "default": False},
        "publicIPs": integer(0, 512, description="public IPv4 addresses the farm offers (§1.2, at most 512)"),
    }, ["ownerKey", "payoutAccount"]),
    obj({
        "farmId": integer(), "nodes": integer(), "capacity": CAPACITY, "used": CAPACITY,
        "mintedLastPeriod": TFT, "mintedTotal": TFT, "lastMintPeriod": integer(),
    }),
    [{"name": "Nodes", "type": "integer", "jsonPath": ".status.nodes"},
     {"name": "CRU", "type": "integer", "jsonPath": ".status.capacity.cru"},
     {"name": "Minted", "type": "integer", "jsonPath": ".status.mintedLastPeriod", "description": "TFT units"}],
    "A farmer's farm on the grid. The operator registers it on the ledger.",
)

NODE = crd(
    "Node", "nodes", ["gnode", "gn"],
    obj({
        "farm": immutable(NAME, "a Node's farm cannot change: delete the Node and create it under the other farm"),
        "publicKey": ED25519,
        "resources": obj({
            "cru": integer(1, 1024, description="logical cores (§1.3: at least 1)"),
            "mru": integer(2, 1 << 20, description="memory, GiB (§1.3: at least 2)"),
            "sru": integer(0, 1 << 24, description="SSD, GiB"),
            "hru": integer(0, 1 << 24, description="HDD, GiB"),
        }, ["cru", "mru", "sru"]),
        "location": obj({"country": string(maxLength=64), "city": string(maxLength=64)}),
        "certified": {**BOOL, "default": False},
    }, ["farm", "publicKey", "resources"]),
    obj({
        "nodeId": integer(), "farm": string(), "cu": string(), "su": string(),
        "used": CAPACITY, "free": CAPACITY, "usedPercent": integer(0, 100), "deployments": integer(),
        "uptimeSeconds": integer(), "uptimePercent": integer(0, 100), "lastReportAt": string(format="date-time"),
        "violation": string(),
        "minting": obj({"period": integer(), "reward": TFT, "reason": string(), "total": TFT,
                        "uptimePermille": integer(), "cu": string(), "su": string(), "certified": BOOL,
                        "receipt": string(description="the command that shows the last mint's inputs")}),
        "attested": obj({"cru": integer(), "mru": integer(), "sru": integer(), "hru": integer(), "certified": BOOL,
                         "since": string(format="date-time")},
                        description="what the node's key attested and the council certified (minting uses it)"),
    }),
    [{"name": "Farm", "type": "string", "jsonPath": ".spec.farm"},
     {"name": "CU", "type": "string", "jsonPath": ".status.cu"},
     {"name": "SU", "type": "string", "jsonPath": ".status.su"},
     {"name": "Used%", "type": "integer", "jsonPath": ".status.usedPercent"},
     {"name": "Uptime%", "type": "integer", "jsonPath": ".status.uptimePercent"},
     {"name": "Minted", "type": "integer", "jsonPath": ".status.minting.total", "description": "TFT units"}],
    "A node of a farm. Capacity is minted for (Proof-of-Capacity) from signed uptime reports.",
)

DEPLOYMENT = crd(
    "Deployment", "deployments", ["gdeploy", "gd"],
    obj({
        "resources": obj({
            "cru": integer(0, 1024), "mru": integer(0, 1 << 20), "sru": integer(0, 1 << 24), "hru": integer(0, 1 << 24),
        }, ["cru", "mru"]),
        "publicIPs": integer(0, 64),
        "payer": obj({"account": ACCOUNT,
                      "secretRef": obj({"name": NAME, "key": string(minLength=1, maxLength=253, default="twinKey")},
                                       ["name"])},
                     **{"x-kubernetes-validations": [{
                         "rule": "has(self.account) || has(self.secretRef)",
                         "message": "payer needs secretRef: a Secret with the twin's key, or with a grant the twin "
                                    "signed for this namespace (then payer.account names the twin)"}]}),
        "placement": obj({"node": NAME, "farm": NAME, "country": string(maxLength=64), "city": string(maxLength=64),
                          "certifiedOnly": BOOL, "dedicated": BOOL}),
        "selfHealing": {**BOOL, "default": True},
    }, ["resources", "payer"]),
    obj({
        "node": string(), "farm": string(), "contractId": integer(),
        "contractState": string(enum=["Created", "GracePeriod", "Deleted"]),
        "costPerHour": TFT, "billedTotal": TFT, "lastBilledAt": string(format="date-time"),
        "overdraft": TFT, "discount": string(), "reserved": CAPACITY, "publicIPs": integer(),
        "movedFrom": string(), "deletedReason": string(),
        "reserve": TFT,  # §2.7: paid by the payer, held for the farmer / foundation / staking pool payout
        "lastBill": obj({"amount": TFT, "discount": string(), "billedAt": string(format="date-time")}),
        "billingError": string(maxLength=512),
    }),
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
PROPOSAL = crd(
    "Proposal", "proposals", ["gprop"],
    obj({
        "title": string(minLength=1, maxLength=128),
        "description": string(maxLength=4096),
        "action": immutable(obj({
            "type": string(enum=["SetPricingPolicy", "SetFarmingPolicy"]),
            "pricing": obj({
                "cu": integer(0, PRICE), "su": integer(0, PRICE), "nu": integer(0, PRICE), "ipu": integer(0, PRICE),
                "uniqueName": integer(0, PRICE), "discountForDedicationNodes": integer(0, 100),
                "certifiedFactorPercent": integer(100, 1000),
            }, description="§1.4 pricing policy fields to change, units USD per hour"),
            "farming": obj({
                "cu": integer(0, U32), "su": integer(0, U32), "nu": integer(0, U32), "ipv4": integer(0, U32),
                "minimalUptime": integer(0, 100),
            }, description="§1.5 farming policy fields to change, mUSD"),
            "policyId": integer(1, U32, description="the farming policy to change"),
        }, ["type"]), FIXED_ONCE_PROPOSED),
        "durationHours": immutable(integer(24, 720, default=168, description="§5: voting lasts 1 to 30 days, 7 by default"),
                                   FIXED_ONCE_PROPOSED),
        "threshold": immutable(integer(5, 100_000, default=5, description="§5: the minimum number of farms that must vote"),
                               FIXED_ONCE_PROPOSED),
        "councilKey": {**ED25519, "description": "the proposing council member's public key"},
        "councilSignature": SIGNATURE,
        "votes": {"type": "array", "maxItems": 10_000, "items": obj({
            "farm": NAME, "approve": BOOL,
            "seq": integer(0, 1 << 53, description="sequence number: only a farm's newest vote counts"),
            "signature": SIGNATURE}, ["farm", "approve", "signature"])},
        "vetoes": {"type": "array", "maxItems": 100, "items": obj({
            "memberKey": ED25519, "signature": SIGNATURE}, ["memberKey", "signature"])},
    }, ["title", "action", "councilKey", "councilSignature"]),
    obj({
        "proposalId": integer(), "state": string(enum=["Open", "Approved", "Rejected", "Executed", "Vetoed"]),
        "deadline": string(format="date-time"), "threshold": integer(),
        "ayesWeight": integer(), "naysWeight": integer(), "ayes": integer(), "nays": integer(), "vetoes": integer(),
        "executedAt": string(format="date-time"),
        "rejectedVotes": {"type": "array", "items": obj({"farm": string(), "reason": string(), "seq": integer()})},
        "counted": {"type": "array", "description": "the votes the ledger counts: each farm's newest",
                    "items": obj({"farm": string(), "approve": BOOL, "weight": integer(), "seq": integer()})},
        "rejectedVetoes": {"type": "array", "items": obj({"memberKey": string(), "reason": string()})},
    }),
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
