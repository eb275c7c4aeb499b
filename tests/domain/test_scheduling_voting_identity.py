import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgrid_operator.domain import identity, scheduling, voting
from tfgrid_operator.domain.units import Resources

BIG = Resources(16, 64, 2000, 4000)


def cand(name, farm="f1", used=Resources(), **kw):
    return scheduling.Candidate(name=name, farm=farm, total=BIG, used=used, farm_free_ips=2, **kw)


def req(**kw):
    return scheduling.Request(resources=Resources(2, 4, 50), **kw)


def test_spreads_load_to_the_emptier_node():
    nodes = [cand("a", used=Resources(8, 32, 1000)), cand("b")]
    assert scheduling.select_node(req(), nodes) == scheduling.Placement("b")


@pytest.mark.parametrize(("request_", "constraint"), [
    (req(node="zz"), "Node"),
    (req(farm="other"), "Farm"),
    (req(country="BE"), "Country"),
    (req(certified_only=True), "Certified"),
    (req(public_ips=3), "PublicIPs"),
    (scheduling.Request(resources=Resources(17, 1, 1)), "Capacity"),
])
def test_failing_constraint_is_named(request_, constraint):
    out = scheduling.select_node(request_, [cand("a", country="EG"), cand("b", country="EG")])
    assert isinstance(out, scheduling.Unschedulable) and out.constraint == constraint


def test_dedicated_needs_an_empty_node():
    out = scheduling.select_node(req(dedicated=True), [cand("a", used=Resources(1, 1, 1), contracts=1), cand("b")])
    assert out == scheduling.Placement("b")


def test_no_nodes():
    assert scheduling.select_node(req(), []).constraint == "NoNodes"


@given(st.lists(st.tuples(st.integers(0, 16), st.integers(0, 64)), min_size=1, max_size=8))
def test_placement_is_deterministic_and_fits(used):
    nodes = [cand(f"n{i}", used=Resources(c, m, 0, 0)) for i, (c, m) in enumerate(used)]
    a = scheduling.select_node(req(), nodes)
    b = scheduling.select_node(req(), list(reversed(nodes)))
    assert a == b
    if isinstance(a, scheduling.Placement):
        chosen = next(n for n in nodes if n.name == a.node)
        assert Resources(2, 4, 50).fits_in(chosen.free)


candidates = st.lists(st.builds(
    lambda i, farm, cru, mru, up, rented, contracts, ips, country, certified: scheduling.Candidate(
        name=f"n{i}", farm=farm, total=Resources(8, 32, 500, 0), used=Resources(cru, mru, 0, 0), country=country,
        certified=certified, up=up, farm_free_ips=ips, contracts=contracts, rented=rented),
    st.integers(0, 30), st.sampled_from(["f1", "f2"]), st.integers(0, 8), st.integers(0, 32), st.booleans(),
    st.booleans(), st.integers(0, 2), st.integers(0, 2), st.sampled_from(["BE", "EG"]), st.booleans()),
    max_size=12, unique_by=lambda c: c.name)
requests = st.builds(
    lambda cru, mru, ips, farm, country, certified, dedicated, exclude: scheduling.Request(
        resources=Resources(cru, mru, 0, 0), public_ips=ips, farm=farm, country=country, certified_only=certified,
        dedicated=dedicated, exclude=frozenset(exclude)),
    st.integers(0, 9), st.integers(0, 33), st.integers(0, 2), st.sampled_from([None, "f1"]),
    st.sampled_from([None, "be", "EG"]), st.booleans(), st.booleans(), st.sets(st.sampled_from(["n0", "n1", "n2"])))


@settings(max_examples=400)
@given(requests, candidates)
def test_one_pass_selection_equals_the_filter_chain(request, nodes):
    """The one-pass choice equals the plain reading of the rules: apply every filter in order, keep the nodes
    with room, take the least loaded after placing (ties: the name); the message names the emptying filter."""
    pool = sorted(nodes, key=lambda c: c.name)
    expected = None
    for constraint, _, keep in scheduling._filters(request):
        pool = [c for c in pool if keep(c)]
        if not pool and expected is None:
            expected = constraint
    fitting = [c for c in pool if request.resources.fits_in(c.free)]
    out = scheduling.select_node(request, nodes)
    if not nodes:
        assert out.constraint == "NoNodes"
    elif expected is not None:
        assert isinstance(out, scheduling.Unschedulable) and out.constraint == expected
    elif not fitting:
        assert isinstance(out, scheduling.Unschedulable) and out.constraint == "Capacity"
    else:
        best = min(fitting, key=lambda c: (scheduling._load_after(c, request.resources), c.name))
        assert out == scheduling.Placement(best.name)


def test_vote_outcomes():
    votes = {f"f{i}": voting.Vote(f"f{i}", i < 3, 10) for i in range(5)}
    t = voting.tally(votes)
    assert (t.ayes_weight, t.nays_weight, t.voters) == (30, 20, 5)
    assert voting.outcome(t=t, threshold=5, vetoes=0, now=9, end=10) == voting.Outcome.OPEN
    assert voting.outcome(t=t, threshold=5, vetoes=0, now=10, end=10) == voting.Outcome.APPROVED
    assert voting.outcome(t=t, threshold=6, vetoes=0, now=10, end=10) == voting.Outcome.REJECTED
    assert voting.outcome(t=t, threshold=5, vetoes=3, now=0, end=10) == voting.Outcome.VETOED


def test_equal_weight_is_rejected_strictly():
    votes = {"a": voting.Vote("a", True, 10), "b": voting.Vote("b", False, 10)}
    assert voting.outcome(t=voting.tally(votes), threshold=2, vetoes=0, now=1, end=1) == voting.Outcome.REJECTED


def test_window_bounds():
    assert voting.validate_window(duration_s=voting.DEFAULT_DURATION_S, threshold=5) == []
    assert len(voting.validate_window(duration_s=60, threshold=1)) == 2


def test_signatures_roundtrip_and_purpose_separation():
    key = identity.KeyPair.generate()
    sig = key.sign(identity.VOTE, {"proposal": "p", "approve": True})
    identity.verify(key.public_key, identity.VOTE, {"proposal": "p", "approve": True}, sig)
    with pytest.raises(identity.BadSignature):
        identity.verify(key.public_key, identity.VOTE, {"proposal": "p", "approve": False}, sig)
    with pytest.raises(identity.BadSignature):
        identity.verify(key.public_key, identity.UPTIME, {"proposal": "p", "approve": True}, sig)
    with pytest.raises(identity.BadSignature):
        identity.verify("not-a-key", identity.VOTE, {}, sig)
    assert key.to_text() not in repr(key)
    assert identity.KeyPair.from_text(key.to_text()).public_key == key.public_key


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=4))
def test_any_payload_verifies_only_with_its_key(payload):
    a, b = identity.KeyPair.generate(), identity.KeyPair.generate()
    sig = a.sign(identity.UPTIME, payload)
    identity.verify(a.public_key, identity.UPTIME, payload, sig)
    with pytest.raises(identity.BadSignature):
        identity.verify(b.public_key, identity.UPTIME, payload, sig)
