"""Ledger tables (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

Idempotency lives here as unique keys: one bill per (contract, period), one mint per (node, period),
one vote per (proposal, farm), one active contract per deployment key (a partial unique index).
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 5  # 2: contracts carry their billing totals (billed_total, last_billed_at, last_discount)
# 5: attested capacity history, mint receipts, vote sequence numbers (issue 13 invariants 3 and 5, issue 14)

metadata = sa.MetaData()
Money = sa.BigInteger  # smallest units; never Numeric or float

meta = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(253), nullable=False, unique=True),
    sa.Column("public_key", sa.String(64), nullable=False, server_default=""),
    sa.Column("balance", Money, nullable=False, server_default="0"),
    sa.CheckConstraint("balance >= 0", name="balance_never_negative"),
)

farms = sa.Table(
    "farms", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(253), nullable=False, unique=True),
    sa.Column("owner_key", sa.String(64), nullable=False),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("certified", sa.Boolean, nullable=False),
    sa.Column("dedicated", sa.Boolean, nullable=False),
    sa.Column("public_ips", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
)

nodes = sa.Table(
    "nodes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(253), nullable=False, unique=True),
    sa.Column("farm_id", sa.Integer, sa.ForeignKey("farms.id"), nullable=False, index=True),
    sa.Column("cru", sa.Integer, nullable=False),
    sa.Column("mru", sa.Integer, nullable=False),
    sa.Column("sru", sa.Integer, nullable=False),
    sa.Column("hru", sa.Integer, nullable=False),
    sa.Column("country", sa.String(64), nullable=False),
    sa.Column("city", sa.String(64), nullable=False),
    sa.Column("certified", sa.Boolean, nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("connection_price", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("closed_at", sa.BigInteger),
    sa.Column("last_report_ts", sa.BigInteger),
)

uptime = sa.Table(
    "uptime", metadata,
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id"), primary_key=True),
    sa.Column("period", sa.Integer, primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("last_ts", sa.BigInteger, nullable=False),
    sa.Column("last_uptime", sa.BigInteger, nullable=False),
    sa.Column("boot_ts", sa.BigInteger),
    sa.Column("violation", sa.String(32)),
    sa.Column("reports", sa.Integer, nullable=False),
)

contracts = sa.Table(
    "contracts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(512), nullable=False),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id"), nullable=False, index=True),
    sa.Column("cru", sa.Integer, nullable=False),
    sa.Column("mru", sa.Integer, nullable=False),
    sa.Column("sru", sa.Integer, nullable=False),
    sa.Column("hru", sa.Integer, nullable=False),
    sa.Column("public_ips", sa.Integer, nullable=False),
    sa.Column("dedicated", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("grace_since", sa.BigInteger),
    sa.Column("deleted_at", sa.BigInteger),
    sa.Column("deleted_reason", sa.String(32)),
    sa.Column("overdraft", Money, nullable=False, server_default="0"),
    # kept by the billing transaction that inserts the bills, so a contract's totals are a row, not a scan of bills
    sa.Column("billed_total", Money, nullable=False, server_default="0"),  # sum of its bills' amounts
    sa.Column("last_billed_at", sa.BigInteger),  # its latest bill's billed_at
    sa.Column("last_discount", sa.String(16)),  # its latest bill's discount level
    sa.Index(
        "one_live_contract_per_key", "key", unique=True,
        sqlite_where=sa.text("state != 'Deleted'"), postgresql_where=sa.text("state != 'Deleted'"),
    ),
    sa.Index("contracts_by_state", "state"),
    sa.Index("contracts_by_key", "key", "id"),  # the latest contract of a Deployment
)

bills = sa.Table(
    "bills", metadata,
    sa.Column("contract_id", sa.Integer, sa.ForeignKey("contracts.id"), primary_key=True),
    sa.Column("period", sa.Integer, primary_key=True),
    # the window's end: a resize bills [start, now) at the old size, the period's run bills [now, end) at the new
    sa.Column("until", sa.BigInteger, primary_key=True),
    sa.Column("seconds", sa.Integer, nullable=False),
    sa.Column("amount", Money, nullable=False),  # due for the window, after discount
    sa.Column("paid", Money, nullable=False),  # taken from the balance now (incl. settled overdraft)
    sa.Column("discount", sa.String(16), nullable=False),
    sa.Column("billed_at", sa.BigInteger, nullable=False),
)

mints = sa.Table(
    "mints", metadata,
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id"), primary_key=True),
    sa.Column("period", sa.Integer, primary_key=True),
    sa.Column("uptime_permille", sa.Integer, nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("receipt", sa.Text),  # 5: the mint's inputs as JSON (issue 14); NULL for mints made before
)

proposals = sa.Table(
    "proposals", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(512), nullable=False, unique=True),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("threshold", sa.Integer, nullable=False),
    sa.Column("end_ts", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("executed_at", sa.BigInteger),
)

votes = sa.Table(
    "votes", metadata,
    sa.Column("proposal_id", sa.Integer, sa.ForeignKey("proposals.id"), primary_key=True),
    sa.Column("farm_id", sa.Integer, sa.ForeignKey("farms.id"), primary_key=True),
    sa.Column("approve", sa.Boolean, nullable=False),
    sa.Column("weight", sa.Integer, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),  # 5: the counted vote's sequence number
)

vetoes = sa.Table(
    "vetoes", metadata,
    sa.Column("proposal_id", sa.Integer, sa.ForeignKey("proposals.id"), primary_key=True),
    sa.Column("member_key", sa.String(64), primary_key=True),
)

# 5: what a node's key attested (its agent's measured capacity) and what the council certified, as a history:
# minting weighs each entry by the seconds it was held, DAO weight reads the latest (issue 13, invariant 3)
capacity = sa.Table(
    "capacity", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id"), nullable=False),
    sa.Column("from_ts", sa.BigInteger, nullable=False),
    sa.Column("cru", sa.Integer, nullable=False),
    sa.Column("mru", sa.Integer, nullable=False),
    sa.Column("sru", sa.Integer, nullable=False),
    sa.Column("hru", sa.Integer, nullable=False),
    sa.Column("certified", sa.Boolean, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # agent | council | decertified
    sa.Column("signed_ts", sa.BigInteger, nullable=False),  # the signed statement's own time (replay guard)
    sa.Column("signer", sa.String(64), nullable=False),  # the key that signed it
    sa.Index("capacity_by_node", "node_id", "id"),
)
