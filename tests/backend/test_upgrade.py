"""Upgrading a version-5 ledger through version 6 (issue 13's last gaps) and version 7 (compact receipts) to version 8
(how far each contract is billed) and 9 (the placement pool's token), on SQLite and PostgreSQL: proposals get their
nonce columns, the debt and node-key indexes are made, payout accounts are named within their farm's namespace (each
keeps its balance and payouts), bills get their quote and bill_quotes is made (on PostgreSQL bills lose their foreign
keys and contracts get fillfactor 50), contracts get billed_until from their bills, meta gets the placement pool's
token, contracts get fillfactor 40 on PostgreSQL (10), and an upgrade never fails on what an older ledger allowed. A
new ledger is made at version 10 directly, with the same parts."""

from __future__ import annotations

import sqlalchemy as sa

import ledger_setup
from ledger_audit import conserved
from tfgrid_operator import backend
from tfgrid_operator.backend import errors, records, schema
from tfgrid_operator.backend.sql.engine import POOL_COLUMNS, POOL_TOKEN
from tfgrid_operator.domain import identity, scheduling

OWNER = identity.KeyPair.generate()
A, B = records.Owner("team-a", "uid-a"), records.Owner("team-b", "uid-b")


async def back_to_version_5(conn) -> None:
    """Make a ledger look like version 5 again: payout accounts named as their farm named them, no proposal nonce
    columns, none of version 6's indexes; none of version 7's parts (no bill_quotes, no bills.quote_id; on
    PostgreSQL bills with their foreign keys and contracts with the default fillfactor); nor version 8's."""
    await back_to_version_7(conn)
    await conn.execute(sa.text("DROP TABLE bill_quotes"))
    await conn.execute(sa.text("ALTER TABLE bills DROP COLUMN quote_id"))
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("ALTER TABLE bills ADD CONSTRAINT bills_contract_id_fkey FOREIGN KEY (contract_id) "
                                   "REFERENCES contracts (id), ADD CONSTRAINT bills_rates_id_fkey FOREIGN KEY "
                                   "(rates_id) REFERENCES bill_rates (id)"))
        await conn.execute(sa.text("ALTER TABLE contracts RESET (fillfactor)"))
    for index in ("one_proposal_per_nonce", "debts_by_account", "one_node_per_key"):
        await conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
    for column in ("nonce", "council_key", "signed_digest"):
        await conn.execute(sa.text(f"ALTER TABLE proposals DROP COLUMN {column}"))
    a = schema.accounts
    for row in (await conn.execute(sa.select(a.c.id, a.c.name).where(a.c.role == "payout"))).all():
        await conn.execute(a.update().where(a.c.id == row.id).values(name=row.name.partition("/")[2]))
    await conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="5"))


async def back_to_version_7(conn) -> None:
    """Make a ledger look like version 7 again: contracts without billed_until, no placement pool token."""
    await conn.execute(sa.text("ALTER TABLE contracts DROP COLUMN billed_until"))
    await conn.execute(schema.meta.delete().where(schema.meta.c.key == POOL_TOKEN))
    for table in POOL_COLUMNS:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text(f"DROP TRIGGER IF EXISTS pool_{table} ON {table}"))
        else:
            for op in ("insert", "delete", "update"):
                await conn.execute(sa.text(f"DROP TRIGGER IF EXISTS pool_{table}_{op}"))
    await conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="7"))


