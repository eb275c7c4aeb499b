"""Deployment: a user's reservation on a node, billed per period (§2, Proof-of-Utilization)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tfgrid_operator.api.common import (
    RULES,
    Account,
    Capacity,
    Column,
    Count,
    Kind,
    KindStatus,
    Name,
    Place,
    Rule,
    SpecModel,
    StatusModel,
    Timestamp,
    crd,
    described_capacity,
    tft,
)
from tfgrid_operator.domain import scheduling
from tfgrid_operator.domain.units import Resources


class RequestResources(SpecModel):
    cru: int = Field(ge=0, le=1024, description="logical CPU cores")
    mru: int = Field(ge=0, le=1 << 20, description="memory, GiB")
    sru: int = Field(0, ge=0, le=1 << 24, description="SSD storage, GiB")
    hru: int = Field(0, ge=0, le=1 << 24, description="HDD storage, GiB")

    def as_resources(self) -> Resources:
        return Resources(self.cru, self.mru, self.sru, self.hru)


class SecretRef(SpecModel):
    """a Secret holding the paying twin's ed25519 key (base64 seed); its account is derived from it"""

    name: Name = Field(description="the Secret's name, in the Deployment's namespace")
    key: str = Field("twinKey", min_length=1, max_length=253, description="the key in the Secret's data, default twinKey",
                     json_schema_extra=crd(default=True))


class GrantRef(SpecModel):
    """a Secret holding the grant the twin payer.account signed for this namespace (`tfgrid-operator grant`)"""

    name: Name = Field(description="the Secret's name, in the Deployment's namespace")
    key: str = Field("grant", min_length=1, max_length=253, description="the key in the Secret's data, default grant",
                     json_schema_extra=crd(default=True))


class Payer(SpecModel):
    """the twin that pays the contract's bills: secretRef, or account with grantRef"""

    account: Account | None = Field(None, description="the paying twin's ledger account; proves itself with grantRef")
    secret_ref: SecretRef | None = Field(None, alias="secretRef", description=SecretRef.__doc__)
    grant_ref: GrantRef | None = Field(None, alias="grantRef", description=GrantRef.__doc__)

    rules = (
        Rule("!(has(self.account) && has(self.secretRef))",
             lambda p: not (p.account is not None and p.secret_ref is not None),
             "exactly one of payer.account and payer.secretRef: a Secret with the twin's key names its account itself; "
             "a named account proves itself with payer.grantRef"),
        Rule("has(self.account) || has(self.secretRef)",
             lambda p: p.account is not None or p.secret_ref is not None,
             "payer needs secretRef (a Secret with the twin's key) or account with grantRef (a Secret with the grant "
             "the twin signed for this namespace)"),
        Rule("!has(self.grantRef) || has(self.account)",
             lambda p: p.grant_ref is None or p.account is not None,
             "payer.grantRef needs payer.account, the twin that signed the grant"),
    )


class Placement(SpecModel):
    # keyword defaults: a type checker then knows Placement() needs no argument
    node: Name | None = Field(default=None, description="only this Node")
    farm: Name | None = Field(default=None, description="only nodes of this Farm")
    country: Place | None = Field(default=None, description="only nodes in this country (spec.location.country)")
    city: Place | None = Field(default=None, description="only nodes in this city (spec.location.city)")
    certified_only: bool = Field(default=False, alias="certifiedOnly",
                                 description=f"only certified nodes (a certified node's bills are ×1.25, {RULES} §2.6)")
    dedicated: bool = Field(default=False, description=f"rent a whole empty node: billed for all its capacity at the "
                                                       f"dedication discount ({RULES} §2.6)")


