"""Attested capacity (issue 13, invariant 3): what a node's key signed, and what the council certified.

A Node's spec says what the farmer expects. What earns money is what the node's agent measured and signed
with the node key (as Zero-OS reports a node's resources on TFChain, §1.3), kept as a history so minting
weighs each capacity by the seconds it was held (``minting.held_over``), and so does DAO weight over the last
minted period (``voting.held_weight``, §5).
Certification is the council's (§1.2: set_node_certification by the council or an allowed certifier): a
council member's signature over the node's ledger id; a certified node whose attested resources change by
more than 1 % drops back to DIY (§1.3, ``Resources::has_changed(…, 1)``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql.engine import RESOURCE_FIELDS, LedgerBase, _res
from tfgrid_operator.domain import identity, minting, units
from tfgrid_operator.domain import uptime as uptime_mod
from tfgrid_operator.domain.attestation import capacity_payload, certification_payload
from tfgrid_operator.domain.units import Resources

CHANGE_PERCENT = 1  # §1.3: a certified node whose resources change by more than 1 % drops back to DIY


def has_changed(old: Resources, new: Resources, percent: int = CHANGE_PERCENT) -> bool:
    """§1.3: some field moved by more than ``percent`` % of its old value (any change of a zero field)."""
    return any(abs(getattr(new, f) - getattr(old, f)) * 100 > percent * getattr(old, f) for f in RESOURCE_FIELDS)


def _held(row: Any) -> minting.Held:
    return minting.Held(since=row.from_ts, resources=_res(row), certified=bool(row.certified))


async def histories(conn: AsyncConnection, node_ids: Iterable[int]) -> dict[int, list[minting.Held]]:
    """Each node's attested capacity history, oldest first (no entry: never attested)."""
    k = schema.capacity
    ids = sorted(set(node_ids))
    out: dict[int, list[minting.Held]] = defaultdict(list)
    if ids:
        for r in (await conn.execute(sa.select(k).where(k.c.node_id.in_(ids)).order_by(k.c.node_id, k.c.id))).all():
            out[r.node_id].append(_held(r))
    return out


async def latest(conn: AsyncConnection, node_ids: Iterable[int] | None = None) -> dict[int, Any]:
    """Each node's latest capacity row (what it holds now)."""
    k = schema.capacity
    newest = sa.select(k.c.node_id, sa.func.max(k.c.id).label("id")).group_by(k.c.node_id)
    if node_ids is not None:
        newest = newest.where(k.c.node_id.in_(sorted(set(node_ids))))
    sub = newest.subquery()
    rows = (await conn.execute(sa.select(k).join(sub, sub.c.id == k.c.id))).all()
    return {r.node_id: r for r in rows}


def placeable(n: sa.Table, is_sqlite: bool) -> tuple[Any, dict[str, Any]]:
    """Placement's capacity per resource, as SQL: the node's spec capped by its latest attested capacity, so a
    deployment is never promised more than the node's key attested (a node not attested yet: its spec). Returns
    the latest-attestation subquery (outer-join it on ``node_id``) and the column expressions."""
    k = schema.capacity
    newest = sa.select(k.c.node_id, sa.func.max(k.c.id).label("id")).group_by(k.c.node_id).subquery()
    att = sa.select(k).join(newest, newest.c.id == k.c.id).subquery()
    least = sa.func.min if is_sqlite else sa.func.least  # SQLite's two-argument min() is scalar
    return att, {f: least(getattr(n.c, f), sa.func.coalesce(getattr(att.c, f), getattr(n.c, f)))
                 for f in RESOURCE_FIELDS}


def capped(spec: Resources, attested: Any | None) -> Resources:
    """The same cap in Python, for one node row and its latest capacity row."""
    if attested is None:
        return spec
    return Resources(*(min(getattr(spec, f), getattr(attested, f)) for f in RESOURCE_FIELDS))