async def back_to_version_9(conn) -> None:
    """Make a ledger look like version 9 again: on PostgreSQL contracts with fillfactor 50."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("ALTER TABLE contracts SET (fillfactor = 50)"))
    await conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="9"))


async def version(lg) -> str:
    async with lg.engine.connect() as conn:
        return (await conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version"))).scalar()


async def has_version_10(lg) -> None:
    """Version 7's to 10's parts are there: bill_quotes, bills.quote_id, contracts.billed_until and the placement
    pool's token; on PostgreSQL no foreign key on bills and contracts with fillfactor 40."""
    def inspect(sync):
        found = sa.inspect(sync)
        return ("bill_quotes" in found.get_table_names(), {c["name"] for c in found.get_columns("bills")},
                found.get_foreign_keys("bills"), {c["name"] for c in found.get_columns("contracts")})
    async with lg.engine.connect() as conn:
        quotes, columns, keys, contract_columns = await conn.run_sync(inspect)
        assert quotes and "quote_id" in columns and "billed_until" in contract_columns
        token = (await conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == POOL_TOKEN))).scalar()
        assert token and len(token) == 32
        triggers = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal" if conn.dialect.name == "postgresql" \
            else "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        found = set((await conn.execute(sa.text(triggers))).scalars())
        assert {t for t in found if t.startswith("pool_")} == (
            {f"pool_{t}" for t in POOL_COLUMNS} if conn.dialect.name == "postgresql"
            else {f"pool_{t}_{op}" for t in POOL_COLUMNS for op in ("insert", "delete", "update")})
        if conn.dialect.name == "postgresql":
            assert keys == []
            options = (await conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE relname = 'contracts'"))).scalar()
            assert "fillfactor=40" in (options or []) and schema.CONTRACTS_FILLFACTOR == 40


async def test_a_new_ledger_is_made_at_version_10(ledger):
    assert (await version(ledger), schema.SCHEMA_VERSION) == ("10", 10)
    await has_version_10(ledger)


async def test_payout_accounts_are_renamed_into_their_namespace_with_their_balance(ledger_url):
    cfg = backend.LedgerConfig(minting_epoch=0)
    lg = await backend.open_backend(ledger_url, cfg)
    for farm, owner, payout in (("fa", A, "farmer"), ("fa2", A, "farmer"), ("fb", B, "bpayout")):
        await lg.ensure_farm(name=farm, owner=owner, owner_key=OWNER.public_key, payout_account=payout,
                             certified=False, dedicated=False, public_ips=0)
    await lg.ensure_farm(name="fc", owner=B, owner_key=OWNER.public_key, payout_account="shared", certified=False,
                         dedicated=False, public_ips=0)
    await lg.ensure_farm(name="fd", owner=A, owner_key=OWNER.public_key, payout_account="shared", certified=False,
                         dedicated=False, public_ips=0)
    await lg.ensure_node(name="n1", owner=A, farm="fa", resources=ledger_setup.Resources(cru=2, mru=4, sru=100),
                         country="", city="", certified=False, public_key=OWNER.public_key, now=0)
    async with lg.engine.begin() as conn:
        a = schema.accounts  # "shared" was used by farms of two namespaces (version 5 named it once for both)
        await conn.execute(schema.farms.update().where(schema.farms.c.name == "fd").values(
            account_id=sa.select(a.c.id).where(a.c.name == "team-b/shared").scalar_subquery()))
        await conn.execute(a.delete().where(a.c.name == "team-a/shared"))
        await back_to_version_5(conn)
        await conn.execute(a.update().where(a.c.name == "farmer").values(balance=7))  # paid before the upgrade
        # two nodes sharing a key, as version 5 allowed
        n = schema.nodes
        row = (await conn.execute(sa.select(n).where(n.c.name == "n1"))).one()._asdict()
        await conn.execute(n.insert().values({**{k: v for k, v in row.items() if k != "id"}, "name": "n2"}))
    await lg.close()
    lg = await backend.open_backend(ledger_url, cfg)
    try:
        assert await version(lg) == str(schema.SCHEMA_VERSION)
        await has_version_10(lg)
        farms = {f.name: f.payout_account for f in await lg.list_farms()}
        assert farms == {"fa": "team-a/farmer", "fa2": "team-a/farmer", "fb": "team-b/bpayout", "fc": "shared",
                         "fd": "shared"}  # one of two namespaces: kept as it was
        assert (await lg.get_account(name="team-a/farmer")).balance == 7
        # the next registration moves fc and fd to accounts of their own namespaces; "shared" keeps its money
        for farm, owner in (("fc", B), ("fd", A)):
            f = await lg.ensure_farm(name=farm, owner=owner, owner_key=OWNER.public_key, payout_account="shared",
                                     certified=False, dedicated=False, public_ips=0)
            assert f.payout_account == f"{owner.namespace}/shared"
        # the shared node key stays as the old ledger had it; no new node may take a registered key
        try:
            await lg.ensure_node(name="n3", owner=A, farm="fa", resources=ledger_setup.Resources(cru=2, mru=4, sru=100),
                                 country="", city="", certified=False, public_key=OWNER.public_key, now=0)
            raise AssertionError("a third node took a registered key")
        except errors.NameTaken:
            pass
        await conserved(lg, 7)
    finally:
        await lg.close()


async def test_a_version_7_ledger_gets_how_far_each_contract_is_billed(ledger_url):
    """Version 8 reads how far a contract is billed from the contract (billed_until) instead of its bills: the
    upgrade computes it from the bills each contract has (none: NULL), and billing goes on from there exactly as
    it would have: a resized contract's next bill starts where its partial bill ended, a period billed before the
    upgrade is not billed again, money is conserved."""
    H, cfg = 3600, backend.LedgerConfig(minting_epoch=0)
    lg = await backend.open_backend(ledger_url, cfg)
    node_key = identity.KeyPair.generate()
    await ledger_setup.farm_and_node(lg, owner_key=OWNER, node_key=node_key,
                                     resources=ledger_setup.Resources(cru=8, mru=32, sru=1000))
    twin = identity.KeyPair.generate()
    await lg.ensure_account(name="alice", public_key=twin.public_key)
    await lg.fund(name="alice", amount=10**15, now=0)
    small = ledger_setup.Resources(cru=1, mru=2, sru=25)
    for key in ("ns/billed", "ns/resized"):
        await lg.open_contract(key=key, **ledger_setup.paid_by(twin), request=scheduling.Request(resources=small), now=0)
    await lg.bill_period(period=0, now=H)
    await lg.bill_period(period=1, now=2 * H)
    await lg.resize_contract(key="ns/resized", owner_uid=ledger_setup.OWN.uid, resources=small + small, public_ips=0,
                             now=2 * H + 1200)  # a partial bill of period 2, to 2 H + 1200
    await ledger_setup.report_uptime(lg, node="n0", ts=2 * H + 1700, uptime=2 * H + 1700, key=node_key)
    await lg.open_contract(key="ns/new", **ledger_setup.paid_by(twin), request=scheduling.Request(resources=small),
                           now=2 * H + 1800)  # never billed
    async with lg.engine.begin() as conn:
        await back_to_version_7(conn)
    await lg.close()
    lg = await backend.open_backend(ledger_url, cfg)
    try:
        assert await version(lg) == "10"
        await has_version_10(lg)
        c = schema.contracts
        async with lg.engine.connect() as conn:
            until = dict((await conn.execute(sa.select(c.c.key, c.c.billed_until))).all())
        assert until == {"ns/billed": 2 * H, "ns/resized": 2 * H + 1200, "ns/new": None}
        assert (await lg.bill_period(period=1, now=3 * H)).rows_written == 0  # billed before the upgrade
        assert (await lg.bill_period(period=2, now=3 * H)).rows_written == 3
        windows = {key: [(b.start, b.until) for b in await lg.bills(key=key, period=2)] for key in until}
        assert windows == {"ns/billed": [(2 * H, 3 * H)], "ns/resized": [(2 * H, 2 * H + 1200), (2 * H + 1200, 3 * H)],
                           "ns/new": [(2 * H + 1800, 3 * H)]}
        async with lg.engine.connect() as conn:
            assert set((await conn.execute(sa.select(c.c.billed_until))).scalars()) == {3 * H}
        assert (await lg.bill_period(period=2, now=3 * H + 5)).rows_written == 0
        await conserved(lg, 10**15)
    finally:
        await lg.close()


async def test_a_version_9_ledger_gets_room_on_its_contracts_pages(ledger_url):
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig())
    async with lg.engine.begin() as conn:
        await back_to_version_9(conn)
    await lg.close()
    lg = await backend.open_backend(ledger_url, backend.LedgerConfig())
    try:
        assert await version(lg) == "10"
        await has_version_10(lg)
    finally:
        await lg.close()