class DeploymentSpec(SpecModel):
    """the reservation the user asks for; written by the user"""

    resources: RequestResources = Field(description=f"the capacity to reserve on a node, billed per hour "
                                                    f"({RULES} §2.6); set by the user")
    public_ips: int = Field(0, alias="publicIPs", ge=0, le=64,
                            description=f"public IPv4 addresses to reserve, at most 64, billed per hour ({RULES} §2.6); "
                                        f"set by the user")
    payer: Payer = Field(description=f"the twin that pays the contract's bills ({RULES} §2.7): secretRef, or account "
                                     f"with grantRef; set by the user")
    placement: Placement = Field(default_factory=Placement,
                                 description=f"constraints on the node the operator places the deployment on, the "
                                             f"least-loaded that fits ({RULES} §6.3); set by the user")
    self_healing: bool = Field(True, alias="selfHealing",
                               description=f"move the deployment to another node when its node goes down ({RULES} "
                                           f"§2.7, a move); set by the user, default true",
                               json_schema_extra=crd(default=True))

    @property
    def capacity(self) -> Resources:
        return self.resources.as_resources()

    def request(self, exclude: frozenset[str] = frozenset()) -> scheduling.Request:
        p = self.placement
        return scheduling.Request(
            resources=self.capacity, public_ips=self.public_ips, node=p.node, farm=p.farm, country=p.country,
            city=p.city, certified_only=p.certified_only, dedicated=p.dedicated, exclude=exclude)


class LastBill(StatusModel):
    amount: Count | None = Field(None, description=tft(f"the last bill's amount ({RULES} §2.6)"))
    discount: str | None = Field(None, description=f"its discount level ({RULES} §2.6)")
    billed_at: Timestamp | None = Field(None, alias="billedAt", description="when it was billed")


class DeploymentStatus(KindStatus):
    """the contract as the ledger has it; written by the operator"""

    node: str | None = Field(None, description="the name of the node the contract is on; written by the operator")
    farm: str | None = Field(None, description="the name of that node's farm; written by the operator")
    contract_id: Count | None = Field(None, alias="contractId",
                                      description="the contract's id on the ledger; written by the operator")
    contract_state: Literal["Created", "GracePeriod", "Deleted"] | None = Field(
        None, alias="contractState", description=f"the contract's state: Created, GracePeriod (a bill could not be "
                                                 f"paid in full) or Deleted ({RULES} §2.4); written by the operator")
    cost_per_hour: Count | None = Field(
        None, alias="costPerHour",
        description=tft(f"one full hour's bill at today's prices, before the balance discount ({RULES} §2.6)"))
    billed_total: Count | None = Field(None, alias="billedTotal",
                                       description=tft(f"billed over the contract's life ({RULES} §2.5)"))
    last_billed_at: Timestamp | None = Field(None, alias="lastBilledAt",
                                             description=f"when the contract was last billed ({RULES} §2.5); written "
                                                         f"by the operator")
    overdraft: Count | None = Field(
        None, description=tft(f"what the payer could not pay, carried to the next bill ({RULES} §2.7)"))
    discount: str | None = Field(None, description=f"the last bill's discount level: None, Default, Bronze, Silver or "
                                                   f"Gold ({RULES} §2.6); written by the operator")
    reserved: Capacity | None = Field(
        None, description=described_capacity("the resources the contract reserves on its node"))
    public_ips: Count | None = Field(None, alias="publicIPs",
                                     description="public IPv4 addresses the contract reserves; written by the operator")
    moved_from: str | None = Field(None, alias="movedFrom", description=f"the node self-healing moved the deployment "
                                                                        f"off ({RULES} §2.7); written by the operator")
    deleted_reason: str | None = Field(
        None, alias="deletedReason", description=f"why the contract was deleted, e.g. OutOfFunds, CanceledByUser or "
                                                 f"Moved ({RULES} §2.4); written by the operator")
    reserve: Count | None = Field(None, description=tft(f"paid by the payer and held for the farmer / foundation / "
                                                        f"staking pool payout ({RULES} §2.7)"))
    last_bill: LastBill | None = Field(
        None, alias="lastBill", description="the last bill (receipts: `tfgrid-operator ledger bills --deployment "
                                            "NS/NAME`); written by the operator")
    billing_error: str | None = Field(
        None, alias="billingError", max_length=512, description=f"why the contract is not billed, e.g. a bill beyond "
                                                                f"the ledger's bounds ({RULES} §0); written by the "
                                                                f"operator")


DEPLOYMENT = Kind(
    "Deployment", "deployments", ("gdeploy", "gd"), DeploymentSpec, DeploymentStatus,
    (Column("Node", "string", ".status.node"),
     Column("Contract", "integer", ".status.contractId"),
     Column("State", "string", ".status.contractState"),
     Column("Cost/h", "integer", ".status.costPerHour", description="TFT units"),
     Column("Billed", "integer", ".status.billedTotal", description="TFT units")),
    "A user's workload reservation: placed on a node, billed per period (Proof-of-Utilization).",
)
