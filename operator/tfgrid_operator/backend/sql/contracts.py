"""Contracts: placement (batched), observation, resize, close and self-healing moves."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql import capacity
from tfgrid_operator.backend.sql.billing import BillingLedger
from tfgrid_operator.backend.sql.engine import (
    LIVE,
    POOL_COLUMNS,
    POOL_TOKEN,
    RESOURCE_FIELDS,
    Close,
    Open,
    PlacementPool,
    _res,
)
from tfgrid_operator.domain import money, names, scheduling
from tfgrid_operator.domain.billing import GRANT_EXPIRED, GRANT_REVOKED
from tfgrid_operator.domain.units import Resources

# contract records made between two turns of the event loop by the reads of every contract (the status pass) and of
# every live one (the sweep): after a billing period every row changed, and making 10,000 records held the loop
# 0.26 s in one piece (issue 17, the stall log; at a restart nothing is kept yet, 0.5 s)
RECORDS_PER_TURN = 1000
POOL_MAX_AGE_S = 30.0  # a kept placement pool is read again at least this often, whatever its token says


class ContractsLedger(BillingLedger):
    # ------------------------------------------------------------------ contracts
    def _contract_query(self) -> sa.Select[Any]:
        """Contracts with their payer's name and key, node and farm names (the billing totals are columns of the
        contract)."""
        c, a, n, f = schema.contracts, schema.accounts, schema.nodes, schema.farms
        return (sa.select(c, a.c.name.label("payer"), a.c.public_key.label("payer_key"), n.c.name.label("node"),
                          f.c.name.label("farm"), n.c.certified)
                .join(a, a.c.id == c.c.account_id).join(n, n.c.id == c.c.node_id).join(f, f.c.id == n.c.farm_id))

    def _contract(self, r: Any, created: bool = False, moved_from: str | None = None) -> records.Contract:
        return records.Contract(
            id=r.id, key=r.key, payer=r.payer, node=r.node, farm=r.farm, resources=_res(r), public_ips=r.public_ips,
            dedicated=r.dedicated, state=r.state, created_at=r.created_at, grace_since=r.grace_since,
            deleted_at=r.deleted_at, deleted_reason=r.deleted_reason, overdraft=r.overdraft,
            billed_total=int(r.billed_total), last_billed_at=r.last_billed_at, last_discount=r.last_discount,
            certified=bool(r.certified), created=created, reserve=int(r.reserve), cycles=r.cycles,
            last_bill_amount=r.last_bill_amount, billing_error=r.billing_error, owner_uid=r.owner_uid,
            proof=r.proof, proof_until=r.proof_until, proof_signature=r.proof_signature, moved_from=moved_from,
            payer_key=r.payer_key or "")

    async def _latest_by_key(self, rows: Iterable[Any],
                             kept: dict[int, tuple[tuple[Any, ...], str | None, records.Contract]] | None = None,
                             ) -> dict[str, records.Contract]:
        """The latest contract of each Deployment from its contracts' rows (oldest first), with where self-healing
        last moved it from: the node of its Deleted(Moved) predecessor of the same object, read from the ledger
        (a status the user wrote never says so). With ``kept`` (contract id → row values, moved from, record, as
        read before, or made by live_contracts since), a row whose values and moved_from are all the same gives the
        record made from them before, and ``kept`` ends holding this read's rows only; the event loop gets a turn
        every RECORDS_PER_TURN rows (a read after a billing period makes every record again)."""
        found: dict[str, records.Contract] = {}
        fresh: dict[int, tuple[tuple[Any, ...], str | None, records.Contract]] = {}
        was = kept if kept is not None else {}
        for i, r in enumerate(rows):
            if kept is not None and i and i % RECORDS_PER_TURN == 0:
                await asyncio.sleep(0)
            before = found.get(r.key)
            moved = before.node if before is not None and before.deleted_reason == "Moved" \
                and before.owner_uid == r.owner_uid else None
            entry = self._kept_record(was.get(r.id), r, tuple(r), moved)
            fresh[r.id] = entry  # an unchanged row: the values kept before, this read's let go
            found[r.key] = entry[2]
        if kept is not None:
            kept.clear()
            kept.update(fresh)
        return found

    def _kept_record(self, entry: tuple[tuple[Any, ...], str | None, records.Contract] | None, r: Any,
                     values: tuple[Any, ...], moved: str | None) -> tuple[tuple[Any, ...], str | None, records.Contract]:
        """``entry`` (a kept row's values, moved from, record) when it was made of these ``values`` and ``moved``;
        else a new one made of row ``r``."""
        if entry is not None and entry[0] == values and entry[1] == moved:
            return entry
        return values, moved, self._contract(r, moved_from=moved)

    async def _owed(self, conn: AsyncConnection, account_id: int, owed: int | None = None) -> None:
        """Refuse to open, grow or take over a contract for a payer that owes (``owed``, when the caller read it
        already): invariant 7, its debt is paid first."""
        owed = (await self._debts(conn, [account_id])).get(account_id, 0) if owed is None else owed
        if owed:
            name = (await conn.execute(sa.select(schema.accounts.c.name).where(
                schema.accounts.c.id == account_id))).scalar_one()
            raise errors.PayerInDebt(
                f"payer {name!r} owes {money.tft(owed)} TFT ({owed} units) on its contracts in grace or closed "
                f"unpaid: it opens and grows no contract until a funding pays that first (tfgrid-operator ledger "
                f"fund {name} …)", owed)

    async def _payer(self, conn: AsyncConnection, key: str, proof: records.PayerProof,
                     now: int) -> tuple[int, dict[str, Any]]:
        """The account that agreed to pay for deployment ``key`` and the proof columns the contract keeps; the
        ledger checks the proof itself (a grant's signature against the twin key it holds)."""
        return _proven((await self._payers(conn, [(key, proof, now)]))[key.partition("/")[0], proof, now])

    async def _payers(self, conn: AsyncConnection, shown: Iterable[tuple[str, records.PayerProof, int]]
                      ) -> dict[tuple[str, records.PayerProof, int], tuple[int, dict[str, Any]] | errors.LedgerError]:
        """``_payer`` for each (deployment key, proof, time) shown, by (namespace, proof, time): the accounts and
        revoked grants they name in one query each (a placement batch shows a proof per payer of its namespaces:
        two statements a batch, not two a payer)."""
        a, r = schema.accounts, schema.revoked_grants
        asked: dict[tuple[str, records.PayerProof, int], str] = {}
        for key, proof, now in shown:  # a refusal names the first deployment that showed the proof, as before
            asked.setdefault((key.partition("/")[0], proof, now), key)
        names_ = {p.account for _, p, _ in asked if p.kind == "grant"}
        keys = {p.public_key for _, p, _ in asked if p.kind == "key" and p.public_key}
        signatures = {p.signature for _, p, _ in asked if p.kind == "grant" and p.signature}
        by_name: dict[str, Any] = {}
        by_key: dict[str, Any] = {}
        if names_ or keys:
            for row in (await conn.execute(sa.select(a).where(sa.or_(a.c.name.in_(names_), a.c.public_key.in_(keys)))
                                           .order_by(a.c.id))).all():
                by_name[row.name] = row
                by_key.setdefault(row.public_key, row)
        revoked = set((await conn.execute(sa.select(r.c.signature).where(r.c.signature.in_(signatures)))).scalars()) \
            if signatures else set()
        out: dict[tuple[str, records.PayerProof, int], tuple[int, dict[str, Any]] | errors.LedgerError] = {}
        for shown_as, key in asked.items():
            try:
                out[shown_as] = _check_payer(key, shown_as[1], shown_as[2], by_name, by_key, revoked)
            except errors.LedgerError as err:
                out[shown_as] = err
        return out

    async def _close_unproven(self, conn: AsyncConnection, current: records.Contract, now: int, reason: str) -> None:
        """A live contract nothing proves any more (its object is gone and another uid has its name: Orphaned; its
        grant was revoked: GrantRevoked): final bill, then Deleted and its reserve paid out (§2.7), as a close."""
        c = schema.contracts
        await self._bill_partial(conn, [current.id], now)
        await conn.execute(c.update().where(c.c.id == current.id, c.c.state.in_(LIVE)).values(
            state="Deleted", deleted_at=now, deleted_reason=reason))
        await self._pay_out(conn, {current.id: now})

    async def _owned_contract(self, conn: AsyncConnection, key: str, owner_uid: str) -> records.Contract | None:
        """The live contract of ``key`` if the object ``owner_uid`` opened it (or it predates ownership)."""
        current = await self._latest_contract(conn, key)
        if current is None or current.state not in LIVE or current.owner_uid not in ("", owner_uid):
            return None
        return current

    async def _latest_contract(self, conn: AsyncConnection, key: str) -> records.Contract | None:
        return (await self._latest_contracts(conn, {key})).get(key)

    async def _select(self, conn: AsyncConnection, request: scheduling.Request,
                      now: int) -> scheduling.Placement | scheduling.Unschedulable:
        """Node selection in two steps: the database returns the few least-loaded nodes that match and fit,
        and the domain chooses among them (checking every rule again). Only when none fits does the domain see
        every node, so the Unschedulable message names the constraint that failed."""
        decision = scheduling.select_node(request, await self._candidates(conn, now, request=request))
        if isinstance(decision, scheduling.Placement):
            return decision
        return scheduling.select_node(request, await self._candidates(conn, now))

    async def _candidates(self, conn: AsyncConnection, now: int, *, request: scheduling.Request | None = None,
                          limit: int = 8, seen: dict[str, int] | None = None) -> list[scheduling.Candidate]:
        """Active nodes with what their live contracts use, summed by the database in the same query: every
        node, or with ``request`` only the ``limit`` least-loaded that match and fit (as select_node orders).
        ``seen``: filled with each node's last report (or registration) time."""
        n, f, c = schema.nodes, schema.farms, schema.contracts
        live = c.c.state.in_(LIVE)
        usage = (sa.select(c.c.node_id, *(sa.func.sum(getattr(c.c, k)).label(k) for k in RESOURCE_FIELDS),
                           sa.func.count().label("n"), sa.func.max(sa.case((c.c.dedicated, 1), else_=0)).label("rented"))
                 .where(live).group_by(c.c.node_id).subquery())
        ips = (sa.select(n.c.farm_id, sa.func.sum(c.c.public_ips).label("ips")).join(n, n.c.id == c.c.node_id)
               .where(live).group_by(n.c.farm_id).subquery())
        used = {k: sa.func.coalesce(getattr(usage.c, k), 0) for k in RESOURCE_FIELDS}
        contracts, rented = sa.func.coalesce(usage.c.n, 0), sa.func.coalesce(usage.c.rented, 0)
        farm_free_ips = f.c.public_ips - sa.func.coalesce(ips.c.ips, 0)
        att, cap = capacity.placeable(n, self.is_sqlite)  # never more than the node attested (issue 13)
        query = (sa.select(n, f.c.name.label("farm"), *(u.label(f"used_{k}") for k, u in used.items()),
                           *(c.label(f"cap_{k}") for k, c in cap.items()),
                           contracts.label("contracts"), rented.label("rented"), farm_free_ips.label("farm_free_ips"))
                 .join(f, f.c.id == n.c.farm_id).outerjoin(usage, usage.c.node_id == n.c.id)
                 .outerjoin(att, att.c.node_id == n.c.id)
                 .outerjoin(ips, ips.c.farm_id == f.c.id).where(n.c.state == "Active"))
        if request is not None:
            query = self._narrowed(query, request, now, limit, used=used, cap=cap, contracts=contracts, rented=rented,
                                   farm_free_ips=farm_free_ips)
        down_after = self.config.node_down_after_s
        rows = (await conn.execute(query)).all()
        last = {r.name: r.last_report_ts if r.last_report_ts is not None else r.created_at for r in rows}
        if seen is not None:
            seen.update(last)
        # the four fields by name, not by a generator of f-strings: this runs for every node of a pool read
        return [scheduling.Candidate(
            name=r.name, farm=r.farm, total=Resources(int(r.cap_cru), int(r.cap_mru), int(r.cap_sru), int(r.cap_hru)),
            used=Resources(int(r.used_cru), int(r.used_mru), int(r.used_sru), int(r.used_hru)),
            country=r.country, city=r.city, certified=r.certified, up=now - last[r.name] <= down_after,
            farm_free_ips=int(r.farm_free_ips), contracts=int(r.contracts), rented=bool(r.rented),
        ) for r in rows]

    async def _placement_pool(self, conn: AsyncConnection, now: int) -> PlacementPool:
        """The nodes a placement batch chooses from (in ``conn``'s write transaction). Reading them is most of a
        batch's cost (every node with what its live contracts use: ~15 ms of SQL and ~14 ms of Python for 1,000
        nodes, a few hundred times in a burst), so a batch starts from what the last batch left when nothing it
        reads was written since, in this process or another: the database's triggers replace the ledger's pool
        token on every such write (engine.py POOL_COLUMNS: whoever writes, an older operator during a rolling
        upgrade or SQL by hand included), and the pool is kept with the token it is valid under. Whether a node is
        up is worked out again at ``now`` from its last report; an uptime report counted in this process moves that
        (``_pool_seen``), one counted elsewhere shows at the next read (meanwhile the node may look down for longer:
        it is passed over, never overbooked). A pool is read again at least every POOL_MAX_AGE_S."""
        token = await self._meta(conn, POOL_TOKEN)
        kept = self._pool
        if kept is not None and token is not None and kept.token == token \
                and time.monotonic() - kept.read_at < POOL_MAX_AGE_S:
            down_after = self.config.node_down_after_s
            return dataclasses.replace(kept, candidates={
                name: c if c.up == (up := now - kept.seen[name] <= down_after) else dataclasses.replace(c, up=up)
                for name, c in kept.candidates.items()})
        seen: dict[str, int] = {}
        await self._planner_statistics(conn, tuple(POOL_COLUMNS))
        read = await self._candidates(conn, now, seen=seen)
        return PlacementPool(token or "", time.monotonic(), {c.name: c for c in read}, seen)

    def _narrowed(self, query: sa.Select[Any], r: scheduling.Request, now: int, limit: int, *, used: dict[str, Any],
                  cap: dict[str, Any], contracts: Any, rented: Any, farm_free_ips: Any) -> sa.Select[Any]:
        """``query`` kept to the nodes that match ``r``'s constraints and have room, least loaded first."""
        n, f = schema.nodes, schema.farms
        want = r.resources.as_dict()
        seen = sa.func.coalesce(n.c.last_report_ts, n.c.created_at)
        query = query.where(*(cap[k] - used[k] >= want[k] for k in RESOURCE_FIELDS),
                            farm_free_ips >= r.public_ips, rented == 0,
                            sa.literal(now) - seen <= self.config.node_down_after_s)
        if r.node is not None:
            query = query.where(n.c.name == r.node)
        if r.farm is not None:
            query = query.where(f.c.name == r.farm)
        if r.country is not None:
            query = query.where(sa.func.lower(n.c.country) == r.country.lower())
        if r.city is not None:
            query = query.where(sa.func.lower(n.c.city) == r.city.lower())
        if r.certified_only:
            query = query.where(n.c.certified.is_(True))
        if r.exclude:
            query = query.where(n.c.name.not_in(sorted(r.exclude)))
        if r.dedicated:
            query = query.where(contracts == 0)
        ratios = [sa.case((cap[k] > 0, (used[k] + want[k]) * 1.0 / cap[k]), else_=0.0) for k in RESOURCE_FIELDS]
        load = sa.func.max(*ratios) if self.is_sqlite else sa.func.greatest(*ratios)
        return query.order_by(load, n.c.name).limit(limit)

    async def open_contract(self, *, key: str, owner_uid: str, proof: records.PayerProof, request: scheduling.Request,
                            now: int) -> records.Contract:
        if request.resources.is_negative() or request.public_ips < 0:
            raise errors.InvalidRequest(f"deployment {key!r}: resources and public IPs cannot be negative")
        if not owner_uid:
            raise errors.InvalidRequest(f"deployment {key!r}: a contract is opened for an object (uid)")
        return await self._placements.submit(Open(key, owner_uid, proof, request, now))

    async def _open_batch(self, batch: Sequence[Open]) -> list[records.Contract | errors.LedgerError]:
        """Every queued placement in one write transaction: the live contracts and payers of the batch in one query
        each, the candidates once, each choice by the domain (a Placer) on the candidates as the earlier choices left
        them, one insert. A deployment with a live contract adopts it (a restarted operator never opens a second one).
        Longer than our ~60 lines on purpose: it is one transaction whose steps share the batch's running state (what
        each earlier choice took from the candidates); split into helpers, each would take and return all of it."""
        c, n = schema.contracts, schema.nodes
        out: list[records.Contract | errors.LedgerError | None] = []
        rows: dict[str, dict[str, Any]] = {}
        pool: PlacementPool | None = None  # the nodes it chose from: the next batch's, once this one commits
        async with self._tx() as conn:
            existing = await self._latest_contracts(conn, {o.key for o in batch})
            for o in batch:  # a live contract of an earlier object of the name never passes to a new one
                live = existing.get(o.key)
                if live is not None and live.state in LIVE and live.owner_uid not in ("", o.owner_uid):
                    await self._close_unproven(conn, live, o.now, "Orphaned")  # a new pool token: its node has room
                    existing.pop(o.key)
            placer: scheduling.Placer | None = None
            # the proofs of the deployments to open, each checked once a batch (a team's one payer Secret is shown
            # by many), all of them on two reads
            opening = [o for o in batch if not ((live := existing.get(o.key)) is not None and live.state in LIVE)]
            proven = await self._payers(conn, [(o.key, o.proof, o.now) for o in opening])
            payers = {o.key: proven[o.key.partition("/")[0], o.proof, o.now] for o in opening}
            debts = await self._debts(conn, {p[0] for p in payers.values() if not isinstance(p, errors.LedgerError)})
            for o in batch:
                live = existing.get(o.key)
                if o.key in rows:
                    out.append(None)  # placed earlier in this batch, read back below
                    continue
                if live is not None and live.state in LIVE and live.owner_uid in ("", o.owner_uid):
                    if not live.owner_uid:  # made before ownership (schema 3): this object adopts it now
                        await conn.execute(c.update().where(c.c.id == live.id).values(owner_uid=o.owner_uid))
                        live = dataclasses.replace(live, owner_uid=o.owner_uid)
                    out.append(live)  # a restarted operator never opens a second one
                    continue
                payer = payers[o.key]
                if isinstance(payer, errors.LedgerError):
                    out.append(payer)
                    continue
                account_id, proof = payer
                try:  # invariant 7: what it owes is paid before it opens anything
                    await self._owed(conn, account_id, debts.get(account_id, 0))
                except errors.PayerInDebt as err:
                    out.append(err)
                    continue
                if placer is None:
                    pool = await self._placement_pool(conn, max(b.now for b in batch))
                    placer = scheduling.Placer(pool.candidates.values())
                decision = placer.select(o.request)
                if isinstance(decision, scheduling.Unschedulable):
                    out.append(errors.NoCapacity(decision.constraint, decision.message))
                    continue
                chosen = placer.pool[decision.node]
                reserved = chosen.total if o.request.dedicated else o.request.resources
                placer.put(dataclasses.replace(chosen, used=chosen.used + reserved, contracts=chosen.contracts + 1,
                                               rented=chosen.rented or o.request.dedicated))
                if o.request.public_ips:  # the farm's free IPs are shared by all its nodes
                    for x in [x for x in placer.pool.values() if x.farm == chosen.farm]:
                        placer.put(dataclasses.replace(x, farm_free_ips=x.farm_free_ips - o.request.public_ips))
                rows[o.key] = dict(key=o.key, account_id=account_id, node=chosen.name, public_ips=o.request.public_ips,
                                   dedicated=o.request.dedicated, state="Created", created_at=o.now, overdraft=0,
                                   owner_uid=o.owner_uid, **proof, **reserved.as_dict())
                out.append(None)
            if rows:
                ids = dict((await conn.execute(sa.select(n.c.name, n.c.id).where(
                    n.c.name.in_({r["node"] for r in rows.values()})))).all())
                await conn.execute(c.insert(), [{**{k: v for k, v in r.items() if k != "node"}, "node_id": ids[r["node"]]}
                                                for r in rows.values()])
                made = await self._latest_contracts(conn, set(rows))
                assert pool is not None and placer is not None  # a row is a choice of the placer
                # the token the inserts left (the triggers replaced it), as the pool the choices left
                pool = dataclasses.replace(pool, token=await self._meta(conn, POOL_TOKEN) or "",
                                           candidates=dict(placer.pool))
        if pool is not None:  # committed: the nodes as this batch left them, valid under the token its writes left
            self._pool = pool
        return [answer if answer is not None else dataclasses.replace(made[o.key], created=True)
                for o, answer in zip(batch, out, strict=True)]

    async def _latest_contracts(self, conn: AsyncConnection, keys: set[str]) -> dict[str, records.Contract]:
        c = schema.contracts
        return await self._latest_by_key((await conn.execute(self._contract_query().where(c.c.key.in_(keys))
                                                             .order_by(c.c.id))).all())

    async def observe_contract(self, *, key: str) -> records.Contract | None:
        return await self._observations.submit(key)

    async def _observe_batch(self, keys: Sequence[str]) -> list[records.Contract | None]:
        """Concurrent lookups (every Deployment resuming after a restart) in one query."""
        async with self._read() as conn:
            found = await self._latest_contracts(conn, set(keys))
        return [found.get(k) for k in keys]

    async def resize_contract(self, *, key: str, owner_uid: str, resources: Resources, public_ips: int,
                              now: int) -> records.Contract:
        c, n, f = schema.contracts, schema.nodes, schema.farms
        async with self._tx() as conn:
            current = await self._owned_contract(conn, key, owner_uid)
            if current is None:
                raise errors.NotFound(f"deployment {key!r} has no open contract")
            if current.state == "GracePeriod":
                raise errors.Conflict(f"deployment {key!r} is in its grace period and cannot be resized (§2.4)")
            if current.dedicated:
                raise errors.Conflict(f"deployment {key!r} rents its whole node; there is nothing to resize")
            if not resources.fits_in(current.resources) or public_ips > current.public_ips:  # it grows
                await self._owed(conn, (await conn.execute(sa.select(c.c.account_id).where(
                    c.c.id == current.id))).scalar_one())
            node = (await conn.execute(sa.select(n).where(n.c.name == current.node))).one()
            total = capacity.capped(_res(node), (await capacity.latest(conn, [node.id])).get(node.id))
            free = total - (await self._used_on_node(conn, node.id)) + current.resources
            short = resources.shortfall(free)
            if short:
                raise errors.NoCapacity("Capacity", f"node {current.node!r} has no room to resize: short of {', '.join(short)}")
            farm = (await conn.execute(sa.select(f).where(f.c.id == node.farm_id))).one()
            ips_used = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(c.c.public_ips), 0))
                                           .join(n, n.c.id == c.c.node_id)
                                           .where(n.c.farm_id == farm.id, c.c.state.in_(LIVE)))).scalar_one()
            if public_ips - current.public_ips > farm.public_ips - int(ips_used):
                raise errors.NoCapacity("PublicIPs", f"farm {farm.name!r} has no free public IPv4 for the resize")
            await self._bill_partial(conn, [current.id], now)  # the old size is billed up to now
            if await self._ended(conn, current.id):  # that bill ended it (its grant ran out): nothing is left to resize
                return await self._contract_now(conn, key)
            await conn.execute(c.update().where(c.c.id == current.id).values(public_ips=public_ips, **resources.as_dict()))
            return await self._contract_now(conn, key)

    async def authorize_contract(self, *, key: str, owner_uid: str, proof: records.PayerProof,
                                 now: int) -> records.Contract:
        """Keep the live contract of ``key`` on the payer ``proof`` shows agreed: the same payer with a new proof (a
        renewed grant) is recorded; another payer re-binds the contract from ``now`` on, the old payer billed up to
        ``now`` first. A contract in its grace period keeps its payer until the debt is paid (Conflict)."""
        c = schema.contracts
        async with self._tx() as conn:
            current = await self._owned_contract(conn, key, owner_uid)
            if current is None:
                raise errors.NotFound(f"deployment {key!r} has no open contract")
            account_id, kept = await self._payer(conn, key, proof, now)
            old_account = (await conn.execute(sa.select(c.c.account_id).where(c.c.id == current.id))).scalar_one()
            if account_id != old_account:
                await self._owed(conn, account_id)
                if current.state == "GracePeriod":
                    raise errors.Conflict(f"deployment {key!r} is in its grace period: its payer {current.payer!r} "
                                          f"pays what it owes before another payer takes over (§2.4)")
                await self._bill_partial(conn, [current.id], now)  # the old payer's part, up to now
                if await self._ended(conn, current.id):  # that bill ended it at its grant's end: no one takes it over
                    return await self._contract_now(conn, key)
                owed = (await conn.execute(sa.select(c.c.overdraft).where(c.c.id == current.id))).scalar_one()
                if owed > 0:  # its last bill left a debt: it stays the old payer's, never the new one's (invariant 7)
                    raise errors.Conflict(f"deployment {key!r}: its payer {current.payer!r} cannot pay its bill up to "
                                          f"now ({owed} units owed); another payer takes over once that is paid (§2.4)")
                kept["account_id"] = account_id
            await conn.execute(c.update().where(c.c.id == current.id).values(**kept))
            return await self._contract_now(conn, key)

    async def _ended(self, conn: AsyncConnection, contract_id: int) -> bool:
        """Whether the contract is no longer live: a final bill just ended it (its grant's end, grid-rules.md)."""
        c = schema.contracts
        return (await conn.execute(sa.select(c.c.state).where(c.c.id == contract_id))).scalar_one() not in LIVE

    async def _contract_now(self, conn: AsyncConnection, key: str) -> records.Contract:
        """The latest contract of ``key``, which the caller knows exists (it holds it in this transaction)."""
        out = await self._latest_contract(conn, key)
        assert out is not None
        return out

    async def revoke_grant(self, *, account: str, signature: str, now: int) -> list[records.Contract]:
        """The twin withdraws a grant (its keeper runs this at the twin's request): the grant is never accepted
        again, and every live contract resting on it is closed now with its final bill (GrantRevoked). Idempotent."""
        a, c, r = schema.accounts, schema.contracts, schema.revoked_grants
        if not signature:
            raise errors.InvalidRequest("a grant to revoke needs its signature")
        async with self._tx() as conn:
            account_id = (await conn.execute(sa.select(a.c.id).where(a.c.name == account))).scalar()
            if account_id is None:
                raise errors.NotFound(f"account {account!r} does not exist")
            seen = (await conn.execute(sa.select(r.c.account_id).where(r.c.signature == signature))).first()
            if seen is None:
                await conn.execute(r.insert().values(signature=signature[:128], account_id=account_id, revoked_at=now))
            keys = (await conn.execute(sa.select(c.c.key).where(
                c.c.proof == "grant", c.c.proof_signature == signature, c.c.account_id == account_id,
                c.c.state.in_(LIVE)).order_by(c.c.key))).scalars().all()
            found = await self._latest_contracts(conn, set(keys))
            for key in keys:
                await self._close_unproven(conn, found[key], now, GRANT_REVOKED)
            closed = await self._latest_contracts(conn, set(keys))
        return [closed[k] for k in keys]

    async def close_contract(self, *, key: str, owner_uid: str, now: int, reason: str) -> records.Contract | None:
        """Final bill for the used part of the current period, then Deleted and its reserve paid out (§2.7).
        Idempotent. What the final bill could not take stays the deleted contract's overdraft: recorded, never
        forgiven silently nor charged twice. Only the object that opened the contract (``owner_uid``) closes it:
        deleting a later object of the same name leaves it alone. Closes that arrive together (a namespace
        deleted whole) share one transaction (_close_batch)."""
        return await self._closings.submit(Close(key, owner_uid, now, reason))

    async def _close_batch(self, batch: Sequence[Close]) -> list[records.Contract | None]:
        """Every queued close in one write transaction, as placements are (backend/batching.py): the contracts
        read in one query, their final bills as one billing batch per clock reading (in id order, as the billing
        loop bills a period: each on the balances the ones before it left), one state change and one payout
        write of each kind, the results read back in one query. The answers are what one close at a time gives."""
        c = schema.contracts
        keys = {cl.key for cl in batch}
        async with self._tx() as conn:
            found = await self._latest_contracts(conn, keys)
            closing: dict[int, Close] = {}  # contract id → the close that closes it (the first of its key)
            for cl in batch:
                current = found.get(cl.key)
                if current is not None and current.state in LIVE and current.owner_uid in ("", cl.owner_uid) \
                        and current.id not in closing and not _renewed(current, cl):
                    closing[current.id] = cl
            if not closing:
                return [found.get(cl.key) for cl in batch]
            for now in sorted({cl.now for cl in closing.values()}):
                await self._bill_partial(conn, [cid for cid, cl in closing.items() if cl.now == now], now)
            for now, reason in sorted({(cl.now, cl.reason) for cl in closing.values()}):
                ids = [cid for cid, cl in closing.items() if (cl.now, cl.reason) == (now, reason)]
                await conn.execute(c.update().where(c.c.id.in_(ids), c.c.state.in_(LIVE)).values(
                    state="Deleted", deleted_at=now, deleted_reason=reason))
            await self._pay_out(conn, {cid: cl.now for cid, cl in closing.items()})
            closed = await self._latest_contracts(conn, keys)
        return [closed.get(cl.key) for cl in batch]

    async def move_contract(self, *, key: str, request: scheduling.Request, now: int) -> records.Contract:
        """Self-healing in one transaction: final bill and close (reason Moved), its reserve paid out to the old
        node's farmer, then a new contract on another node from ``now`` that carries the debt as the final bill
        left it: the overdraft, the grace state and its start (§2.4). If no node fits, nothing changes
        (NoCapacity). If the final bill ends the grace period unpaid, the contract is deleted (OutOfFunds)
        instead of moved and returned as it is (``created`` False)."""
        c, n = schema.contracts, schema.nodes
        async with self._tx() as conn:
            current = await self._latest_contract(conn, key)
            if current is None or current.state not in LIVE:
                raise errors.NotFound(f"deployment {key!r} has no open contract to move")
            # a move relocates the contract as it is (what its payer agreed to): its size and public IPs, never a
            # spec grown since (that is a resize, which the ledger refuses to a payer that owes); a rent still rents
            # a whole node and reserves all of the new one below, as placement does
            request = dataclasses.replace(request, public_ips=current.public_ips, dedicated=current.dedicated,
                                          resources=request.resources if current.dedicated else current.resources)
            decision = await self._select(conn, request, now)
            if isinstance(decision, scheduling.Unschedulable):
                raise errors.NoCapacity(decision.constraint, decision.message)
            await self._bill_partial(conn, [current.id], now)
            billed = (await conn.execute(sa.select(c.c.state, c.c.overdraft, c.c.grace_since, c.c.account_id)
                                         .where(c.c.id == current.id))).one()
            if billed.state not in LIVE:
                await self._pay_out(conn, {current.id: now})
                return await self._contract_now(conn, key)
            await conn.execute(c.update().where(c.c.id == current.id).values(
                state="Deleted", deleted_at=now, deleted_reason="Moved", overdraft=0))
            await self._pay_out(conn, {current.id: now})
            node = (await conn.execute(sa.select(n).where(n.c.name == decision.node))).one()
            reserved = capacity.capped(_res(node), (await capacity.latest(conn, [node.id])).get(node.id)) \
                if current.dedicated else current.resources
            await conn.execute(c.insert().values(
                key=key, account_id=billed.account_id, node_id=node.id, public_ips=current.public_ips,
                dedicated=current.dedicated, state=billed.state, grace_since=billed.grace_since, created_at=now,
                overdraft=billed.overdraft, owner_uid=current.owner_uid, proof=current.proof,
                proof_until=current.proof_until, proof_signature=current.proof_signature,
                **reserved.as_dict()))
            return dataclasses.replace(await self._contract_now(conn, key), created=True)

    async def contract_summaries(self) -> dict[str, records.Contract]:
        c = schema.contracts
        async with self._read() as conn:
            rows = (await conn.execute(self._contract_query().order_by(c.c.id))).all()
        # the latest contract per key wins; a record is made again only where its row changed since the last read
        # (every tick reads every contract: at grid size making 10,000 records was ~0.2 s of CPU a tick)
        return await self._latest_by_key(rows, self._summaries_kept)

    async def live_contracts(self, *, keys: Collection[str] | None = None,
                             proof_until_before: int | None = None) -> dict[str, records.Contract]:
        """The live contracts (Created, GracePeriod), of ``keys`` only or those whose proof ends by
        ``proof_until_before`` only: what the loop's sweep checks each tick, without reading every contract ever
        made (at grid size that read was ~5 % of a burst's CPU, twice a tick). ``moved_from`` is not read."""
        c = schema.contracts
        query = self._contract_query().where(c.c.state.in_(LIVE))
        if keys is not None:
            if not keys:
                return {}
            query = query.where(c.c.key.in_(set(keys)))
        if proof_until_before is not None:
            query = query.where(c.c.proof_until.is_not(None), c.c.proof_until <= proof_until_before)
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(c.c.id))).all()
        # one live contract per key (the latest if ever more), each the record contract_summaries made of the same
        # row where it has one (a restart's first tick made all 10,000 twice: 0.6 s of the event loop each), and what
        # is made here kept for its next read (which still compares every row, and keeps only what it read)
        kept, found = self._summaries_kept, {}
        for i, r in enumerate(rows):
            if i and i % RECORDS_PER_TURN == 0:
                await asyncio.sleep(0)
            values, entry = tuple(r), kept.get(r.id)
            made = self._kept_record(entry, r, values, None)
            if entry is None or entry[0] != values:  # never over a record with its moved_from, of this row
                kept[r.id] = made
            found[r.key] = made[2]
        return found



