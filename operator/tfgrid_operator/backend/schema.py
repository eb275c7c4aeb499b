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
# 4: billing version B reserves (contracts.reserve, .cycles, payouts), receipts (bills' inputs, bill_rates),
#    a contract's billing error (isolation) and its last bill's amount
# 5: attested capacity history, mint receipts, vote sequence numbers (issue 13 invariants 3 and 5, issue 14)
# 6: debt follows the payer (a closed contract's overdraft is its payer's, collected from the next funding, with
#    payouts of reason Debt), proposals keep the council signature's nonce (opened once), one node per node key,
#    payout accounts named within their farm's namespace (issue 13: the last gaps)
# 7: compact receipts (a bill points at its bill_quotes row: the shape, window and level's priced steps, shared by
#    every bill alike); bills carry no FOREIGN KEY (PostgreSQL checked one per row: ~1 s of a 100,000-contract
#    hour); contracts leave room on PostgreSQL pages for the hourly update (fillfactor 50: HOT updates)
# 8: contracts carry how far they are billed (billed_until, their latest bill's end), written by the update that
#    writes their totals: the hourly run reads it with the contract instead of looking up each contract's bills
# 9: meta holds the placement pool's token, which triggers replace on every write of what placement reads (a
#    placement batch reuses the node pool the last one left while nothing else wrote; backend/sql/engine.py POOL_TOKEN)
# 10: contracts leave more room on PostgreSQL pages (fillfactor 40): a contract's first bill fills its last bill's
#    columns, so its new version is larger than the row loaded; at 50 a fifth of the first hour's updates did not fit
#    on their page (not HOT: a new page and an entry in each index)
SCHEMA_VERSION = 10

metadata = sa.MetaData()
Money = sa.BigInteger  # smallest units; never Numeric or float
MONEY_MAX = MAX_UNITS  # every amount, balance, reserve and total stays within this (invariant 6), far below int64

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
    # 6: a node key is one node's (a ledger migrated with two nodes sharing a key keeps them, without this index)
    sa.Index("one_node_per_key", "public_key", unique=True),
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

CONTRACTS_FILLFACTOR = 40  # 10: room for every row's next version, larger than the first (tests/backend/test_ledger_contract.py)
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
    sa.Column("last_bill_amount", Money),  # its latest bill's amount
    # 8: its latest bill's end (its bills' greatest "until"; NULL: never billed). Bills are written in window order,
    # each with this update, so a billing run starts a contract's window here (never before) without reading its
    # bills: one index probe per contract an hour, into a table that grows by a row per contract an hour, saved
    sa.Column("billed_until", sa.BigInteger),
    # §2.7 version B: what its bills took from the payer and not yet paid out, and the cycles since the last payout
    sa.Column("reserve", Money, nullable=False, server_default="0"),
    sa.Column("cycles", sa.Integer, nullable=False, server_default="0"),
    sa.Column("billing_error", sa.String(512)),  # why its last bill or payout could not be made (invariant 6)
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
    # 6: what a payer owes (a contract in grace, or closed with its debt unpaid): one look-up per payer
    sa.Index("debts_by_account", "account_id",
             sqlite_where=sa.text("overdraft > 0"), postgresql_where=sa.text("overdraft > 0")),
    # 7: every live contract's row is rewritten once an hour (its totals): room on its page for the new version
    # makes that a HOT update on PostgreSQL (no index entries written); the table takes about twice the space
    postgresql_with={"fillfactor": CONTRACTS_FILLFACTOR},
)

# grants the ledger's keeper revoked at the twin's request: never accepted again, their contracts closed at once
revoked_grants = sa.Table(
    "revoked_grants", metadata,
    sa.Column("signature", sa.String(128), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=False),
)

# No FOREIGN KEY (7): only a billing run writes bills, for the contracts it read under the ledger's write lock in
# the same transaction, and a contract row is never deleted; PostgreSQL checked a foreign key row by row.
bills = sa.Table(
    "bills", metadata,
    sa.Column("contract_id", sa.Integer, primary_key=True),  # contracts.id
    sa.Column("period", sa.Integer, primary_key=True),
    # the window's end: a resize bills [start, now) at the old size, the period's run bills [now, end) at the new
    sa.Column("until", sa.BigInteger, primary_key=True),
    sa.Column("seconds", sa.Integer, nullable=False),
    sa.Column("amount", Money, nullable=False),  # due for the window, after discount
    sa.Column("paid", Money, nullable=False),  # taken from the balance now (incl. settled overdraft)
    sa.Column("discount", sa.String(16), nullable=False),
    sa.Column("billed_at", sa.BigInteger, nullable=False),
    sa.Column("balance", Money),  # the payer's balance the discount level was computed from
    sa.Column("overdraft_before", Money),  # debt carried into this bill (paid counts it)
    sa.Column("cycle", sa.Integer),  # the contract's billing cycle this bill counted as (§2.7), NULL for a partial bill
    # 7: the receipt's shared steps (bill_quotes.id): shape, window, rates, level and each rounding of the amount
    sa.Column("quote_id", sa.Integer),
    # 4-6: the receipt written out on each bill (NULL on bills made since 7, and before 4)
    sa.Column("rates_id", sa.Integer),  # bill_rates.id
    sa.Column("cru", sa.Integer), sa.Column("mru", sa.Integer), sa.Column("sru", sa.Integer), sa.Column("hru", sa.Integer),
    sa.Column("public_ips", sa.Integer),
    sa.Column("rented", sa.Boolean),  # priced as a rent contract over the node's full resources
    sa.Column("cu_milli", sa.BigInteger), sa.Column("su_milli", sa.BigInteger),  # rounded, for reading
    sa.Column("cost_usd", Money),  # units USD, rounded for reading (the conversion uses it exact)
    sa.Column("gross", Money),  # TFT units before discount, rounded to the unit
    sa.Column("discount_percent", sa.Integer),  # percent of gross paid at that level
    sa.Column("discounted", Money),  # gross × discount, rounded
    sa.Column("certified_percent", sa.Integer),  # 125 on a certified node, else 100
)

