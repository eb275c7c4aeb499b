"""The Placer (domain/scheduling.py) chooses what select_node chooses over the pool as the earlier choices of a
batch left it, on arbitrary pools and sequences of requests — plain ones, constrained ones, public IPs, dedicated
ones — with the pool changed after each choice as a placement batch changes it (backend/sql/contracts.py)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from tfgrid_operator.domain import scheduling
from tfgrid_operator.domain.units import Resources

nodes = st.lists(st.builds(
    lambda i, farm, total, cru, mru, up, rented, contracts, ips: scheduling.Candidate(
        name=f"n{i:02d}", farm=farm, total=Resources(total, 4 * total, 100 * total, 0),
        used=Resources(min(cru, total), min(mru, 4 * total), 0, 0), up=up, farm_free_ips=ips, contracts=contracts,
        rented=rented, country="EG" if i % 2 else "BE"),
    st.integers(0, 99), st.sampled_from(["f1", "f2", "f3"]), st.integers(1, 16), st.integers(0, 16),
    st.integers(0, 64), st.sampled_from([True, True, True, False]), st.sampled_from([False, False, False, True]),
    st.integers(0, 3), st.integers(-1, 3)), max_size=30, unique_by=lambda c: c.name)

sizes = st.sampled_from([Resources(1, 2, 10, 0), Resources(2, 4, 50, 0), Resources(4, 8, 100, 0),
                         Resources(0, 1, 0, 0), Resources(3, 16, 0, 0)])
requests = st.one_of(
    st.builds(scheduling.Request, resources=sizes),  # plain: the heaps
    st.builds(scheduling.Request, resources=sizes, public_ips=st.integers(1, 2)),
    st.builds(scheduling.Request, resources=sizes, dedicated=st.just(True)),
    st.builds(scheduling.Request, resources=sizes, farm=st.sampled_from(["f1", "f2"])),
    st.builds(scheduling.Request, resources=sizes, country=st.just("eg")),
    st.builds(scheduling.Request, resources=sizes, exclude=st.frozensets(st.sampled_from(["n01", "n02", "n03"]))),
)


def take(pool: dict[str, scheduling.Candidate], request: scheduling.Request, name: str) -> list[scheduling.Candidate]:
    """The nodes a choice changes, as a placement batch changes them: the chosen one, and its farm's free IPs."""
    chosen = pool[name]
    reserved = chosen.total if request.dedicated else request.resources
    changed = {name: dataclasses.replace(chosen, used=chosen.used + reserved, contracts=chosen.contracts + 1,
                                         rented=chosen.rented or request.dedicated)}
    if request.public_ips:
        for x in pool.values():
            if x.farm == chosen.farm:
                x = changed.get(x.name, x)
                changed[x.name] = dataclasses.replace(x, farm_free_ips=x.farm_free_ips - request.public_ips)
    return list(changed.values())


@settings(max_examples=400, deadline=None)
@given(nodes, st.lists(requests, max_size=40))
def test_the_placer_chooses_what_select_node_chooses(pool_nodes, batch):
    placer = scheduling.Placer(pool_nodes)
    pool = {c.name: c for c in pool_nodes}
    for request in batch:
        expected = scheduling.select_node(request, pool.values())
        assert placer.select(request) == expected
        if isinstance(expected, scheduling.Placement):
            for changed in take(pool, request, expected.node):
                pool[changed.name] = changed
                placer.put(changed)
        assert placer.pool == pool


def test_many_sizes_fall_back_to_weighing_the_pool():
    pool = [scheduling.Candidate(name=f"n{i}", farm="f", total=Resources(64, 256, 1000, 0), used=Resources())
            for i in range(3)]
    placer = scheduling.Placer(pool)
    for cru in range(1, scheduling.Placer.MAX_HEAPS + 5):
        request = scheduling.Request(resources=Resources(cru, 1, 0, 0))
        assert placer.select(request) == scheduling.select_node(request, placer.pool.values())
    assert len(placer._heaps) == scheduling.Placer.MAX_HEAPS
