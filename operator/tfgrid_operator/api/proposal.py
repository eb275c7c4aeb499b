"""Proposal: a DAO proposal (§5), proposed by a council member, voted by farms, vetoed by the council."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tfgrid_operator.api.common import (
    RULES,
    Column,
    Count,
    Kind,
    KindStatus,
    Name,
    PublicKey,
    Signature,
    SpecModel,
    StatusModel,
    Timestamp,
    crd,
)
from tfgrid_operator.domain import money, voting

U32 = 1 << 32
PRICE = money.MAX_POLICY_PRICE  # a pricing policy field's bound, derived from the ledger's (money.py): no bill overflows
USD_H = f"units USD per hour (1 unit USD = 10^-7 USD, {RULES} §0)"
# what the council signed and the farms vote on (§5): changing it would change the question under the votes
FIXED_ONCE_PROPOSED = "the action, threshold and duration are fixed once proposed; create a new Proposal to change them"


class PricingChange(SpecModel):
    """The pricing policy fields a proposal may change (§1.4), units USD per hour; omitted ones stay."""

    cu: int | None = Field(None, ge=0, le=PRICE, description=f"price of a compute unit, {USD_H}")
    su: int | None = Field(None, ge=0, le=PRICE, description=f"price of a storage unit, {USD_H}")
    nu: int | None = Field(None, ge=0, le=PRICE, description=f"price of a network unit, {USD_H}")
    ipu: int | None = Field(None, ge=0, le=PRICE, description=f"price of a public IPv4 address, {USD_H}")
    unique_name: int | None = Field(None, alias="uniqueName", ge=0, le=PRICE,
                                    description=f"price of a unique name, {USD_H}")
    discount_for_dedication_nodes: int | None = Field(
        None, alias="discountForDedicationNodes", ge=0, le=100,
        description=f"the share of its full price a dedicated node is billed, percent ({RULES} §2.6)")
    certified_factor_percent: int | None = Field(
        None, alias="certifiedFactorPercent", ge=100, le=1000,
        description=f"the factor on a certified node's bills, percent: 125 is ×1.25 ({RULES} §2.6)")


class FarmingChange(SpecModel):
    """The farming policy fields a proposal may change (§1.5), mUSD; omitted ones stay."""

    cu: int | None = Field(None, ge=0, le=U32, description=f"reward per farming compute unit per period, mUSD "
                                                           f"({RULES} §3.5)")
    su: int | None = Field(None, ge=0, le=U32, description=f"reward per farming storage unit per period, mUSD "
                                                           f"({RULES} §3.5)")
    nu: int | None = Field(None, ge=0, le=U32, description=f"reward per GB of network traffic, mUSD ({RULES} §3.5)")
    ipv4: int | None = Field(None, ge=0, le=U32, description=f"reward per public IPv4 address-hour, mUSD "
                                                             f"({RULES} §3.5)")
    minimal_uptime: int | None = Field(None, alias="minimalUptime", ge=0, le=100,
                                       description=f"the SLA's minimum uptime, percent ({RULES} §3.4)")


class ProposalAction(SpecModel):
    """The policy change. Which parts a type needs, and that it changes something, is the parser's rule alone:
    a Proposal that breaks it is stored and reported InvalidSpec (tests/e2e/test_bad_input.py)."""

    type: Literal["SetPricingPolicy", "SetFarmingPolicy"] = Field(
        description=f"SetPricingPolicy ({RULES} §1.4) or SetFarmingPolicy ({RULES} §1.5)")
    pricing: PricingChange | None = Field(None, description=f"{RULES} §1.4 pricing policy fields to change, units USD "
                                                            f"per hour; omitted ones stay")
    farming: FarmingChange | None = Field(None, description=f"{RULES} §1.5 farming policy fields to change, mUSD; "
                                                            f"omitted ones stay")
    policy_id: int | None = Field(None, alias="policyId", ge=1, le=U32, description="the farming policy to change")

    @model_validator(mode="after")
    def _one_change(self) -> ProposalAction:
        if self.type == "SetPricingPolicy" and (self.pricing is None or self.farming is not None):
            raise ValueError("a SetPricingPolicy action needs action.pricing (and no action.farming)")
        if self.type == "SetFarmingPolicy" and (self.farming is None or self.policy_id is None or self.pricing):
            raise ValueError("a SetFarmingPolicy action needs action.policyId and action.farming (and no action.pricing)")
        change = self.pricing or self.farming
        if change is not None and not change.model_dump(exclude_none=True):
            raise ValueError("the action changes nothing: name at least one policy field")
        return self

    def ledger_action(self) -> dict[str, Any]:
        """The action as the ledger applies it: policy fields in the domain's snake_case names."""
        if self.type == "SetPricingPolicy":
            assert self.pricing is not None
            return {"type": self.type, "pricing": self.pricing.model_dump(exclude_none=True)}
        assert self.farming is not None
        return {"type": self.type, "policyId": self.policy_id, "farming": self.farming.model_dump(exclude_none=True)}


