"""Node selection for a deployment: a decision, never an action.

The chain does no placement (§7, §6.3 grid_scheduler is client side), so the rules are ours:
a node qualifies when it is up, matches every constraint and has room for the request; among the
qualifying nodes the one left least loaded wins (spreads load), ties broken by name (deterministic).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterable, Sequence

from tfgrid_operator.domain.units import ZERO, Resources


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    farm: str
    total: Resources
    used: Resources
    country: str = ""
    city: str = ""
    certified: bool = False
    up: bool = True
    farm_free_ips: int = 0
    contracts: int = 0  # active contracts on the node
    rented: bool = False  # a dedicated deployment holds the whole node

    @property
    def free(self) -> Resources:
        return self.total - self.used


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    resources: Resources
    public_ips: int = 0
    node: str | None = None
    farm: str | None = None
    country: str | None = None
    city: str | None = None
    certified_only: bool = False
    dedicated: bool = False
    exclude: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    node: str


@dataclasses.dataclass(frozen=True, slots=True)
class Unschedulable:
    """No node fits. ``constraint`` names the filter that removed the last candidates."""

    constraint: str
    message: str


def _load_after(c: Candidate, r: Resources) -> float:
    """The highest utilisation ratio across resources after placing ``r`` on ``c``. A float: it only orders
    nodes (ties go to the name), and GiB and core counts divide exactly enough for that."""
    t, u = c.total, c.used
    return max((u.cru + r.cru) / t.cru if t.cru else 0.0, (u.mru + r.mru) / t.mru if t.mru else 0.0,
               (u.sru + r.sru) / t.sru if t.sru else 0.0, (u.hru + r.hru) / t.hru if t.hru else 0.0)


def _filters(request: Request) -> list[tuple[str, str, Callable[[Candidate], bool]]]:
    """The constraints in their fixed order: (name, message when it removes the last candidates, keep)."""
    return [
        ("Node", f"node {request.node!r} is not a Ready node", lambda c: request.node is None or c.name == request.node),
        ("Farm", f"no Ready node in farm {request.farm!r}", lambda c: request.farm is None or c.farm == request.farm),
        ("Country", f"no Ready node in country {request.country!r}",
         lambda c: request.country is None or c.country.lower() == request.country.lower()),
        ("City", f"no Ready node in city {request.city!r}",
         lambda c: request.city is None or c.city.lower() == request.city.lower()),
        ("Certified", "no certified node matches", lambda c: not request.certified_only or c.certified),
        ("Excluded", "every matching node is excluded", lambda c: c.name not in request.exclude),
        ("Up", "every matching node is down", lambda c: c.up),
        ("Rented", "every matching node is rented by a dedicated deployment", lambda c: not c.rented),
        ("Dedicated", "a dedicated deployment needs an empty node; every matching node has deployments",
         lambda c: not request.dedicated or (c.contracts == 0 and c.used == Resources())),
        ("PublicIPs", f"no matching farm has {request.public_ips} free public IPv4 address(es)",
         lambda c: c.farm_free_ips >= request.public_ips),
    ]


def select_node(request: Request, candidates: Iterable[Candidate]) -> Placement | Unschedulable:
    """Pick a node for ``request``: among the nodes that pass every constraint and have room, the one left least
    loaded (ties: the name). One pass over the candidates with the constraints inlined (placement runs this for
    every deployment over every node); only when none qualifies do the filters run one by one, in their fixed
    order, so the message names the constraint that removed the last candidates. A property test holds the two
    readings equal."""
    pool = list(candidates)
    w = request.resources
    node, farm, exclude, ips = request.node, request.farm, request.exclude, request.public_ips
    country = request.country.lower() if request.country is not None else None
    city = request.city.lower() if request.city is not None else None
    best: tuple[float, str] | None = None
    for c in pool:
        t, u = c.total, c.used
        if (not c.up or c.rented or c.farm_free_ips < ips or c.name in exclude
                or u.cru + w.cru > t.cru or u.mru + w.mru > t.mru or u.sru + w.sru > t.sru or u.hru + w.hru > t.hru
                or (node is not None and c.name != node) or (farm is not None and c.farm != farm)
                or (country is not None and c.country.lower() != country) or (city is not None and c.city.lower() != city)
                or (request.certified_only and not c.certified)
                or (request.dedicated and (c.contracts or u != ZERO))):
            continue
        key = (_load_after(c, w), c.name)
        if best is None or key < best:
            best = key
    if best is not None:
        return Placement(best[1])
    return _unschedulable(request, pool)


def _unschedulable(request: Request, pool: Sequence[Candidate]) -> Unschedulable:
    if not pool:
        return Unschedulable("NoNodes", "there are no Ready nodes on the grid")
    for constraint, message, keep in _filters(request):
        pool = [c for c in pool if keep(c)]
        if not pool:
            return Unschedulable(constraint, message)
    short = sorted({f for c in pool for f in request.resources.shortfall(c.free)})
    return Unschedulable(
        "Capacity", f"no matching node has room: short of {', '.join(short)} on all {len(pool)} candidate(s)")


def _plain(request: Request) -> bool:
    """A request whose only constraints are room and the node's own state (up, not rented, its farm not short of
    IPs): most of them."""
    return (request.node is None and request.farm is None and request.country is None and request.city is None
            and not request.certified_only and not request.dedicated and not request.exclude
            and request.public_ips == 0)


class Placer:
    """Successive choices over one pool, each what ``select_node`` would choose over the pool as the earlier ones
    left it (a placement batch: tests/domain/test_placer.py holds the two equal on arbitrary pools and sequences).

    select_node weighs every node for every request: a batch of 250 deployments over 1,000 nodes is 250,000
    weighings, and the count grows with the grid. For a plain request (``_plain``) the Placer keeps, per request
    size, a heap of (load after placing it, name) over the nodes that take it, and each change of a node (``put``)
    adds that node's new entry, the old one being skipped when it surfaces: a choice costs a few heap operations.
    Other requests (constraints, public IPs, dedicated) weigh the pool as select_node does."""

    MAX_HEAPS = 16  # distinct request sizes kept as heaps; beyond, plain requests weigh the pool too

    def __init__(self, candidates: Iterable[Candidate]) -> None:
        self.pool: dict[str, Candidate] = {c.name: c for c in candidates}
        self._version: dict[str, int] = dict.fromkeys(self.pool, 0)
        self._heaps: dict[Resources, list[tuple[float, str, int]]] = {}

    @staticmethod
    def _takes(c: Candidate, w: Resources) -> bool:
        t, u = c.total, c.used
        return (c.up and not c.rented and c.farm_free_ips >= 0 and u.cru + w.cru <= t.cru and u.mru + w.mru <= t.mru
                and u.sru + w.sru <= t.sru and u.hru + w.hru <= t.hru)

    def select(self, request: Request) -> Placement | Unschedulable:
        w = request.resources
        if not _plain(request):
            return select_node(request, self.pool.values())
        heap = self._heaps.get(w)
        if heap is None:
            if len(self._heaps) >= self.MAX_HEAPS:
                return select_node(request, self.pool.values())
            heap = [(_load_after(c, w), c.name, self._version[c.name]) for c in self.pool.values() if self._takes(c, w)]
            heapq.heapify(heap)
            self._heaps[w] = heap
        while heap and heap[0][2] != self._version[heap[0][1]]:
            heapq.heappop(heap)  # that node changed since: its current entry, if it still takes w, is in the heap too
        if heap:
            return Placement(heap[0][1])
        return select_node(request, self.pool.values())  # none takes it: select_node names the constraint

    def put(self, candidate: Candidate) -> None:
        """A node of the pool as it is now (after a choice took from it, or its farm's free IPs changed)."""
        name = candidate.name
        self.pool[name] = candidate
        self._version[name] = version = self._version.get(name, -1) + 1
        for w, heap in self._heaps.items():
            if self._takes(candidate, w):
                heapq.heappush(heap, (_load_after(candidate, w), name, version))
