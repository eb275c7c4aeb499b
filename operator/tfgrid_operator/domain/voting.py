"""DAO: farm weights, tally and outcome (§5)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Iterable, Mapping

from tfgrid_operator.domain import identity, units

DEFAULT_DURATION_S = 7 * 24 * 3600  # §5: default 7 days (DaoMotionDuration, §4.4)
MIN_DURATION_S = 24 * 3600  # §5, ADR 0020/0021: between 1 day ...
MAX_DURATION_S = 30 * 24 * 3600  # ... and 30 days
MIN_THRESHOLD = 5  # §5, since 2024-05: threshold ≥ 5 farms
MIN_VETOES = 3  # §4.4 MinVetos


class Outcome(enum.StrEnum):
    OPEN = "Open"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    VETOED = "Vetoed"


def farm_weight(nodes: Iterable[units.Resources]) -> int:
    """§5: Σ over the farm's nodes of 2·CU_w + SU_w."""
    return sum(units.dao_weight(r) for r in nodes)


@dataclasses.dataclass(frozen=True, slots=True)
class Vote:
    farm: str
    approve: bool
    weight: int  # captured when the vote was cast (§5)
    seq: int = 0  # the counted vote's sequence number: an older one is refused (issue 13, invariant 5)


@dataclasses.dataclass(frozen=True, slots=True)
class Tally:
    ayes_weight: int
    nays_weight: int
    ayes: int
    nays: int

    @property
    def voters(self) -> int:
        return self.ayes + self.nays


def tally(votes: Mapping[str, Vote]) -> Tally:
    """One vote per farm (the mapping is keyed by farm; a switched vote replaces the old one)."""
    ayes = [v for v in votes.values() if v.approve]
    nays = [v for v in votes.values() if not v.approve]
    return Tally(sum(v.weight for v in ayes), sum(v.weight for v in nays), len(ayes), len(nays))


def outcome(*, t: Tally, threshold: int, vetoes: int, now: int, end: int) -> Outcome:
    """§5: vetoed at 3 council vetoes; at the deadline, approved ⇔ voters ≥ threshold and ayes > nays."""
    if vetoes >= MIN_VETOES:
        return Outcome.VETOED
    if now < end:
        return Outcome.OPEN
    if t.voters >= threshold and t.ayes_weight > t.nays_weight:
        return Outcome.APPROVED
    return Outcome.REJECTED


def validate_window(*, duration_s: int, threshold: int) -> list[str]:
    """§5 bounds on a proposal: threshold ≥ 5, duration in [1 day, 30 days]."""
    problems = []
    if threshold < MIN_THRESHOLD:
        problems.append(f"threshold must be at least {MIN_THRESHOLD} farms")
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        problems.append("voting must last between 1 and 30 days")
    return problems


def proposal_digest(*, proposal: str, proposal_id: int, action: Mapping[str, object], threshold: int,
                    end_ts: int) -> str:
    """What a vote binds to (issue 13, invariant 5): the proposal's identity (its namespace/name and its ledger
    id, so a re-created proposal of the same name is another one) and what the council's proposal fixed —
    the action, the threshold and the deadline. Hex SHA-256 of the canonical document."""
    doc = {"proposal": proposal, "proposalId": proposal_id, "action": dict(action), "threshold": threshold,
           "endTs": end_ts}
    return hashlib.sha256(identity.canonical("tfgrid-proposal-digest-v1", doc)).hexdigest()


def vote_payload(*, proposal: str, digest: str, farm: str, approve: bool, seq: int) -> dict[str, object]:
    """What the farm owner signs (identity.VOTE_V2): the proposal and its digest, the choice, and a sequence
    number. Only a farm's newest vote counts: one with a lower sequence than the counted one is refused."""
    return {"proposal": proposal, "digest": digest, "farm": farm, "approve": approve, "seq": seq}