def _renewed(current: records.Contract, close: Close) -> bool:
    """A close for an ended grant (the sweep's) whose contract shows a grant that has not ended, or a key, by the
    time the close holds the ledger's lock: renewed since the sweep read it, it stays open."""
    return close.reason == GRANT_EXPIRED and (current.proof_until is None or current.proof_until > close.now)


def _proven(answer: tuple[int, dict[str, Any]] | errors.LedgerError) -> tuple[int, dict[str, Any]]:
    if isinstance(answer, errors.LedgerError):
        raise answer
    return answer


def _check_payer(key: str, proof: records.PayerProof, now: int, by_name: dict[str, Any], by_key: dict[str, Any],
                 revoked: set[str]) -> tuple[int, dict[str, Any]]:
    """The payer ``proof`` shows for deployment ``key`` (its account's id, the proof columns the contract keeps),
    from the accounts read by name and by key and the revoked grants' signatures; raises what refuses it."""
    namespace = key.partition("/")[0]
    if proof.namespace != namespace:
        raise errors.NotAuthorized(f"deployment {key!r}: the payer proof was made for another namespace")
    if proof.kind == "key":
        row = by_key.get(proof.public_key) if proof.public_key else None
        if row is None:
            raise errors.NotFound("no twin account has the key the payer Secret holds "
                                  "(register it: tfgrid-operator ledger create-account NAME --key-file KEY)")
        kept: dict[str, Any] = dict(proof="key", proof_until=None, proof_signature="")
    elif proof.kind == "grant":
        row = by_name.get(proof.account)
        if row is None:
            raise errors.NotFound(f"payer account {proof.account!r} does not exist")
        if not proof.signature or proof.expires is None:
            raise errors.NotAuthorized(
                f"payer account {proof.account!r} is only named: a payer proves it agreed with its twin key in a "
                f"Secret (payer.secretRef) or a grant it signed for this namespace (tfgrid-operator grant)")
        grant = names.Grant(proof.account, namespace, proof.expires, proof.signature)
        problem = grant.problem(public_key=row.public_key, namespace=namespace, now=now)
        if problem:
            raise errors.NotAuthorized(problem)
        if proof.signature in revoked:
            raise errors.NotAuthorized(f"the grant of account {proof.account!r} was revoked")
        kept = dict(proof="grant", proof_until=proof.expires, proof_signature=proof.signature)
    else:
        raise errors.InvalidRequest(f"unknown payer proof {proof.kind!r}")
    if row.role != "twin":
        raise errors.NotAuthorized(f"account {row.name!r} is a {row.role} account: grid and payout accounts "
                                   f"never pay for deployments")
    return row.id, kept
