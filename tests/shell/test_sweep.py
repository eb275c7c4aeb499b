"""The orphan sweep judges only what it could list (fail closed), and by uid, never by name alone."""

from __future__ import annotations

import dataclasses

from tfgrid_operator import clock, metrics, runtime
from tfgrid_operator.backend import records
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import ApiError, KubeClient
from tfgrid_operator.loop import jobs
from tfgrid_operator.settings import Settings


class Listing:
    """A cluster whose namespace team-a cannot be listed (no RBAC there, or the API server failed)."""

    path = staticmethod(KubeClient.path)
    list_pages = KubeClient.list_pages  # the client's own paging, over this fake's request

    def __init__(self, items: dict[str, list[tuple[str, str]]]) -> None:
        self.items, self.calls = items, []

    async def request(self, method: str, path: str, *_: object) -> dict:
        self.calls.append((method, path))
        ns = path.split("/namespaces/")[1].split("/")[0]
        if ns not in self.items:
            raise ApiError(403, "forbidden")
        return {"items": [{"metadata": {"name": n, "uid": u}} for n, u in self.items[ns]]}


def contract(key: str, uid: str) -> records.Contract:
    return records.Contract(id=1, key=key, payer="p", node="n", farm="f", resources=Resources(), public_ips=0,
                            dedicated=False, state="Created", created_at=0, grace_since=None, deleted_at=None,
                            deleted_reason=None, overdraft=0, billed_total=0, last_billed_at=None, last_discount=None,
                            owner_uid=uid)


async def test_orphans_are_judged_by_uid_and_only_in_namespaces_that_could_be_listed():
    kube = Listing({"team-b": [("kept", "u-kept"), ("renamed", "u-new")]})
    rt = runtime.Runtime(settings=Settings(), clock=clock.ManualClock(0), ledger=None,  # type: ignore[arg-type]
                         kube=kube, metrics=metrics.Metrics())  # type: ignore[arg-type]
    live = {k: contract(k, u) for k, u in (
        ("team-a/anything", "u1"),  # team-a cannot be listed: never closed on a guess
        ("team-b/kept", "u-kept"),  # its object is there
        ("team-b/renamed", "u-old"),  # an object of that name is there, but another one (uid)
        ("team-b/gone", "u-gone"),  # no object at all
        ("team-b/legacy", ""),  # made before ownership and its object is gone
    )}
    live["team-b/legacy"] = dataclasses.replace(live["team-b/legacy"], id=2)
    found = await jobs._orphans(rt, live)
    assert sorted(found) == ["team-b/gone", "team-b/legacy", "team-b/renamed"]
    assert [p for _, p in kube.calls] == ["/apis/grid.threefold.io/v1alpha1/namespaces/team-a/deployments?limit=500",
                                          "/apis/grid.threefold.io/v1alpha1/namespaces/team-b/deployments?limit=500"]


class Ledger:
    """A ledger on which one contract cannot be closed (say its final bill is refused)."""

    def __init__(self, live: dict[str, records.Contract], broken: str) -> None:
        self.live, self.broken, self.closed = live, broken, []
        self.at: dict[str, int] = {}

    async def live_contracts(self, *, keys=None, proof_until_before=None) -> dict[str, records.Contract]:
        return {k: c for k, c in self.live.items() if (keys is None or k in keys) and (
            proof_until_before is None or (c.proof_until is not None and c.proof_until <= proof_until_before))}

    async def close_contract(self, *, key: str, owner_uid: str, now: int, reason: str) -> records.Contract:
        from tfgrid_operator.backend import errors

        if key == self.broken:
            raise errors.InvalidRequest("the ledger refused an amount outside its bound")
        self.closed.append((key, reason))
        self.at[key] = now
        return dataclasses.replace(self.live[key], state="Deleted")


async def test_a_contract_that_cannot_be_closed_never_stops_the_others():
    live = {k: dataclasses.replace(contract(k, "u"), proof="grant", proof_until=10) for k in ("ns/a", "ns/b", "ns/c")}
    ledger = Ledger(live, broken="ns/b")
    rt = runtime.Runtime(settings=Settings(), clock=clock.ManualClock(100), ledger=ledger,  # type: ignore[arg-type]
                         kube=Listing({"ns": [(k.split("/")[1], "u") for k in live]}),  # type: ignore[arg-type]
                         metrics=metrics.Metrics())
    assert await jobs.sweep(rt, 100) == 3  # three were due (their grants ended at 10)
    assert ledger.closed == [("ns/a", "GrantExpired"), ("ns/c", "GrantExpired")]
    assert ledger.at == {"ns/a": 100, "ns/c": 100}  # the ledger's final bill stops at each one's grant end
