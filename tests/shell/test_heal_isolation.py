"""Self-healing moves each contract on its own (invariant 6): a Deployment its tenant deleted while the loop was moving
the contracts off a dead node (its contract closed in between, NotFound) never stops the other moves, nor the rest
of the tick. Before the fix the NotFound left heal, and the tick (status refresh, requeues) ended there."""

from __future__ import annotations

import dataclasses

from tfgrid_operator import clock, metrics, runtime
from tfgrid_operator.backend import errors, records
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.loop import jobs, mirror
from tfgrid_operator.settings import Settings


def contract(key: str, node: str = "dead", cid: int = 1) -> records.Contract:
    return records.Contract(id=cid, key=key, payer="p", node=node, farm="f", resources=Resources(cru=1, mru=2),
                            public_ips=0, dedicated=False, state="Created", created_at=0, grace_since=None,
                            deleted_at=None, deleted_reason=None, overdraft=0, billed_total=0, last_billed_at=None,
                            last_discount=None, owner_uid=f"uid-{key}")


class Ledger:
    """team-a/web was deleted (its contract closed) after the loop listed the contracts; team-b/api is still there."""

    config = dataclasses.make_dataclass("Config", [("node_down_after_s", int)])(60)

    def __init__(self) -> None:
        self.moved: list[str] = []

    async def contract_summaries(self) -> dict[str, records.Contract]:
        return {k: contract(k, cid=i) for i, k in enumerate(("team-a/web", "team-b/api"), 1)}

    async def move_contract(self, *, key: str, request, now: int) -> records.Contract:
        if key == "team-a/web":
            raise errors.NotFound(f"deployment {key!r} has no open contract to move")
        self.moved.append(key)
        return dataclasses.replace(contract(key, node="alive", cid=9), created=True)


class Kube:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def post_event(self, ref, *, type: str, reason: str, message: str, now: str) -> None:
        self.events.append(reason)


async def test_a_contract_closed_during_the_move_of_the_others_stops_nothing():
    ledger, kube = Ledger(), Kube()
    rt = runtime.Runtime(settings=Settings(), clock=clock.ManualClock(1000), ledger=ledger,  # type: ignore[arg-type]
                         kube=kube, metrics=metrics.Metrics())  # type: ignore[arg-type]
    for key in ("team-a/web", "team-b/api"):
        ns, _, name = key.partition("/")
        rt.objects[("deployments", ns, name)] = mirror.slim({
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{key}"},
            "spec": {"resources": {"cru": 1, "mru": 2}, "payer": {"secretRef": {"name": "twin"}}}})
    down = records.NodeSummary(name="dead", farm="f", resources=Resources(cru=8, mru=32), used=Resources(),
                               contracts=2, uptime_s=0, uptime_permille=0, last_report_ts=0, violation=None,
                               minted_total=0, last_mint=None, last_mint_period=None, last_mint_reason=None)
    assert await jobs.heal(rt, 1000, {"dead": down}) == 1
    assert ledger.moved == ["team-b/api"] and kube.events == ["Moved"]
