"""Accounts (twins), farms, nodes and their signed uptime reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql.engine import (
    LIVE,
    LedgerBase,
    Registration,
    _res,
    _uptime_state,
    inserted_id,
    payout_account_name,
)
from tfgrid_operator.domain import billing, identity, minting, money, names, units
from tfgrid_operator.domain import uptime as uptime_mod
from tfgrid_operator.domain.units import Resources


def _account(row: Any, debt: int = 0) -> records.Account:
    return records.Account(row.id, row.name, row.balance, row.role, debt)


def _owner(row: Any) -> records.Owner:
    return records.Owner(row.owner_ns, row.owner_uid)


def _claim(kind: str, name: str, row: Any, owner: records.Owner) -> bool:
    """Whether ``owner`` may change this record: it made it, or the record predates ownership (schema 3) and is
    adopted now (True: write the owner). Any other object, of another namespace or a later one of the same name in
    the same namespace, is refused: first come, first served, and nothing on the ledger changes."""
    if row.owner_uid == owner.uid and row.owner_ns == owner.namespace:
        return False
    if row.owner_uid == "" and row.owner_ns in ("", owner.namespace):
        return True
    whose = "an earlier object of that name" if row.owner_ns == owner.namespace else "another namespace"
    raise errors.NameTaken(f"{kind} name {name!r} is registered on the ledger by {whose}; grid-wide names are "
                           f"first come, first served: choose another name")


def _may_join(farm_row: Any, owner: records.Owner, node: str, node_key: str, farm_consent: str) -> bool:
    """Whether a node of ``owner`` may be in this farm: the farm is of its namespace, or the farm owner's key signed
    consent for this node and key (names.consent_holds)."""
    return farm_row.owner_ns == owner.namespace or names.consent_holds(
        owner_key=farm_row.owner_key, farm=farm_row.name, namespace=owner.namespace, node=node, node_key=node_key,
        signature=farm_consent)


def _registered_as_is(row: Any, farm_row: Any, g: Registration) -> bool:
    """Whether the node ``g`` asks for is registered exactly so, by its owner, in a farm that still takes it:
    ensure_node would change nothing."""
    return row is not None and row.state == "Active" and (row.owner_uid, row.owner_ns) == (g.owner.uid, g.owner.namespace) \
        and (row.farm, row.public_key, row.country, row.city) == (g.farm, g.public_key, g.country, g.city) \
        and _res(row) == g.resources and farm_row is not None and farm_row.state == "Active" \
        and _may_join(farm_row, g.owner, g.name, g.public_key, g.farm_consent)


@dataclasses.dataclass(frozen=True)
class _Pending:
    """What a registration batch knows of a node it wrote (inserted, or updated) for its later items."""

    owner_ns: str
    owner_uid: str
    state: str
    farm_id: int
    public_key: str
    id: int | None  # None until the batch's insert


def _verify_uptime(public_key: str, node: str, ts: int, uptime: int, signature: str) -> None:
    """Raise BadSignature unless the node's key signed this uptime report."""
    try:
        identity.verify(public_key, identity.UPTIME, {"node": node, "ts": ts, "uptime": uptime}, signature)
    except identity.BadSignature as exc:
        raise errors.BadSignature(f"uptime report for node {node!r} is not signed by its key") from exc


def _owned(row: Any, owner: records.Owner) -> bool:
    """Whether the record is ``owner``'s to close: it made it, or it predates ownership and nobody claimed it."""
    if row.owner_uid == "":
        return row.owner_ns in ("", owner.namespace)
    return (row.owner_uid, row.owner_ns) == (owner.uid, owner.namespace)


