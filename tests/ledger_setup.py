"""Ledger setup the backend and CLI tests share: a farm and node made by an owning object, what a node's agent
signs (capacity, uptime), what a council member signs (certification), and a twin key shown as payer proof."""

from __future__ import annotations

from tfgrid_operator import backend
from tfgrid_operator.backend import records
from tfgrid_operator.domain import identity, minting
from tfgrid_operator.domain.attestation import capacity_payload, certification_payload
from tfgrid_operator.domain.units import Resources

OWN = records.Owner("ns", "uid-1")  # the objects (farms, nodes, deployments) these tests act as


async def short_grace_ledger(url: str) -> backend.GridBackend:
    """Grace 3 h; nodes count as up whatever their reports, so a move always finds the other node."""
    return await backend.open_backend(url, backend.LedgerConfig(minting_epoch=0, grace_period_s=3 * 3600,
                                                                node_down_after_s=10**9))


async def two_nodes_and_twins(ledger, *, owner: records.Owner, farmer: identity.KeyPair, resources: Resources,
                              twins: dict[str, identity.KeyPair], public_ips: int = 0, funded: int = 0) -> None:
    """farm1 with nodes n0 and n1 (keys nobody holds: no attestation), and the twin accounts ``twins`` (name → key),
    each funded ``funded`` units."""
    await ledger.ensure_farm(name="farm1", owner=owner, owner_key=farmer.public_key, payout_account="farmer",
                             certified=False, dedicated=False, public_ips=public_ips)
    for n in ("n0", "n1"):
        await ledger.ensure_node(name=n, owner=owner, farm="farm1", resources=resources, country="BE", city="Ghent",
                                 certified=False, public_key=identity.KeyPair.generate().public_key, now=0)
    for name, key in twins.items():
        await ledger.ensure_account(name=name, public_key=key.public_key)
        if funded:
            await ledger.fund(name=name, amount=funded, now=0)


async def farm_and_node(ledger, *, owner_key: identity.KeyPair, node_key: identity.KeyPair, resources: Resources,
                        farm: str = "farm1", node: str = "n0", owner: records.Owner = OWN, payout_account: str = "farmer",
                        public_ips: int = 0, certified: bool = False, country: str = "", city: str = "",
                        now: int = 0) -> records.Node:
    """The farm (once) and the node on it, both made by ``owner``. ``certified`` is only the spec's expectation:
    the council certifies (``certify``)."""
    if await ledger.observe_farm(name=farm) is None:
        await ledger.ensure_farm(owner=owner, name=farm, owner_key=owner_key.public_key, payout_account=payout_account,
                                 certified=False, dedicated=False, public_ips=public_ips)
    return await ledger.ensure_node(owner=owner, name=node, farm=farm, resources=resources, country=country, city=city,
                                    certified=certified, public_key=node_key.public_key, now=now)


async def attest(ledger, *, node: str, resources: Resources, ts: int, key: identity.KeyPair,
                 now: int | None = None) -> records.Attestation:
    """The node's agent signs the capacity it measured (issue 13, invariant 3)."""
    sig = key.sign(identity.CAPACITY, capacity_payload(node=node, ts=ts, resources=resources))
    return await ledger.attest_capacity(node=node, ts=ts, resources=resources, signature=sig,
                                        now=ts if now is None else now)


def certification(*, node: str, node_id: int, certified: bool, ts: int, key: identity.KeyPair,
                  resources: Resources | None = None) -> str:
    """A council member's signature over a node's (de)certification: its ledger id and, to certify, the capacity
    certified (§1.2)."""
    return key.sign(identity.CERTIFICATION, certification_payload(
        node=node, node_id=node_id, certified=certified, ts=ts, resources=resources if certified else None))


async def certify(ledger, *, node: str, certified: bool, ts: int, key: identity.KeyPair,
                  council: frozenset[str] | None = None, now: int | None = None) -> records.Attestation:
    """A council member signs the node's (de)certification over its ledger id and the capacity it attests now
    (§1.2); ``council`` defaults to the signer alone."""
    node_id = (await ledger.observe_node(name=node)).id
    attested = (await ledger.attestations()).get(node)
    resources = attested.resources if attested is not None else Resources()
    sig = certification(node=node, node_id=node_id, certified=certified, ts=ts, key=key, resources=resources)
    return await ledger.certify_node(node=node, certified=certified, ts=ts, member_key=key.public_key, signature=sig,
                                     council=frozenset({key.public_key}) if council is None else council,
                                     now=ts if now is None else now, resources=resources)


async def report_uptime(ledger, *, node: str, ts: int, uptime: int, key: identity.KeyPair,
                        now: int | None = None) -> int:
    """The node's agent signs one uptime report; returns the uptime the ledger credits."""
    sig = key.sign(identity.UPTIME, {"node": node, "ts": ts, "uptime": uptime})
    return await ledger.record_uptime(node=node, ts=ts, uptime=uptime, signature=sig, now=ts if now is None else now)


def paid_by(key: identity.KeyPair, owner: records.Owner = OWN) -> dict:
    """open_contract's owner and payer proof: the twin key shown (as a Secret of the owner's namespace holds it)."""
    return dict(owner_uid=owner.uid,
                proof=records.PayerProof(kind="key", namespace=owner.namespace, public_key=key.public_key))


async def held_a_period(ledger, nodes: dict[str, identity.KeyPair], period: int = 0, *,
                        skip: frozenset[str] = frozenset()) -> minting.Period:
    """The nodes' agents report every 40 minutes through minting period ``period`` (the nodes in ``skip`` miss
    one report in two: below the SLA), and the period is minted: from then on, a farm weighs in votes the capacity
    its nodes attested and held over it (§5). Returns the period."""
    cfg = ledger.config
    p = minting.period_by_index(period, epoch=cfg.minting_epoch, length=cfg.minting_period_s)
    for i, ts in enumerate(range(p.start + 2400, p.end + 1, 2400)):
        for name, key in nodes.items():
            if name not in skip or i % 2:
                await report_uptime(ledger, node=name, ts=ts, uptime=ts - p.start + 100, key=key)
    await ledger.mint_period(period=p.index, now=p.end)
    return p
