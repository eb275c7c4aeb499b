"""Ledger tables (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

Idempotency lives here as unique keys: one bill per (contract, period), one mint per (node, period),
one vote per (proposal, farm), one active contract per deployment key (a partial unique index).
"""

from __future__ import annotations

import sqlalchemy as sa

from tfgrid_operator.domain.money import MAX_UNITS

# 2: contracts carry their billing totals (billed_total, last_billed_at, last_discount)
# 3: ownership: farms, nodes and contracts name the object (namespace, uid) that made them; accounts have a
#    role (only twins pay), a twin key is unique, contracts keep the payer proof they were verified with;
#    balances and overdrafts are CHECKed within [0, MAX_UNITS]
SCHEMA_VERSION = 3

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
    # twin: a user's account, the only kind that pays; grid: foundation, staking pool; payout: a farm's payout
    sa.Column("role", sa.String(16), nullable=False, server_default="twin"),
    sa.CheckConstraint("balance >= 0", name="balance_never_negative"),
    sa.CheckConstraint(f"balance <= {MAX_UNITS}", name="balance_bounded"),
    # §1.1: an account holds one twin, a twin key belongs to one account
    sa.Index("one_account_per_key", "public_key", unique=True,
             sqlite_where=sa.text("public_key != ''"), postgresql_where=sa.text("public_key != ''")),
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
    # the Farm object that claimed the grid-wide name first; '' only on a ledger migrated from version 2
    sa.Column("owner_ns", sa.String(253), nullable=False, server_default=""),
    sa.Column("owner_uid", sa.String(64), nullable=False, server_default=""),
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
    sa.Column("owner_ns", sa.String(253), nullable=False, server_default=""),
    sa.Column("owner_uid", sa.String(64), nullable=False, server_default=""),
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
    # the Deployment object (uid; the key holds its namespace/name) it was opened for: a new object never inherits it
    sa.Column("owner_uid", sa.String(64), nullable=False, server_default=""),
    # what the ledger verified the payer's agreement with: 'key' (the twin key, from a Secret) or 'grant'
    # (a grant signed by the twin key for this namespace, kept with its signature and expiry)
    sa.Column("proof", sa.String(16), nullable=False, server_default="key"),
    sa.Column("proof_until", sa.BigInteger),
    sa.Column("proof_signature", sa.String(128), nullable=False, server_default=""),
    sa.CheckConstraint(f"overdraft >= 0 AND overdraft <= {MAX_UNITS}", name="overdraft_bounded"),
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
)

vetoes = sa.Table(
    "vetoes", metadata,
    sa.Column("proposal_id", sa.Integer, sa.ForeignKey("proposals.id"), primary_key=True),
    sa.Column("member_key", sa.String(64), primary_key=True),
)