# the prices a bill used, stored once per distinct set (a grid bills 100,000 contracts at the same rates)
bill_rates = sa.Table(
    "bill_rates", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tft_average_musd", sa.BigInteger, nullable=False),
    sa.Column("tft_min_musd", sa.BigInteger, nullable=False),
    sa.Column("tft_max_musd", sa.BigInteger, nullable=False),
    sa.Column("tft_musd", sa.BigInteger, nullable=False),  # the clamped price used (§2.6)
    sa.Column("cu", sa.BigInteger, nullable=False),
    sa.Column("su", sa.BigInteger, nullable=False),
    sa.Column("nu", sa.BigInteger, nullable=False),
    sa.Column("ipu", sa.BigInteger, nullable=False),
    sa.Column("unique_name", sa.BigInteger, nullable=False),
    sa.Column("dedicated_percent", sa.Integer, nullable=False),
    sa.Column("certified_percent", sa.Integer, nullable=False),
    sa.UniqueConstraint("tft_average_musd", "tft_min_musd", "tft_max_musd", "cu", "su", "nu", "ipu", "unique_name",
                        "dedicated_percent", "certified_percent", name="one_row_per_rates"),
)

# 7: a bill's receipt up to its amount, shared by the bills of one run with the same rates, contract shape, window
# length and discount level: a grid bills 100,000 contracts an hour in a few hundred of these (domain/billing.QuoteRow).
# A run numbers the rows it makes itself (under the ledger's write lock) and does not look for an equal row made by an
# earlier run: that look-up would cost more than the few hundred rows it saves
bill_quotes = sa.Table(
    "bill_quotes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("rates_id", sa.Integer, sa.ForeignKey("bill_rates.id"), nullable=False),
    sa.Column("seconds", sa.Integer, nullable=False),
    sa.Column("cru", sa.Integer, nullable=False), sa.Column("mru", sa.Integer, nullable=False),
    sa.Column("sru", sa.Integer, nullable=False), sa.Column("hru", sa.Integer, nullable=False),
    sa.Column("public_ips", sa.Integer, nullable=False),
    sa.Column("rented", sa.Boolean, nullable=False),  # priced as a rent contract over the resources it reserved
    sa.Column("certified_percent", sa.Integer, nullable=False),  # 125 on a certified node, else 100
    sa.Column("discount", sa.String(16), nullable=False),  # the level
    sa.Column("cu_milli", sa.BigInteger, nullable=False), sa.Column("su_milli", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", Money, nullable=False),  # units USD, rounded for reading (the conversion uses it exact)
    sa.Column("gross", Money, nullable=False),  # TFT units before discount, rounded to the unit
    sa.Column("discount_percent", sa.Integer, nullable=False),  # percent of gross paid at that level
    sa.Column("discounted", Money, nullable=False),  # gross × discount, rounded
    sa.Column("amount", Money, nullable=False),  # discounted × certified percent, rounded: the bill's amount
)

# §2.7 version B: a contract's reserve paid out to farmer / foundation / staking pool
payouts = sa.Table(
    "payouts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("contract_id", sa.Integer, sa.ForeignKey("contracts.id"), nullable=False, index=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),  # Cycles (every 24) | Deleted | Debt (collected at funding)
    sa.Column("amount", Money, nullable=False),
    sa.Column("farmer_account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("farmer", Money, nullable=False),
    sa.Column("foundation", Money, nullable=False),
    sa.Column("staking_pool", Money, nullable=False),
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
    # 6: the council signature that opened it: its nonce (one signature opens one proposal, ever), its signer and
    # the digest of the signed payload; '' on proposals opened before
    sa.Column("nonce", sa.String(64), nullable=False, server_default=""),
    sa.Column("council_key", sa.String(64), nullable=False, server_default=""),
    sa.Column("signed_digest", sa.String(64), nullable=False, server_default=""),
    sa.Index("one_proposal_per_nonce", "nonce", unique=True,
             sqlite_where=sa.text("nonce != ''"), postgresql_where=sa.text("nonce != ''")),
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
# minting and DAO weight weigh each entry by the seconds it was held (issue 13, invariant 3; §3.2, §5)
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