class SignedVote(SpecModel):
    """one farm's signed vote"""

    farm: Name = Field(description="the voting Farm's name")
    approve: bool = Field(description="aye (true) or nay (false)")
    # the vote's sequence number (issue 13, invariant 5); absent: the vote is reported Unbound, never counted
    seq: int | None = Field(None, ge=0, le=1 << 53, description="sequence number: only a farm's newest vote counts")
    signature: Signature = Field(description="the farm owner's base64 ed25519 signature over the vote")


class SignedVeto(SpecModel):
    """one council member's signed veto"""

    member_key: PublicKey = Field(alias="memberKey", description="the vetoing council member's public key")
    signature: Signature = Field(description="that member's base64 ed25519 signature over the veto")


class ProposalSpec(SpecModel):
    """the proposal, its votes and vetoes; written by the council member and the farmers"""

    title: str = Field(min_length=1, max_length=128, description="the proposal's title; set by the council member")
    description: str = Field("", max_length=4096, description="what the proposal is for; set by the council member")
    action: ProposalAction = Field(description=f"the policy change the proposal makes if approved ({RULES} §5); set "
                                               f"by the council member, fixed once proposed",
                                   json_schema_extra=crd(immutable=FIXED_ONCE_PROPOSED))
    duration_hours: int = Field(voting.DEFAULT_DURATION_S // 3600, alias="durationHours",
                                ge=voting.MIN_DURATION_S // 3600, le=voting.MAX_DURATION_S // 3600,
                                description=f"how long voting lasts, hours: 1 to 30 days, 7 by default ({RULES} §5)",
                                json_schema_extra=crd(default=True, immutable=FIXED_ONCE_PROPOSED))
    threshold: int = Field(voting.MIN_THRESHOLD, ge=voting.MIN_THRESHOLD, le=100_000,
                           description=f"the minimum number of farms that must vote, at least {voting.MIN_THRESHOLD} "
                                       f"({RULES} §5)", json_schema_extra=crd(default=True, immutable=FIXED_ONCE_PROPOSED))
    council_key: PublicKey = Field(alias="councilKey", description="the proposing council member's public key")
    council_signature: Signature = Field(alias="councilSignature",
                                         description="the council member's base64 ed25519 signature over the proposal "
                                                     "(all but the signatures, votes and vetoes)")
    nonce: str | None = Field(None, pattern=voting.NONCE_PATTERN,
                              description=f"the council signature's nonce, made by `tfgrid-operator council sign`: the "
                                          f"ledger opens one proposal per nonce, ever, so a deleted (withdrawn) proposal "
                                          f"is not opened again by the same signature ({RULES} §5); set by the council "
                                          f"member",
                              json_schema_extra=crd(immutable="the nonce is the council signature's; have the proposal "
                                                              "signed again to change it"))
    votes: list[SignedVote] = Field(default_factory=list, max_length=10_000,
                                    description=f"the farms' signed votes, weighed by their nodes' capacity ({RULES} "
                                                f"§5); added by the farmers")
    vetoes: list[SignedVeto] = Field(default_factory=list, max_length=100,
                                     description=f"council members' signed vetoes: 3 close the proposal ({RULES} §4.4, "
                                                 f"§5)")

    def signed_payload(self, proposal: str) -> dict[str, Any]:
        """What the council member signs (voting.PROPOSAL_V2): everything but the signatures, votes and vetoes (which
        come later), with the nonce ('' when none: such a signature never opens a proposal)."""
        return voting.proposal_payload(proposal=proposal, title=self.title, description=self.description,
                                       action=self.action.ledger_action(), duration_hours=self.duration_hours,
                                       threshold=self.threshold, nonce=self.nonce or "")