class RegistryLedger(LedgerBase):
    # ------------------------------------------------------------------ accounts
    async def _ensure_account(self, conn: AsyncConnection, name: str, public_key: str,
                              role: str = "twin") -> records.Account:
        a = schema.accounts
        row = (await conn.execute(sa.select(a).where(a.c.name == name))).first()
        if row is None:
            new_id = inserted_id(await conn.execute(a.insert().values(name=name, public_key=public_key, balance=0,
                                                                      role=role)))
            return records.Account(new_id, name, 0, role)
        if row.role != role:
            raise errors.Conflict(f"account {name!r} is a {row.role} account and cannot be used as a {role} account")
        if public_key and row.public_key != public_key:
            if row.public_key:
                raise errors.Conflict(f"account {name!r} already has another twin key")
            await conn.execute(a.update().where(a.c.id == row.id).values(public_key=public_key))
        return _account(row)

    async def ensure_account(self, *, name: str, public_key: str = "") -> records.Account:
        """A twin account, created once; a key is set once (§1.1: one twin per key, one key per twin)."""
        if not names.is_account_name(name):
            raise errors.InvalidRequest(f"account name {name!r} must match {names.ACCOUNT_PATTERN} "
                                        f"(at most {names.ACCOUNT_MAX_LEN} characters)")
        if public_key and not identity.is_public_key(public_key):
            raise errors.InvalidRequest(f"account {name!r}: the twin key is not a base64 ed25519 public key")
        a = schema.accounts
        async with self._tx() as conn:
            if public_key:
                other = (await conn.execute(sa.select(a.c.name).where(a.c.public_key == public_key,
                                                                      a.c.name != name))).scalar()
                if other is not None:
                    raise errors.Conflict("the twin key is already the key of another account; one key, one twin (§1.1)")
            return await self._ensure_account(conn, name, public_key)

    async def fund(self, *, name: str, amount: int, now: int) -> records.Account:
        """Add ``amount`` to the account. What its payer owes on closed contracts is collected first (invariant 7:
        a debt follows its payer), oldest first, each part paid out as the contract's bills would have been (§2.7:
        farmer / foundation / staking pool, a payout of reason Debt at ``now``, the caller's clock); the
        rest is its balance."""
        if amount <= 0:
            raise errors.InvalidRequest(f"a funding amount must be positive, got {amount}")
        if amount > money.MAX_UNITS:
            raise errors.InvalidRequest(f"a funding amount is at most {money.MAX_TFT} TFT ({money.MAX_UNITS} units)")
        async with self._tx() as conn:
            a = schema.accounts
            row = (await conn.execute(sa.select(a).where(a.c.name == name))).first()
            if row is None:
                raise errors.NotFound(f"account {name!r} does not exist")
            total = int((await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(a.c.balance), 0)))).scalar_one())
            if total + amount > money.MAX_UNITS:
                raise errors.InvalidRequest(
                    f"funding {amount} units would bring the ledger's total past its bound of {money.MAX_TFT} TFT")
            gains = await self._collect_debts(conn, row.id, amount, now)
            collected = sum(gains.values())
            gains[row.id] = gains.get(row.id, 0) + amount - collected
            await conn.execute(a.update().where(a.c.id == sa.bindparam("aid")).values(
                balance=a.c.balance + sa.bindparam("delta")), [dict(aid=k, delta=v) for k, v in gains.items() if v])
            row = (await conn.execute(sa.select(a).where(a.c.id == row.id))).one()
            return dataclasses.replace(_account(row, (await self._debts(conn, [row.id])).get(row.id, 0)),
                                       collected=collected)

    async def _debts(self, conn: AsyncConnection, account_ids: Iterable[int]) -> dict[int, int]:
        """What each account owes (invariant 7): the overdraft of its contracts in grace and of its closed
        contracts whose final bill it could not pay. While it owes, it opens and grows no contract."""
        c = schema.contracts
        ids = sorted(set(account_ids))
        if not ids:
            return {}
        rows = (await conn.execute(sa.select(c.c.account_id, sa.func.sum(c.c.overdraft))
                                   .where(c.c.overdraft > 0, c.c.account_id.in_(ids)).group_by(c.c.account_id))).all()
        return {aid: int(owed) for aid, owed in rows}

    async def _collect_debts(self, conn: AsyncConnection, account_id: int, amount: int, now: int) -> dict[int, int]:
        """Take what ``account_id`` owes on its closed contracts out of ``amount`` (oldest contract first,
        ``billing.debt_taken``): each contract's overdraft goes down by what is taken, which is split as its
        payout would have been (§2.7, ``billing.payout_gains``: farmer of its node's farm, foundation, staking
        pool) and recorded as a payout of reason Debt. Returns the gains of the receiving accounts (the payer's
        own share is the caller's)."""
        c, n, f, p = schema.contracts, schema.nodes, schema.farms, schema.payouts
        owed = (await conn.execute(
            sa.select(c.c.id, c.c.overdraft, f.c.account_id.label("farmer"))
            .join(n, n.c.id == c.c.node_id).join(f, f.c.id == n.c.farm_id)
            .where(c.c.account_id == account_id, c.c.state == "Deleted", c.c.overdraft > 0)
            .order_by(c.c.deleted_at, c.c.id))).all()
        if not owed:
            return {}
        foundation, staking = await self._grid_accounts(conn)
        gains: dict[int, int] = {}
        for r, take in zip(owed, billing.debt_taken((int(o.overdraft) for o in owed), amount), strict=True):
            if take == 0:
                break
            shares, paid = billing.payout_gains(take, farmer=r.farmer, foundation=foundation, staking=staking)
            await conn.execute(c.update().where(c.c.id == r.id).values(overdraft=c.c.overdraft - take))
            await conn.execute(p.insert().values(
                contract_id=r.id, at=now, reason="Debt", amount=take, farmer_account_id=r.farmer, farmer=shares.farmer,
                foundation=shares.foundation, staking_pool=shares.staking_pool))
            for aid, share in paid.items():
                gains[aid] = gains.get(aid, 0) + share
        return gains

    async def _grid_accounts(self, conn: AsyncConnection) -> tuple[int, int]:
        """The foundation's and the staking pool's account ids: where a reserve's payout (billing) and a debt's
        (funding) send their 40 % and 10 %."""
        a = schema.accounts
        ids = dict((await conn.execute(sa.select(a.c.name, a.c.id).where(
            a.c.name.in_((self.config.foundation_account, self.config.staking_pool_account))))).all())
        return ids[self.config.foundation_account], ids[self.config.staking_pool_account]

    async def get_account(self, *, name: str) -> records.Account:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(schema.accounts).where(schema.accounts.c.name == name))).first()
            if row is None:
                raise errors.NotFound(f"account {name!r} does not exist")
            return _account(row, (await self._debts(conn, [row.id])).get(row.id, 0))

    async def account_by_key(self, *, public_key: str) -> records.Account:
        """The twin whose key signs for it: how a Deployment's Secret-held twin key finds its account."""
        a = schema.accounts
        async with self._read() as conn:
            row = (await conn.execute(sa.select(a).where(a.c.public_key == public_key).order_by(a.c.id))).first()
        if row is None or not public_key:
            raise errors.NotFound(f"no twin account has the public key {public_key!r}")
        return _account(row)

    async def list_accounts(self) -> list[records.Account]:
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(schema.accounts).order_by(schema.accounts.c.name))).all()
            debts = await self._debts(conn, (r.id for r in rows if r.role == "twin"))  # only twins pay, and owe
        return [_account(r, debts.get(r.id, 0)) for r in rows]

    # ------------------------------------------------------------------ farms
    def _farm(self, row: Any, created: bool = False) -> records.Farm:
        return records.Farm(row.id, row.name, row.owner_key, row.payout, row.certified, row.dedicated,
                            row.public_ips, row.state, created, _owner(row))

    def _farm_query(self) -> sa.Select[Any]:
        f, a = schema.farms, schema.accounts
        return sa.select(f, a.c.name.label("payout")).join(a, a.c.id == f.c.account_id)

    async def ensure_farm(
        self, *, name: str, owner: records.Owner, owner_key: str, payout_account: str, certified: bool,
        dedicated: bool, public_ips: int,
    ) -> records.Farm:
        if not identity.is_public_key(owner_key):
            raise errors.InvalidRequest(f"farm {name!r}: owner key is not a base64 ed25519 public key")
        if public_ips < 0:
            raise errors.InvalidRequest(f"farm {name!r}: public IPs cannot be negative")
        if not names.is_account_name(payout_account):
            raise errors.InvalidRequest(f"farm {name!r}: payout account {payout_account!r} must match "
                                        f"{names.ACCOUNT_PATTERN}")
        current = await self.observe_farm(name=name)  # every resume of every farm asks: as it is, nothing to write
        if current is not None and current.state == "Active" and current.owner == owner and (
                current.owner_key, current.payout_account, current.certified, current.dedicated, current.public_ips,
        ) == (owner_key, payout_account_name(owner.namespace, payout_account), certified, dedicated, public_ips):
            return current
        f = schema.farms
        async with self._tx() as conn:
            row = (await conn.execute(self._farm_query().where(f.c.name == name))).first()
            adopt = row is not None and _claim("farm", name, row, owner)
            account = await self._payout_account(conn, row, owner.namespace, payout_account)
            values = dict(owner_key=owner_key, account_id=account.id, certified=certified, dedicated=dedicated,
                          public_ips=public_ips)
            created = row is None
            if row is None:
                await conn.execute(f.insert().values(name=name, state="Active", owner_ns=owner.namespace,
                                                     owner_uid=owner.uid, **values))
            elif row.state == "Closed":
                raise errors.Conflict(f"farm {name!r} was closed on the ledger; use a new name")
            else:
                if adopt:
                    values.update(owner_ns=owner.namespace, owner_uid=owner.uid)
                await conn.execute(f.update().where(f.c.name == name).values(**values))
            row = (await conn.execute(self._farm_query().where(f.c.name == name))).one()
            return self._farm(row, created)

    async def _payout_account(self, conn: AsyncConnection, farm: Any | None, namespace: str,
                              payout: str) -> records.Account:
        """The farm's payout account: ``namespace/payout`` (``payout_account_name``), made on first use, shared by
        the farms of this namespace that name the same ``payout``. It is never a twin's (a '/' is in no twin's
        name), so a Farm squats no name a twin may register later, and never another namespace's. A farm still
        paid into a payout account named before version 6 (adopted now) has that account renamed, with its balance,
        when no farm of another namespace is paid there too."""
        a, f = schema.accounts, schema.farms
        target = payout_account_name(namespace, payout)
        if farm is not None and farm.payout == payout:
            others = (await conn.execute(sa.select(sa.func.count()).select_from(f).where(
                f.c.account_id == farm.account_id, f.c.owner_ns.not_in(("", namespace))))).scalar_one()
            exists = (await conn.execute(sa.select(a.c.id).where(a.c.name == target))).first()
            if not others and exists is None:
                await conn.execute(a.update().where(a.c.id == farm.account_id, a.c.role == "payout").values(name=target))
        return await self._ensure_account(conn, target, "", role="payout")

    async def observe_farm(self, *, name: str) -> records.Farm | None:
        return await self._farm_observations.submit(name)

    async def _observe_farm_batch(self, asked: Sequence[str]) -> list[records.Farm | None]:
        """Concurrent lookups (every Node's reconcile reads its farm: a thousand at once after a restart) in one
        query."""
        async with self._read() as conn:
            rows = (await conn.execute(self._farm_query().where(schema.farms.c.name.in_(set(asked))))).all()
        found = {r.name: self._farm(r) for r in rows}
        return [found.get(n) for n in asked]

    async def list_farms(self) -> list[records.Farm]:
        async with self._read() as conn:
            rows = (await conn.execute(self._farm_query().order_by(schema.farms.c.name))).all()
        return [self._farm(r) for r in rows]

    async def close_farm(self, *, name: str, owner: records.Owner) -> None:
        """Close the farm ``owner`` made; deleting an object that never owned the name changes nothing."""
        f, n = schema.farms, schema.nodes
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(f).where(f.c.name == name))).first()
            if row is None or row.state == "Closed" or not _owned(row, owner):
                return  # already gone, or another object's record: deletion is idempotent and touches nothing
            active = (await conn.execute(
                sa.select(n.c.name).where(n.c.farm_id == row.id, n.c.state == "Active").order_by(n.c.name))).scalars().all()
            if active:
                raise errors.Conflict(f"farm {name!r} still has {len(active)} active node(s)", blockers=tuple(active))
            await conn.execute(f.update().where(f.c.id == row.id).values(state="Closed"))

    # ------------------------------------------------------------------ nodes
    def _node_query(self) -> sa.Select[Any]:
        n, f = schema.nodes, schema.farms
        return sa.select(n, f.c.name.label("farm")).join(f, f.c.id == n.c.farm_id)

    def _node(self, row: Any, created: bool = False) -> records.Node:
        return records.Node(row.id, row.name, row.farm, _res(row), row.country, row.city, row.certified,
                            row.public_key, row.state, created, _owner(row))

    async def ensure_node(
        self, *, name: str, owner: records.Owner, farm: str, resources: Resources, country: str, city: str,
        certified: bool, public_key: str, now: int, farm_consent: str = "",
    ) -> records.Node:
        """Register or update the node ``owner`` made. It joins ``farm`` only if the farm's owner agreed: the farm
        is of the node's namespace, or ``farm_consent`` is the farm owner key's signature over (farm, namespace,
        node, node key). Concurrent calls are answered together (``_register_batch``)."""
        problems = units.node_minimum_violations(resources)
        if problems:
            raise errors.InvalidRequest(f"node {name!r}: " + "; ".join(problems))
        if not identity.is_public_key(public_key):
            raise errors.InvalidRequest(f"node {name!r}: public key is not a base64 ed25519 public key")
        return await self._registrations.submit(Registration(name, owner, farm, resources, country, city, public_key,
                                                             now, farm_consent))

    async def _register_batch(self, batch: Sequence[Registration]) -> list[records.Node | errors.LedgerError]:
        """Concurrent ensure_node calls (a thousand Nodes created at once, or resumed after a restart; issue 17: one
        read and one write transaction each held a Node's reconcile ~2 s in a burst): one read answers every node
        registered exactly so, with no write lock (every resume of every node asks); the rest share one write
        transaction (``_write_registrations``)."""
        n, f = schema.nodes, schema.farms
        async with self._read() as conn:
            rows = {r.name: r for r in (await conn.execute(
                self._node_query().where(n.c.name.in_({g.name for g in batch})))).all()}
            farms = {r.name: r for r in (await conn.execute(
                sa.select(f).where(f.c.name.in_({g.farm for g in batch})))).all()}
        out: list[records.Node | errors.LedgerError | None] = [
            self._node(rows[g.name]) if _registered_as_is(rows.get(g.name), farms.get(g.farm), g) else None
            for g in batch]
        todo = [i for i, answer in enumerate(out) if answer is None]
        for i, answer in zip(todo, await self._write_all_or_each([batch[i] for i in todo]), strict=True):
            out[i] = answer
        return [answer for answer in out if answer is not None]  # every one is answered by now

    async def _write_all_or_each(self, batch: Sequence[Registration]) -> list[records.Node | errors.LedgerError]:
        """``_write_registrations`` of the whole batch; if the database refuses its transaction (a check of its own,
        a value a column cannot hold), each item again in a transaction of its own: one node's refusal is never
        another's."""
        if not batch:
            return []
        try:
            return await self._write_registrations(batch)
        except errors.LedgerError as err:
            if len(batch) == 1:
                return [err]
        return [answer for g in batch for answer in await self._write_all_or_each([g])]

    async def _write_registrations(self, batch: Sequence[Registration]) -> list[records.Node | errors.LedgerError]:
        """ensure_node's checks and writes for each of ``batch`` in one write transaction, in order, against the
        batch's running state: a node this batch registers holds its name and its key for the later ones, as a
        committed one would. The nodes, their keys' holders, the farms and what the nodes carry are one read each;
        every new node is one insert."""
        n, f = schema.nodes, schema.farms
        names = {g.name for g in batch}
        answers: list[tuple[str, bool] | errors.LedgerError] = []  # (name, created) or the item's refusal
        new: dict[str, dict[str, Any]] = {}  # name → the values of the node this batch inserts
        async with self._tx() as conn:
            rows: dict[str, Any] = {r.name: r for r in (await conn.execute(
                sa.select(n).where(n.c.name.in_(names)))).all()}
            holders: dict[str, set[str]] = {}  # a set: a migrated ledger may have two nodes on one key
            for r in (await conn.execute(sa.select(n.c.name, n.c.public_key).where(
                    n.c.public_key.in_({g.public_key for g in batch}) | n.c.name.in_(names)))).all():
                holders.setdefault(r.public_key, set()).add(r.name)
            farms = {r.name: r for r in (await conn.execute(
                sa.select(f).where(f.c.name.in_({g.farm for g in batch})))).all()}
            used = await self._used_on_nodes(conn, [r.id for r in rows.values()])
            for g in batch:
                try:
                    answers.append((g.name, await self._write_registration(conn, g, rows, holders, farms, used, new)))
                except errors.LedgerError as err:
                    answers.append(err)
            if new:
                await conn.execute(n.insert(), list(new.values()))
            written = {r.name: r for r in (await conn.execute(self._node_query().where(n.c.name.in_(
                [a[0] for a in answers if isinstance(a, tuple)])))).all()}
        return [a if isinstance(a, errors.LedgerError) else self._node(written[a[0]], a[1]) for a in answers]

    async def _write_registration(self, conn: AsyncConnection, g: Registration, rows: dict[str, Any],
                                  holders: dict[str, set[str]], farms: dict[str, Any], used: dict[int, Resources],
                                  new: dict[str, dict[str, Any]]) -> bool:
        """One node of ``_write_registrations``: True if it is new. ``rows`` (name → node row), ``holders`` (public
        key → the names of the nodes on it) and ``new`` (name → the values to insert) are updated with what it writes."""
        n = schema.nodes
        row = rows.get(g.name)
        adopt = row is not None and _claim("node", g.name, row, g.owner)
        if holders.get(g.public_key, set()) - {g.name}:
            # one key, one node (as one key, one twin): a node's uptime, capacity and weight are its key's alone
            raise errors.NameTaken(f"node {g.name!r}: its public key is registered for another node; every node "
                                   f"has a key of its own (tfgrid-operator keygen)")
        farm_row = farms.get(g.farm)
        if farm_row is None or farm_row.state != "Active":
            raise errors.NotFound(f"farm {g.farm!r} is not registered on the ledger")
        if not _may_join(farm_row, g.owner, g.name, g.public_key, g.farm_consent):
            raise errors.NotAuthorized(
                f"farm {g.farm!r} is of another namespace and its owner has not signed consent for node {g.name!r} "
                f"of this namespace (tfgrid-operator farm-consent)")
        # spec.certified is only what the farmer expects: the council certifies (backend/sql/capacity.py)
        values: dict[str, Any] = dict(farm_id=farm_row.id, country=g.country, city=g.city, public_key=g.public_key,
                                      **g.resources.as_dict())
        if row is not None:
            if row.state == "Closed":
                raise errors.Conflict(f"node {g.name!r} was closed on the ledger; use a new name")
            if row.farm_id != farm_row.id:  # its capacity and weight would count for a second farm (§5)
                raise errors.Conflict(f"node {g.name!r} is registered in another farm; a node's farm cannot change")
            carried = used.get(row.id, Resources())
            if not carried.fits_in(g.resources):
                raise errors.Conflict(f"node {g.name!r} cannot shrink below what its deployments reserve "
                                      f"({carried.as_dict()})")
            holders.get(row.public_key, set()).discard(g.name)  # a node that changes its key lets go of the old one
        holders.setdefault(g.public_key, set()).add(g.name)
        pending = _Pending(owner_ns=g.owner.namespace, owner_uid=g.owner.uid, state="Active", farm_id=farm_row.id,
                           public_key=g.public_key, id=None if row is None else row.id)
        if row is None or g.name in new:  # new, or made by an earlier item of this batch (the same object again)
            new[g.name] = {**new.get(g.name, dict(
                name=g.name, state="Active", created_at=g.now, connection_price=self.config.connection_price_musd,
                owner_ns=g.owner.namespace, owner_uid=g.owner.uid, certified=False)), **values}
            rows[g.name] = pending
            return row is None  # the same object again finds the row the earlier item made, as a committed one
        if adopt:
            values.update(owner_ns=g.owner.namespace, owner_uid=g.owner.uid)
        await conn.execute(n.update().where(n.c.id == row.id).values(**values))
        rows[g.name] = pending
        return False

    async def observe_node(self, *, name: str) -> records.Node | None:
        async with self._read() as conn:
            row = (await conn.execute(self._node_query().where(schema.nodes.c.name == name))).first()
        return None if row is None else self._node(row)

    async def _used_on_nodes(self, conn: AsyncConnection, node_ids: Iterable[int]) -> dict[int, Resources]:
        """What the live contracts on each of ``node_ids`` reserve (a node carrying none is left out)."""
        c = schema.contracts
        rows = (await conn.execute(sa.select(
            c.c.node_id, sa.func.sum(c.c.cru).label("cru"), sa.func.sum(c.c.mru).label("mru"),
            sa.func.sum(c.c.sru).label("sru"), sa.func.sum(c.c.hru).label("hru"),
        ).where(c.c.node_id.in_(set(node_ids)), c.c.state.in_(LIVE)).group_by(c.c.node_id))).all()
        return {r.node_id: Resources(int(r.cru), int(r.mru), int(r.sru), int(r.hru)) for r in rows}

    async def _used_on_node(self, conn: AsyncConnection, node_id: int) -> Resources:
        return (await self._used_on_nodes(conn, [node_id])).get(node_id, Resources())

    async def close_node(self, *, name: str, owner: records.Owner, now: int) -> None:
        n, c = schema.nodes, schema.contracts
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(n).where(n.c.name == name))).first()
            if row is None or row.state == "Closed" or not _owned(row, owner):
                return
            keys = (await conn.execute(
                sa.select(c.c.key).where(c.c.node_id == row.id, c.c.state.in_(LIVE)).order_by(c.c.key))).scalars().all()
            if keys:
                raise errors.Conflict(f"node {name!r} still carries {len(keys)} deployment(s): {', '.join(keys[:5])}",
                                      blockers=tuple(keys))
            await conn.execute(n.update().where(n.c.id == row.id).values(state="Closed", closed_at=now))

    async def record_uptime(self, *, node: str, ts: int, uptime: int, signature: str, now: int) -> int:
        """Verify and count one signed uptime report; returns the seconds credited this period."""
        if not 0 <= uptime <= uptime_mod.MAX_UPTIME_S:  # invariant 6: bounded before it reaches a BIGINT column
            raise errors.InvalidRequest(f"uptime report for node {node!r}: an uptime of {uptime} s is outside "
                                        f"[0, {uptime_mod.MAX_UPTIME_S}]")
        again = await self._uptime_counted(node=node, ts=ts, uptime=uptime, signature=signature)
        if again is not None:
            return again
        n = schema.nodes
        # nothing placement reads changes but when the node was last seen (no pool token trigger watches it): the pool
        # kept in this process follows it after the commit; other processes' pools see it when read again
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(n).where(n.c.name == node))).first()
            if row is None or row.state != "Active":
                raise errors.NotFound(f"node {node!r} is not registered on the ledger")
            _verify_uptime(row.public_key, node, ts, uptime, signature)
            period = self._minting_period_at(ts)
            last = row.last_report_ts
            if last is not None and ts == last:  # before the clock check: a restart re-lists every Lease
                return await self._credited(conn, row.id, ts)  # the same report again: counted once, quietly
            if abs(ts - now) > uptime_mod.TIMESTAMP_DRIFT_S:
                raise errors.Replayed(f"uptime report for node {node!r} is {ts - now:+d} s off the ledger's clock")
            if last is not None and ts < last:
                raise errors.Replayed(f"uptime report for node {node!r} at {ts} is not newer than the last one")
            if last is not None and last < period.start and ts - period.start < uptime:
                # §3.1: the first report after a period's end credits the previous period up to its exact end
                boundary = period.start
                before = self._minting_period_at(boundary - 1)
                minted = (await conn.execute(sa.select(schema.mints.c.node_id).where(
                    schema.mints.c.node_id == row.id, schema.mints.c.period == before.index))).first()
                if minted is None and last >= before.start:
                    await self._fold(conn, row.id, before, boundary, uptime - (ts - boundary), row.created_at)
            total = await self._fold(conn, row.id, period, ts, uptime, row.created_at)
            await conn.execute(n.update().where(n.c.id == row.id).values(last_report_ts=ts))
        self._pool_seen(node, ts)
        return total

    async def _uptime_counted(self, *, node: str, ts: int, uptime: int, signature: str) -> int | None:
        """The seconds credited this period when this very report (its node's key signed it) was counted already,
        read without the write lock: a restart re-lists every Lease, and each took a write transaction to find
        that it changes nothing. None: anything else, which takes record_uptime's checked path."""
        n = schema.nodes
        async with self._read() as conn:
            row = (await conn.execute(sa.select(n.c.id, n.c.state, n.c.public_key, n.c.last_report_ts)
                                      .where(n.c.name == node))).first()
            if row is None or row.state != "Active" or row.last_report_ts is None or row.last_report_ts != ts:
                return None
            try:
                _verify_uptime(row.public_key, node, ts, uptime, signature)
            except errors.BadSignature:
                return None  # the checked path refuses it
            return await self._credited(conn, row.id, ts)

    async def _credited(self, conn: AsyncConnection, node_id: int, ts: int) -> int:
        """The seconds credited to the node in the minting period of ``ts``."""
        u = schema.uptime
        return int((await conn.execute(sa.select(u.c.total).where(
            u.c.node_id == node_id, u.c.period == self._minting_period_at(ts).index))).scalar() or 0)

    async def _fold(self, conn: AsyncConnection, node_id: int, period: minting.Period, ts: int, up: int,
                    registered_at: int) -> int:
        """Fold one report into the node's period; the first credit never reaches back before the node was
        registered on the ledger (wall time on the grid bounds the credit, issue 13 invariant 4)."""
        u = schema.uptime
        prev = (await conn.execute(sa.select(u).where(u.c.node_id == node_id, u.c.period == period.index))).first()
        state = dataclasses.replace(_uptime_state(prev, period), period_start=max(period.start, registered_at))
        new = uptime_mod.credit(state, ts=ts, uptime=up)
        values = dict(total=new.total, last_ts=new.last_ts, last_uptime=new.last_uptime, boot_ts=new.boot_ts,
                      violation=str(new.violation) if new.violation else None, reports=new.reports)
        if prev is None:
            await conn.execute(u.insert().values(node_id=node_id, period=period.index, **values))
        else:
            await conn.execute(u.update().where(u.c.node_id == node_id, u.c.period == period.index).values(**values))
        return new.total

    async def node_summaries(self, *, now: int) -> dict[str, records.NodeSummary]:
        n, f, c, u, m = schema.nodes, schema.farms, schema.contracts, schema.uptime, schema.mints
        period = self._minting_period_at(now)
        async with self._read() as conn:
            nodes = (await conn.execute(sa.select(n, f.c.name.label("farm")).join(f, f.c.id == n.c.farm_id)
                                        .where(n.c.state == "Active"))).all()
            used = {r.node_id: r for r in (await conn.execute(
                sa.select(c.c.node_id, sa.func.sum(c.c.cru).label("cru"), sa.func.sum(c.c.mru).label("mru"),
                          sa.func.sum(c.c.sru).label("sru"), sa.func.sum(c.c.hru).label("hru"),
                          sa.func.count().label("n"))
                .where(c.c.state.in_(LIVE)).group_by(c.c.node_id))).all()}
            ups = {r.node_id: r for r in (await conn.execute(sa.select(u).where(u.c.period == period.index))).all()}
            minted = {r.node_id: int(r.total) for r in (await conn.execute(
                sa.select(m.c.node_id, sa.func.sum(m.c.amount).label("total")).group_by(m.c.node_id))).all()}
            last_period = sa.select(m.c.node_id, sa.func.max(m.c.period).label("p")).group_by(m.c.node_id).subquery()
            last = {r.node_id: r for r in (await conn.execute(
                sa.select(m).join(last_period, sa.and_(m.c.node_id == last_period.c.node_id,
                                                      m.c.period == last_period.c.p)))).all()}
        out = {}
        for r in nodes:
            us, up, lm = used.get(r.id), ups.get(r.id), last.get(r.id)
            total = int(up.total) if up else 0
            out[r.name] = records.NodeSummary(
                name=r.name, farm=r.farm, resources=_res(r),
                used=Resources(int(us.cru), int(us.mru), int(us.sru), int(us.hru)) if us else Resources(),
                contracts=int(us.n) if us else 0, uptime_s=total,
                uptime_permille=uptime_mod.uptime_permille(total, max(1, min(now, period.end) - period.start)),
                last_report_ts=r.last_report_ts, violation=up.violation if up else None,
                minted_total=minted.get(r.id, 0), last_mint=lm.amount if lm else None,
                last_mint_period=lm.period if lm else None, last_mint_reason=lm.reason if lm else None,
                owner=_owner(r), node_id=r.id)
        return out

