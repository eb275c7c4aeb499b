"""The sandbox's month as data: who is funded with how much, which node misses reports, which goes down,
when a payer is topped up and how the farms vote. Pure: the same arguments give the same month.

Time is counted in steps of one uptime report (40 minutes, §1.3; 36 a day) from the sandbox's start.
Events that name an object the manifests do not have are skipped, so any examples folder runs.
"""

from __future__ import annotations

import dataclasses
import pathlib

from tfgrid_operator.domain import money

FOLDER = pathlib.Path(__file__).parent / "scenario"  # the manifests of the month below
STEPS_PER_DAY = 36
# §5: a farm weighs the capacity its nodes held over the last minted period. The sandbox's first (3 days) is
# minted 1 h after its end, at the report of step 110: the farms vote from the step after
FIRST_VOTE = 3 * STEPS_PER_DAY + 3
DEFAULT_FUNDING = 5_000 * money.UNITS_PER_TFT


@dataclasses.dataclass(frozen=True)
class Scenario:
    funding: dict[str, int]  # account → initial funding (others: DEFAULT_FUNDING)
    topups: tuple[tuple[int, str, int], ...]  # (step, account, amount): a `ledger fund` on the way
    sla_misses_every: dict[str, int]  # node → it misses one report in this many (below the SLA, §3.4)
    outage: tuple[str, int, int] | None  # ("namespace/deployment", first step, steps): its node stops reporting
    nays: frozenset[str]  # farms voting no (the others vote yes), one farm every vote_every steps from votes_from
    vote_every: int = 3
    votes_from: int = FIRST_VOTE  # the first vote's step

    def funding_of(self, account: str) -> int:
        return self.funding.get(account, DEFAULT_FUNDING)

    def reports(self, node: str, step: int, down: str | None) -> bool:
        """Does ``node`` send its report at ``step``? ``down`` is the node of the outage, once known."""
        if node == down and self.outage is not None and self.outage[1] <= step < self.outage[1] + self.outage[2]:
            return False
        every = self.sla_misses_every.get(node)
        return not (every and step % every == 0)

    def votes_at(self, step: int, farms: list[str]) -> list[tuple[str, bool]]:
        """The farms that vote at ``step`` (one at a time, in manifest order) and how."""
        if step < self.votes_from or (step - self.votes_from) % self.vote_every:
            return []
        i = (step - self.votes_from) // self.vote_every
        return [(farms[i], farms[i] not in self.nays)] if i < len(farms) else []


MONTH = Scenario(
    funding={"bob": 30 * money.UNITS_PER_TFT},  # about a day of bob's api: then its grace period begins (§2.4)
    topups=((2 * STEPS_PER_DAY, "bob", 1_000 * money.UNITS_PER_TFT),),  # day 2: bob pays what he owes, recovers
    sla_misses_every={"sla-1": 8},  # 87.5 % uptime at most: below the 95 % DIY SLA, it earns nothing (§3.4)
    outage=("bob/api", STEPS_PER_DAY, STEPS_PER_DAY // 2),  # day 1: api's node is down 12 h; api moves
    nays=frozenset({"tinyfarm"}),
)
PLAIN = Scenario(funding={}, topups=(), sla_misses_every={}, outage=None, nays=frozenset())  # any other folder


def for_folder(folder: pathlib.Path) -> Scenario:
    return MONTH if folder.resolve() == FOLDER.resolve() else PLAIN
