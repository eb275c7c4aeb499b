"""The DAO: proposals, signed votes weighted by farm capacity, vetoes, closing and executing."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql import capacity
from tfgrid_operator.backend.sql.engine import (
    _res,
)
from tfgrid_operator.backend.sql.minting import MintingLedger
from tfgrid_operator.domain import identity, minting, voting


class DaoLedger(MintingLedger):
    # ------------------------------------------------------------------ DAO
    @staticmethod
    def _proposal_record(row: Any, votes: list[records.Vote], vetoes: int, created: bool = False) -> records.Proposal:
        return records.Proposal(row.id, row.key, json.loads(row.action), row.threshold, row.end_ts, row.state,
                                tuple(votes), vetoes, row.executed_at, created, row.nonce)

    @staticmethod
    def _votes_query() -> sa.Select[Any]:
        v, f = schema.votes, schema.farms
        return sa.select(v, f.c.name).join(f, f.c.id == v.c.farm_id).order_by(f.c.name)

    async def _proposal(self, conn: AsyncConnection, key: str, created: bool = False) -> records.Proposal:
        p, v, vt = schema.proposals, schema.votes, schema.vetoes
        row = (await conn.execute(sa.select(p).where(p.c.key == key))).first()
        if row is None:
            raise errors.NotFound(f"proposal {key!r} does not exist on the ledger")
        vs = (await conn.execute(self._votes_query().where(v.c.proposal_id == row.id))).all()
        nveto = (await conn.execute(sa.select(sa.func.count()).select_from(vt).where(vt.c.proposal_id == row.id))).scalar()
        return self._proposal_record(row, [records.Vote(x.name, x.approve, x.weight, x.seq) for x in vs], int(nveto or 0),
                                     created)

    async def ensure_proposal(self, *, key: str, action: dict[str, object], threshold: int, end_ts: int,
                              nonce: str = "", council_key: str = "", signed_digest: str = "") -> records.Proposal:
        """Open the proposal ``key`` (idempotent: an open one of that key is returned as it is). ``nonce`` is the
        council signature's (issue 13, invariant 5): the ledger opens one proposal per nonce, ever — a withdrawn
        proposal created again with the same signature is refused (Replayed), as is the signature under another
        name (it does not verify there anyway). The signer and the signed payload's digest are kept with it."""
        p = schema.proposals
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(p.c.id).where(p.c.key == key))).first()
            if row is None:
                if nonce:
                    used = (await conn.execute(sa.select(p.c.id, p.c.state).where(p.c.nonce == nonce))).first()
                    if used is not None:
                        raise errors.Replayed(
                            f"the council signature of proposal {key!r} (nonce {nonce}) already opened proposal "
                            f"{used.id} ({used.state}); a signature opens one proposal, once: have it signed again "
                            f"(tfgrid-operator council sign) to propose it anew")
                await conn.execute(p.insert().values(key=key, action=json.dumps(action, sort_keys=True),
                                                     threshold=threshold, end_ts=end_ts, state="Open", nonce=nonce,
                                                     council_key=council_key, signed_digest=signed_digest))
            return await self._proposal(conn, key, created=row is None)

    async def observe_proposal(self, *, key: str) -> records.Proposal | None:
        async with self._read() as conn:
            try:
                return await self._proposal(conn, key)
            except errors.NotFound:
                return None

    async def proposal_summaries(self) -> dict[str, records.Proposal]:
        """Every proposal with its votes, in three queries (the periodic loop closes and reports from this)."""
        p, vt = schema.proposals, schema.vetoes
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(p).order_by(p.c.id))).all()
            votes: dict[int, list[records.Vote]] = defaultdict(list)
            for x in (await conn.execute(self._votes_query())).all():
                votes[x.proposal_id].append(records.Vote(x.name, x.approve, x.weight, x.seq))
            nveto = dict((await conn.execute(sa.select(vt.c.proposal_id, sa.func.count()).group_by(vt.c.proposal_id))).all())
        return {r.key: self._proposal_record(r, votes[r.id], int(nveto.get(r.id, 0))) for r in rows}

    async def cast_vote(self, *, proposal: str, farm: str, approve: bool, seq: int, signature: str,
                        now: int) -> records.Proposal:
        """Count a farm's signed vote (§5) bound to this proposal (issue 13, invariant 5): the signature covers
        the proposal's digest (identity, action, threshold, deadline) and a sequence number; only the newest vote
        of a farm counts, so a superseded vote replayed is refused."""
        v, f = schema.votes, schema.farms
        async with self._tx() as conn:
            prop = await self._proposal(conn, proposal)
            if prop.state != "Open" or now > prop.end_ts:
                raise errors.Replayed(f"proposal {proposal!r} is closed ({prop.state}); the vote of {farm!r} does not count")
            farm_row = (await conn.execute(sa.select(f).where(f.c.name == farm, f.c.state == "Active"))).first()
            if farm_row is None:
                raise errors.NotFound(f"farm {farm!r} is not registered on the ledger")
            digest = voting.proposal_digest(proposal=proposal, proposal_id=prop.id, action=prop.action,
                                            threshold=prop.threshold, end_ts=prop.end_ts, nonce=prop.nonce)
            try:
                identity.verify(farm_row.owner_key, identity.VOTE_V2, voting.vote_payload(
                    proposal=proposal, digest=digest, farm=farm, approve=approve, seq=seq), signature)
            except identity.BadSignature as exc:
                raise errors.BadSignature(f"the vote of farm {farm!r} is not the farm owner's signature over this "
                                          f"proposal (id {prop.id}, its action, threshold and deadline)") from exc
            prev = (await conn.execute(sa.select(v).where(v.c.proposal_id == prop.id, v.c.farm_id == farm_row.id))).first()
            if prev is not None and seq <= prev.seq:
                if seq == prev.seq and approve == prev.approve:
                    raise errors.Replayed(f"farm {farm!r} already voted {'yes' if approve else 'no'} (DuplicateVote)")
                raise errors.Superseded(f"the vote of farm {farm!r} (sequence {seq}) is older than its counted vote "
                                 f"(sequence {prev.seq}): only the newest vote counts")
            if prev is not None and prev.approve == approve:  # the same choice signed again: nothing to recount
                await conn.execute(v.update().where(v.c.proposal_id == prop.id, v.c.farm_id == farm_row.id)
                                   .values(seq=seq))
                return await self._proposal(conn, proposal)
            weight, why = await self._farm_weight(conn, farm_row.id)
            if weight <= 0:
                raise errors.InvalidRequest(f"farm {farm!r} has no vote weight: {why} (FarmHasNoNodes)")
            if prev is None:
                await conn.execute(v.insert().values(proposal_id=prop.id, farm_id=farm_row.id, approve=approve,
                                                     weight=weight, seq=seq))
            else:
                await conn.execute(v.update().where(v.c.proposal_id == prop.id, v.c.farm_id == farm_row.id)
                                   .values(approve=approve, weight=weight, seq=seq))
            return await self._proposal(conn, proposal)

    async def _farm_weight(self, conn: AsyncConnection, farm_id: int) -> tuple[int, str]:
        """§5 weight captured at vote time (issue 13, invariant 3; docs/grid-rules.md §5, our choice): the capacity
        the farm's active nodes held over the last minting period the ledger minted, time-weighted, counted only
        for the nodes minted for it above the SLA, and never more than each attests now. Capacity attested a second
        before a vote weighs nothing until a whole period held with uptime has been minted. Returns the weight and,
        when it is 0, why."""
        n, m = schema.nodes, schema.mints
        minted = await self._meta(conn, "watermark:mint")
        last = int(minted) - 1 if minted is not None else None
        if last is None or (await conn.execute(sa.select(m.c.node_id).where(m.c.period == last).limit(1))).first() \
                is None:
            return 0, "no minting period has been minted yet; a farm weighs the capacity its nodes held over one"
        p = minting.period_by_index(last, epoch=self.config.minting_epoch, length=self.config.minting_period_s)
        node_ids = list((await conn.execute(sa.select(n.c.id).where(n.c.farm_id == farm_id, n.c.state == "Active")))
                        .scalars())
        met = set((await conn.execute(sa.select(m.c.node_id).where(
            m.c.period == p.index, m.c.node_id.in_(node_ids), m.c.reason.in_(sorted(voting.MET_SLA))))).scalars())
        histories, now = await capacity.histories(conn, met), await capacity.latest(conn, met)
        weight = sum(voting.node_vote_weight(histories.get(i, []), p, met_sla=i in met,
                                             now=_res(now[i]) if i in now else None) for i in node_ids)
        return weight, (f"none of its nodes held attested capacity above the SLA over minting period {p.index}, "
                        f"the last one minted")

    async def withdraw_proposal(self, *, proposal: str) -> records.Proposal | None:
        """Deleting an open Proposal withdraws it: it never closes or executes, and its name is free for a new
        proposal (a new ledger id, so no vote of this one counts there). A closed one is kept as it is."""
        p = schema.proposals
        async with self._tx() as conn:
            try:
                prop = await self._proposal(conn, proposal)
            except errors.NotFound:
                return None
            if prop.state == "Open":
                await conn.execute(p.update().where(p.c.id == prop.id).values(
                    state="Withdrawn", key=f"{proposal}#withdrawn-{prop.id}"))
                return await self._proposal(conn, f"{proposal}#withdrawn-{prop.id}")
            return prop

    async def veto(self, *, proposal: str, member_key: str) -> records.Proposal:
        vt, p = schema.vetoes, schema.proposals
        async with self._tx() as conn:
            prop = await self._proposal(conn, proposal)
            if prop.state != "Open":
                return prop
            exists = (await conn.execute(sa.select(vt).where(vt.c.proposal_id == prop.id, vt.c.member_key == member_key))).first()
            if exists is None:
                await conn.execute(vt.insert().values(proposal_id=prop.id, member_key=member_key))
            if prop.vetoes + (exists is None) >= voting.MIN_VETOES:
                await conn.execute(p.update().where(p.c.id == prop.id).values(state="Vetoed"))
            return await self._proposal(conn, proposal)

    async def close_proposal(self, *, proposal: str, now: int) -> records.Proposal:
        """At the deadline: Approved → the action is applied and the state is Executed, in one transaction."""
        p = schema.proposals
        async with self._tx() as conn:
            prop = await self._proposal(conn, proposal)
            if prop.state != "Open":
                return prop  # closed once; never re-executed
            result = voting.outcome(t=voting.tally({v.farm: v for v in prop.votes}), threshold=prop.threshold,
                                    vetoes=prop.vetoes,
                                    now=now, end=prop.end_ts)
            if result == voting.Outcome.OPEN:
                return prop
            if result == voting.Outcome.APPROVED:
                await self._apply_action(conn, prop.action)
                await conn.execute(p.update().where(p.c.id == prop.id).values(state="Executed", executed_at=now))
            else:
                await conn.execute(p.update().where(p.c.id == prop.id).values(state=str(result)))
            return await self._proposal(conn, proposal)

    async def _apply_action(self, conn: AsyncConnection, action: dict[str, Any]) -> None:
        kind = action.get("type")
        if kind == "SetPricingPolicy":
            current, _ = await self._policies(conn)
            merged = dataclasses.replace(current, **dict(action["pricing"]))
            await self._set_meta(conn, "pricing_policy", json.dumps(dataclasses.asdict(merged)))
        elif kind == "SetFarmingPolicy":
            _, farming = await self._policies(conn)
            pid = int(action["policyId"])
            base = farming.get(pid, minting.FarmingPolicy(id=pid, default=False))
            merged_f = dataclasses.replace(base, **dict(action["farming"]))
            await self._set_meta(conn, f"farming_policy:{pid}", json.dumps(dataclasses.asdict(merged_f)))
        else:
            raise errors.InvalidRequest(f"unknown proposal action {kind!r}")

