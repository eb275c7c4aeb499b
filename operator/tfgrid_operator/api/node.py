"""Node: a node of a farm (§1.3), minted for from its signed uptime and capacity reports (§3)."""

from __future__ import annotations

from pydantic import Field

from tfgrid_operator.api.common import (
    RULES,
    Capacity,
    Column,
    Count,
    Kind,
    KindStatus,
    Name,
    Place,
    PublicKey,
    SpecModel,
    StatusModel,
    Timestamp,
    crd,
    described_capacity,
    tft,
)
from tfgrid_operator.domain.units import Resources


class NodeResources(SpecModel):
    """The capacity a node offers (§1.3); sru is required: a node boots from an SSD."""

    cru: int = Field(ge=1, le=1024, description=f"logical CPU cores ({RULES} §1.3: at least 1)")
    mru: int = Field(ge=2, le=1 << 20, description=f"memory, GiB ({RULES} §1.3: at least 2)")
    sru: int = Field(ge=0, le=1 << 24, description=f"SSD storage, GiB ({RULES} §1.3: sru or hru at least 100)")
    hru: int = Field(0, ge=0, le=1 << 24, description=f"HDD storage, GiB ({RULES} §1.3: sru or hru at least 100)")

    def as_resources(self) -> Resources:
        return Resources(self.cru, self.mru, self.sru, self.hru)


class Location(SpecModel):
    # keyword defaults: a type checker then knows Location() needs no argument
    country: Place = Field(default="", description="the country the node is in")
    city: Place = Field(default="", description="the city the node is in")


class NodeSpec(SpecModel):
    """the node as its farmer declares it; written by the user"""

    farm: Name = Field(description=f"the name of the Farm this node belongs to ({RULES} §1.3); set by the user, cannot "
                                   f"change",
                       json_schema_extra=crd(immutable="a Node's farm cannot change: delete the Node and create it "
                                                       "under the other farm"))
    public_key: PublicKey = Field(
        alias="publicKey", description=f"the node's own base64 ed25519 public key (32 bytes): its agent signs uptime "
                                       f"and capacity reports with it ({RULES} §1.3); set by the user")
    resources: NodeResources = Field(description=f"the capacity the node offers, set by the user; minting and DAO "
                                                 f"weight use what its key attested instead ({RULES} §3.2)")
    location: Location = Field(default_factory=Location,
                               description="where the node is, for Deployments' placement; set by the user")
    certified: bool = Field(False, description=f"whether the node should be certified; minted as DIY until the "
                                               f"council certifies it ({RULES} §1.3, §3.4); set by the user, default "
                                               f"false", json_schema_extra=crd(default=True))

    @property
    def capacity(self) -> Resources:
        return self.resources.as_resources()


class Minting(StatusModel):
    period: Count | None = Field(None, description=f"the index of the minting period last minted for ({RULES} §3.1)")
    reward: Count | None = Field(None, description=tft(f"minted for that period ({RULES} §3.5)"))
    reason: str | None = Field(None, description=f"the outcome of the last mint (the SLA's, {RULES} §3.4), Pending "
                                                 f"before the first")
    total: Count | None = Field(None, description=tft(f"minted to the node in all ({RULES} §3.6)"))
    uptime_permille: Count | None = Field(None, alias="uptimePermille",
                                          description=f"the last minted period's uptime, per mille ({RULES} §3.4)")
    cu: str | None = Field(None, description=f"the farming compute units the last mint used, a decimal ({RULES} §3.2)")
    su: str | None = Field(None, description=f"the farming storage units the last mint used, a decimal ({RULES} §3.2)")
    certified: bool | None = Field(None, description=f"whether the last mint counted the node as certified "
                                                     f"({RULES} §3.5)")
    receipt: str | None = Field(None, description="the command that shows the last mint's inputs")


class Attested(StatusModel):
    cru: Count | None = Field(None, description="logical CPU cores the node's key attested")
    mru: Count | None = Field(None, description="memory the node's key attested, GiB")
    sru: Count | None = Field(None, description="SSD storage the node's key attested, GiB")
    hru: Count | None = Field(None, description="HDD storage the node's key attested, GiB")
    certified: bool | None = Field(None, description=f"whether the council certified the node ({RULES} §1.3)")
    since: Timestamp | None = Field(None, description="since when the node has held this capacity")


class NodeStatus(KindStatus):
    """the node as the ledger has it; written by the operator"""

    node_id: Count | None = Field(None, alias="nodeId", description=f"the node's id on the ledger ({RULES} §1.3); "
                                                                    f"written by the operator")
    farm: str | None = Field(None, description="the name of the farm the ledger has it under; written by the operator")
    cu: str | None = Field(None, description=f"farming compute units of its resources, a decimal ({RULES} §3.2); "
                                             f"written by the operator")
    su: str | None = Field(None, description=f"farming storage units of its resources, a decimal ({RULES} §3.2); "
                                             f"written by the operator")
    used: Capacity | None = Field(None, description=described_capacity("the resources contracts reserve on the node"))
    free: Capacity | None = Field(
        None, description=described_capacity("the resources not reserved: spec.resources minus used"))
    used_percent: Count | None = Field(None, alias="usedPercent", le=100,
                                       description="the most-used resource's reserved share, percent; written by the "
                                                   "operator")
    deployments: Count | None = Field(None, description="how many contracts the node holds; written by the operator")
    uptime_seconds: Count | None = Field(
        None, alias="uptimeSeconds", description=f"uptime credited from signed reports in the current minting period, "
                                                 f"seconds ({RULES} §3.3); written by the operator")
    uptime_percent: Count | None = Field(
        None, alias="uptimePercent", le=100, description=f"that uptime against the period so far, percent, rounded "
                                                         f"down ({RULES} §3.3); written by the operator")
    last_report_at: Timestamp | None = Field(
        None, alias="lastReportAt", description=f"when its last valid uptime report came; it is down 80 minutes later "
                                                f"without one ({RULES} §1.3); written by the operator")
    violation: str | None = Field(None, description=f"the uptime violation that zeroes this period's minting: "
                                                    f"UptimeTooHigh, UptimeTooLow, ClockSkew or InvalidReboot "
                                                    f"({RULES} §3.3); written by the operator")
    minting: Minting | None = Field(None, description=f"the node's minting, Proof-of-Capacity ({RULES} §3); written "
                                                      f"by the operator")
    attested: Attested | None = Field(None, description="what the node's key attested and the council certified "
                                                        "(minting uses it); written by the operator")


NODE = Kind(
    "Node", "nodes", ("gnode", "gn"), NodeSpec, NodeStatus,
    (Column("Farm", "string", ".spec.farm"),
     Column("CU", "string", ".status.cu"),
     Column("SU", "string", ".status.su"),
     Column("Used%", "integer", ".status.usedPercent"),
     Column("Uptime%", "integer", ".status.uptimePercent"),
     Column("Minted", "integer", ".status.minting.total", description="TFT units")),
    "A node of a farm. Capacity is minted for (Proof-of-Capacity) from signed uptime reports.",
)