class RejectedVote(StatusModel):
    """one vote not counted"""

    farm: str | None = Field(None, description="the farm whose vote does not count")
    reason: str | None = Field(None, description="why it does not count")
    seq: Count | None = Field(None, description="the vote's sequence number")


class CountedVote(StatusModel):
    """one counted vote"""

    farm: str | None = Field(None, description="the voting farm")
    approve: bool | None = Field(None, description="aye (true) or nay (false)")
    weight: Count | None = Field(None, description=f"the farm's weight captured at vote time ({RULES} §5)")
    seq: Count | None = Field(None, description="the counted vote's sequence number")


class RejectedVeto(StatusModel):
    """one veto not counted"""

    member_key: str | None = Field(None, alias="memberKey", description="the public key of the veto's signer")
    reason: str | None = Field(None, description="why the veto does not count")


class ProposalStatus(KindStatus):
    """the proposal as the ledger has it (docs/grid-rules.md §5); written by the operator"""

    proposal_id: Count | None = Field(None, alias="proposalId",
                                      description="the proposal's id on the ledger; written by the operator")
    state: Literal["Open", "Approved", "Rejected", "Executed", "Vetoed"] | None = Field(
        None, description=f"Open, Approved, Rejected, Executed or Vetoed ({RULES} §5); written by the operator")
    deadline: Timestamp | None = Field(None, description="when voting ends; written by the operator")
    threshold: Count | None = Field(None, description=f"the minimum number of voting farms, as opened on the ledger "
                                                      f"({RULES} §5); written by the operator")
    ayes_weight: Count | None = Field(None, alias="ayesWeight", description=f"the aye voters' weight, captured at vote "
                                                                            f"time ({RULES} §5); written by the operator")
    nays_weight: Count | None = Field(None, alias="naysWeight", description=f"the nay voters' weight, captured at vote "
                                                                            f"time ({RULES} §5); written by the operator")
    ayes: Count | None = Field(None, description="how many farms voted aye; written by the operator")
    nays: Count | None = Field(None, description="how many farms voted nay; written by the operator")
    vetoes: Count | None = Field(None, description=f"how many council vetoes count ({RULES} §5); written by the operator")
    executed_at: Timestamp | None = Field(None, alias="executedAt",
                                          description="when the approved action was executed; written by the operator")
    rejected_votes: list[RejectedVote] | None = Field(
        None, alias="rejectedVotes", description="spec.votes the ledger does not count, and why; written by the "
                                                 "operator")
    counted: list[CountedVote] | None = Field(
        None, description="the votes the ledger counts: each farm's newest; written by the operator")
    rejected_vetoes: list[RejectedVeto] | None = Field(
        None, alias="rejectedVetoes", description="spec.vetoes that do not count, and why; written by the operator")


PROPOSAL = Kind(
    "Proposal", "proposals", ("gprop",), ProposalSpec, ProposalStatus,
    (Column("State", "string", ".status.state"),
     Column("Ayes", "integer", ".status.ayesWeight", description="aye weight (§5)"),
     Column("Nays", "integer", ".status.naysWeight", description="nay weight (§5)"),
     Column("Deadline", "string", ".status.deadline")),
    "A DAO proposal (§5): proposed by a council member, voted by farms with signed votes, executed once if approved.",
)
