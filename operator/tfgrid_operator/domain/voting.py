"""DAO: farm weights, tally and outcome (§5)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction

from tfgrid_operator.domain import identity, minting, units

DEFAULT_DURATION_S = 7 * 24 * 3600  # §5: default 7 days (DaoMotionDuration, §4.4)
MIN_DURATION_S = 24 * 3600  # §5, ADR 0020/0021: between 1 day ...
MAX_DURATION_S = 30 * 24 * 3600  # ... and 30 days
MIN_THRESHOLD = 5  # §5, since 2024-05: threshold ≥ 5 farms
MIN_VETOES = 3  # §4.4 MinVetos
# what a council member signs to propose (issue 13, invariant 5): v2 carries a nonce the ledger accepts once
PROPOSAL_V2 = "tfgrid-proposal-v2"
NONCE_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"  # `council sign` makes 32 hex digits (128 random bits)
_NONCE = re.compile(NONCE_PATTERN)
# mint reasons of a node that met its period's SLA (§3.4): only its capacity weighs in votes
MET_SLA = frozenset({"Rewarded", "Bounded"})


class Outcome(enum.StrEnum):
    OPEN = "Open"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    VETOED = "Vetoed"


def held_weight(history: Sequence[minting.Held], period: minting.Period) -> int:
    """A node's §5 weight as held over a completed minting period (issue 13, invariant 3): each attested capacity
    weighs for the seconds of the period it was held (``minting.held_seconds``, as minting weighs it), floored. A
    capacity attested a second before the period's end weighs a second's worth, and one attested after it nothing."""
    held = sum(units.dao_weight(h.resources) * seconds for h, seconds in minting.held_seconds(history, period))
    return int(Fraction(held, period.seconds))


def node_vote_weight(history: Sequence[minting.Held], period: minting.Period, *, met_sla: bool,
                     now: units.Resources | None) -> int:
    """What one node adds to its farm's vote (§5, our choice): the weight it held over the last minted period, if
    it met that period's SLA, and never more than the capacity it attests now (a node that shrank since weighs
    what it still has)."""
    if not met_sla or now is None:
        return 0
    return min(held_weight(history, period), units.dao_weight(now))


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


def is_nonce(text: str) -> bool:
    return _NONCE.match(text) is not None


def proposal_payload(*, proposal: str, title: str, description: str, action: Mapping[str, object],
                     duration_hours: int, threshold: int, nonce: str) -> dict[str, object]:
    """What a council member signs to propose (PROPOSAL_V2): where it lives (namespace/name), what it says, what
    it does, how long and how many farms, and a nonce. The ledger records the nonce when the proposal opens and
    never opens another with it, so one signature opens one proposal, once: deleting (withdrawing) it and
    creating it again does not reopen it."""
    return {"proposal": proposal, "title": title, "description": description, "action": dict(action),
            "durationHours": duration_hours, "threshold": threshold, "nonce": nonce}


def payload_digest(payload: Mapping[str, object]) -> str:
    """Hex SHA-256 of a council-signed proposal payload: what the ledger records beside the nonce."""
    return hashlib.sha256(identity.canonical(PROPOSAL_V2, dict(payload))).hexdigest()


def proposal_digest(*, proposal: str, proposal_id: int, action: Mapping[str, object], threshold: int,
                    end_ts: int, nonce: str = "") -> str:
    """What a vote binds to (issue 13, invariant 5): the proposal's identity (its namespace/name, its ledger id
    and the nonce of the council signature that opened it, so a re-created proposal of the same name is another
    one, and a vote signed for a ledger id not yet given out never counts on it) and what the council's proposal
    fixed — the action, the threshold and the deadline. Hex SHA-256 of the canonical document. A proposal opened
    before nonces (none recorded) digests as it did then."""
    doc: dict[str, object] = {"proposal": proposal, "proposalId": proposal_id, "action": dict(action),
                              "threshold": threshold, "endTs": end_ts}
    if nonce:
        doc["nonce"] = nonce
    return hashlib.sha256(identity.canonical("tfgrid-proposal-digest-v1", doc)).hexdigest()


def vote_payload(*, proposal: str, digest: str, farm: str, approve: bool, seq: int) -> dict[str, object]:
    """What the farm owner signs (identity.VOTE_V2): the proposal and its digest, the choice, and a sequence
    number. Only a farm's newest vote counts: one with a lower sequence than the counted one is refused."""
    return {"proposal": proposal, "digest": digest, "farm": farm, "approve": approve, "seq": seq}