class CapacityLedger(LedgerBase):
    async def _certified_capacity(self, conn: AsyncConnection, node_id: int) -> Resources:
        """The capacity the council last certified (§1.3 compares a change with it, not with the previous report:
        1 % steps must not add up to a bigger certified node)."""
        k = schema.capacity
        row = (await conn.execute(sa.select(k).where(k.c.node_id == node_id, k.c.source == "council")
                                  .order_by(k.c.id.desc()).limit(1))).first()
        return _res(row) if row is not None else Resources()

    async def _active_node(self, conn: AsyncConnection, node: str) -> Any:
        n = schema.nodes
        row = (await conn.execute(sa.select(n).where(n.c.name == node))).first()
        if row is None or row.state != "Active":
            raise errors.NotFound(f"node {node!r} is not registered on the ledger")
        return row

    async def _append(self, conn: AsyncConnection, node_id: int, *, ts: int, resources: Resources, certified: bool,
                      source: str, signed_ts: int, signer: str) -> None:
        await conn.execute(schema.capacity.insert().values(
            node_id=node_id, from_ts=ts, certified=certified, source=source, signed_ts=signed_ts, signer=signer,
            **resources.as_dict()))
        await conn.execute(schema.nodes.update().where(schema.nodes.c.id == node_id).values(certified=certified))

    async def attest_capacity(self, *, node: str, ts: int, resources: Resources, signature: str,
                              now: int) -> records.Attestation:
        """Record what the node's agent measured, signed by the node key. Idempotent for the same capacity;
        a changed capacity holds from ``ts``. Refused: a bad signature, a stale or future time (±60 s, §1.3),
        a statement older than the last one kept, a capacity under the node minimums (§1.3)."""
        problems = (units.node_minimum_violations(resources) + units.node_maximum_violations(resources)
                    if not resources.is_negative() else ["negative resources"])
        async with self._tx() as conn:
            row = await self._active_node(conn, node)
            try:
                identity.verify(row.public_key, identity.CAPACITY,
                                capacity_payload(node=node, ts=ts, resources=resources), signature)
            except identity.BadSignature as exc:
                raise errors.BadSignature(f"capacity report for node {node!r} is not signed by its key") from exc
            current = (await latest(conn, [row.id])).get(row.id)
            if current is not None and _res(current) == resources and ts >= current.signed_ts:
                return (await self._attestations(conn, [row.id]))[node]  # restated (or re-listed): nothing changes
            if abs(ts - now) > uptime_mod.TIMESTAMP_DRIFT_S:
                raise errors.Replayed(f"capacity report for node {node!r} is {ts - now:+d} s off the ledger's clock")
            if problems:
                raise errors.InvalidRequest(f"node {node!r} attested a capacity outside the bounds: "
                                            + "; ".join(problems))
            if current is not None and ts < current.signed_ts:
                raise errors.Replayed(f"capacity report for node {node!r} at {ts} is older than the one kept")
            if current is None or _res(current) != resources:
                certified = bool(current is not None and current.certified
                                 and not has_changed(await self._certified_capacity(conn, row.id), resources))
                await self._append(conn, row.id, ts=ts, resources=resources, certified=certified,
                                   source="agent" if certified or current is None or not current.certified
                                   else "decertified", signed_ts=ts, signer=row.public_key)
            return (await self._attestations(conn, [row.id]))[node]

    async def certify_node(self, *, node: str, certified: bool, ts: int, member_key: str, signature: str,
                           council: frozenset[str], now: int, resources: Resources | None = None) -> records.Attestation:
        """A council member's signed (de)certification of the node (§1.2 set_node_certification). It holds from
        ``now`` on the capacity last attested, which must be the ``resources`` a certification signed (what the
        council saw); refused without an attested capacity, from a key outside the council, with a bad signature,
        on another capacity, or when not newer than the last certification applied (replay)."""
        k = schema.capacity
        async with self._tx() as conn:
            row = await self._active_node(conn, node)
            if member_key not in council:
                raise errors.BadSignature(f"certification of node {node!r}: {member_key[:12]}… is not a council key")
            if certified and resources is None:
                raise errors.BadSignature(f"certification of node {node!r} names no capacity: a council member "
                                          f"certifies the capacity it saw (tfgrid-operator council certify)")
            try:
                identity.verify(member_key, identity.CERTIFICATION, certification_payload(
                    node=node, node_id=row.id, certified=certified, ts=ts, resources=resources if certified else None),
                    signature)
            except identity.BadSignature as exc:
                raise errors.BadSignature(f"certification of node {node!r} is not signed by {member_key[:12]}…") from exc
            last = (await conn.execute(sa.select(sa.func.max(k.c.signed_ts)).where(
                k.c.node_id == row.id, k.c.source == "council"))).scalar()
            if last is not None and ts <= last:
                if ts == last:  # the same certification seen again (a restart re-lists the Node): no change
                    return dataclasses.replace((await self._attestations(conn, [row.id]))[node], changed=False)
                raise errors.Replayed(f"certification of node {node!r} at {ts} is older than the one applied")
            current = (await latest(conn, [row.id])).get(row.id)
            if current is None:
                raise errors.NotFound(f"node {node!r} has no attested capacity to certify yet")
            if certified and _res(current) != resources:  # held back while the agent attested another machine
                raise errors.BadSignature(
                    f"certification of node {node!r} certifies the capacity {resources and resources.as_dict()} but "
                    f"the node "
                    f"attests {_res(current).as_dict()} now: the council certifies the capacity it saw")
            await self._append(conn, row.id, ts=max(now, current.from_ts), resources=_res(current),
                               certified=certified, source="council", signed_ts=ts, signer=member_key)
            return dataclasses.replace((await self._attestations(conn, [row.id]))[node], changed=True)

    async def _attestations(self, conn: AsyncConnection, node_ids: Iterable[int] | None) -> dict[str, records.Attestation]:
        n = schema.nodes
        rows = await latest(conn, node_ids)
        names = dict((await conn.execute(sa.select(n.c.id, n.c.name).where(n.c.id.in_(sorted(rows))))).all()) if rows else {}
        return {names[i]: records.Attestation(node=names[i], resources=_res(r), certified=bool(r.certified),
                                              since=r.from_ts, source=r.source)
                for i, r in rows.items() if i in names}

    async def attestations(self) -> dict[str, records.Attestation]:
        """Every node's latest attested capacity and certification, by node name."""
        async with self._read() as conn:
            return await self._attestations(conn, None)
