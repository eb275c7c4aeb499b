"""Farm: a farmer's farm, registered on the ledger (§1.2)."""

from __future__ import annotations

from pydantic import Field

from tfgrid_operator.api.common import (
    RULES,
    Account,
    Capacity,
    Column,
    Count,
    Kind,
    KindStatus,
    PublicKey,
    SpecModel,
    crd,
    described_capacity,
    tft,
)


class FarmSpec(SpecModel):
    """the farm as its farmer declares it; written by the user"""

    owner_key: PublicKey = Field(alias="ownerKey", description=f"the farm owner's (twin's) base64 ed25519 public key "
                                                              f"(32 bytes); set by the user ({RULES} §1.2)")
    payout_account: Account = Field(
        alias="payoutAccount", description=f"ledger account that receives the farm's minting rewards ({RULES} §3.6) "
                                           f"and the farmer's share of contract payouts ({RULES} §2.7)")
    certified: bool = Field(False, description=f"whether the farm is certified ({RULES} §1.2); set by the user, "
                                               f"default false", json_schema_extra=crd(default=True))
    dedicated: bool = Field(False, description="the farm's dedicated flag, recorded on its ledger record; set by the "
                                               "user, default false", json_schema_extra=crd(default=True))
    public_ips: int = Field(0, alias="publicIPs", ge=0, le=512,
                            description=f"public IPv4 addresses the farm offers, at most 512 ({RULES} §1.2); set by "
                                        f"the user")


class FarmStatus(KindStatus):
    """the farm as the ledger has it; written by the operator"""

    farm_id: Count | None = Field(None, alias="farmId", description=f"the farm's id on the ledger ({RULES} §1.2); "
                                                                    f"written by the operator")
    nodes: Count | None = Field(None, description="how many Nodes of this farm are registered on the ledger; written "
                                                  "by the operator")
    capacity: Capacity | None = Field(
        None, description=described_capacity("the total resources its registered nodes offer"))
    used: Capacity | None = Field(None, description=described_capacity("the resources contracts reserve on its nodes"))
    minted_last_period: Count | None = Field(
        None, alias="mintedLastPeriod",
        description=tft(f"minted to its nodes for the latest minting period any of them was minted for ({RULES} §3.5)"))
    minted_total: Count | None = Field(None, alias="mintedTotal",
                                       description=tft(f"minted to its nodes in all ({RULES} §3.6)"))
    last_mint_period: Count | None = Field(
        None, alias="lastMintPeriod", description=f"the index of that latest minting period ({RULES} §3.1); written "
                                                  f"by the operator")


FARM = Kind(
    "Farm", "farms", ("farm", "gfarm"), FarmSpec, FarmStatus,
    (Column("Nodes", "integer", ".status.nodes"),
     Column("CRU", "integer", ".status.capacity.cru"),
     Column("Minted", "integer", ".status.mintedLastPeriod", description="TFT units")),
    "A farmer's farm on the grid. The operator registers it on the ledger.",
)
