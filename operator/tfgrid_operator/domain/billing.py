"""What happens with a bill (docs/grid-rules.md §2.4, §2.7, billing version B), pure: the contract state
machine and its grace window, the settlement of one bill against the payer's balance, the reserve and its
50/40/10 payout split, and ``bill_batch``, which applies them to one period's contracts in order.

What a bill costs is domain/pricing.py (§2.6). The ledger (backend/sql/billing.py) only loads the contracts,
calls ``bill_batch`` and writes back what it returns; the rules live here, once.

Money moves in one direction per step, and every unit is somewhere at every moment (invariant 7): a bill
moves ``paid`` from the payer's balance into the contract's reserve; a payout moves the whole reserve to the
farmer, the foundation and the staking pool. What the payer could not pay is the contract's overdraft,
carried into its next bill. Isolation (invariant 6): a contract whose amounts would pass money.MAX_UNITS is
not billed, moves no money, and gets the reason; the others are billed as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from tfgrid_operator.domain import money, pricing, units

CREATED, GRACE_PERIOD, DELETED = "Created", "GracePeriod", "Deleted"  # §2.4 states
LIVE = (CREATED, GRACE_PERIOD)
OUT_OF_FUNDS = "OutOfFunds"  # the deletion reason of a grace that ran out
GRANT_EXPIRED = "GrantExpired"  # the deletion reason of a contract whose payer's grant ended (grid-rules.md)
GRANT_REVOKED = "GrantRevoked"  # … and of one whose payer withdrew its grant (`ledger revoke-grant`)
MAX = money.MAX_UNITS


# ---------------------------------------------------------------- the rules, one contract at a time
def settle(amount: int, overdraft: int, balance: int) -> tuple[int, int]:
    """§2.7: a bill takes from the payer's balance what it can of what is owed — the window's amount plus the
    overdraft carried — into the contract's reserve. Returns (paid, the overdraft left). Neither is negative
    and paid never exceeds the balance: a balance never goes below zero."""
    owed = amount + overdraft
    paid = owed if owed <= balance else balance
    return paid, owed - paid


def grace_expiry(grace_since: int, grace_s: int) -> int:
    """§2.4: a grace period that started at ``grace_since`` runs out when now − grace_since ≥ grace_s."""
    return grace_since + grace_s


def deletion_at(state: str, grace_since: int | None, unpaid: bool, window_start: int, window_end: int,
                grace_s: int) -> int | None:
    """§2.4: a contract in grace whose bill finds the balance short is Deleted(OutOfFunds) at the bill whose
    window reaches its grace expiry; it is billed up to the expiry (never before its window's start) and no
    further. Returns that time, or None when this bill does not delete it."""
    if state != GRACE_PERIOD or grace_since is None or not unpaid:
        return None
    expiry = grace_expiry(grace_since, grace_s)
    return max(window_start, expiry) if expiry <= window_end else None


def after_bill(state: str, grace_since: int | None, overdraft: int, at: int,
               deleted: bool = False) -> tuple[str, int | None]:
    """§2.4 transitions at a bill ending at ``at`` that left ``overdraft`` owed: Created → GracePeriod (the grace
    starts at ``at``) when it could not be paid in full; GracePeriod → Created when it was (funded in time);
    Deleted when the grace ran out (``deletion_at``). Returns the state and the grace's start."""
    if overdraft > 0 and state == CREATED:
        state, grace_since = GRACE_PERIOD, at
    elif overdraft == 0 and state == GRACE_PERIOD:
        state, grace_since = CREATED, None
    return (DELETED if deleted else state), grace_since


def payout_due(cycles: int, deleted: bool, frequency: int) -> bool:
    """§2.7: a contract's reserve is paid out every ``frequency`` billing cycles (24) and when it is deleted."""
    return deleted or cycles >= frequency


@dataclasses.dataclass(frozen=True, slots=True)
class Split:
    farmer: int
    foundation: int
    staking_pool: int


def split(amount: int) -> Split:
    """§2.7 version B payout of node and rent contracts: 50 % farmer, 40 % foundation, 10 % staking pool.

    Integer shares (a choice the chain leaves open): the farmer and the staking pool get the floor of
    their share and the foundation the remainder (at most 1 unit), so the parts always add up to the
    amount. Applied to a contract's reserve when it is paid out (every 24 cycles and on deletion).
    """
    if amount < 0:
        raise ValueError("a bill is never negative")
    farmer = amount * 50 // 100
    staking = amount * 10 // 100
    return Split(farmer=farmer, foundation=amount - farmer - staking, staking_pool=staking)


def payout_gains(reserve: int, *, farmer: int, foundation: int, staking: int) -> tuple[Split, dict[int, int]]:
    """The reserve's split and what each account (by id) gains from it; one account may hold two shares."""
    shares = split(reserve)
    gains: dict[int, int] = {}
    for aid, share in ((farmer, shares.farmer), (foundation, shares.foundation), (staking, shares.staking_pool)):
        gains[aid] = gains.get(aid, 0) + share
    return shares, gains


def debt_taken(overdrafts: Iterable[int], amount: int) -> list[int]:
    """Invariant 7, debt follows the payer: what a funding of ``amount`` takes from each of its payer's closed
    contracts' ``overdrafts`` (oldest first, each paid in full before the next), in their order; the funding's
    rest is the payer's balance. Each part taken is paid out as that contract's reserve would have been
    (``payout_gains``), as a payout of reason Debt."""
    taken, left = [], amount
    for owed in overdrafts:
        take = min(left, owed)
        taken.append(take)
        left -= take
    return taken


def past_bound(balances: Mapping[int, int], gains: Mapping[int, int]) -> str | None:
    """Invariant 6: why paying ``gains`` out would take an account past money.MAX_UNITS, or None."""
    for aid, amount in gains.items():
        if balances[aid] + amount > MAX:
            return (f"paying {money.tft(amount)} TFT out would take account {aid} past the ledger's bound of "
                    f"{money.tft(MAX)} TFT")
    return None


# ---------------------------------------------------------------- one period's contracts, in order
class ContractRow(NamedTuple):
    """What billing reads of a contract, in this order (the ledger selects exactly these columns)."""

    id: int
    payer: int  # the paying account's id
    farmer: int  # the payout account of its node's farm
    cru: int
    mru: int
    sru: int
    hru: int
    public_ips: int
    dedicated: bool  # a rent: priced over the resources it reserved, as a whole node
    certified: bool  # its node's certification (version B: ×1.25)
    state: str
    created_at: int
    grace_since: int | None
    overdraft: int
    reserve: int
    cycles: int
    billed_total: int
    billing_error: str | None
    billed_until: int | None  # how far it is billed already: its latest bill's end (None: never billed)
    proof_until: int | None = None  # its payer's grant ends then: billed up to there, and deleted (None: a key)


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """One billing run: the period's window [start, end), billed up to ``until`` at ``now``."""

    period: int
    start: int
    end: int
    until: int
    now: int
    grace_s: int
    frequency: int  # payout every this many cycles (§2.7)
    foundation: int  # account ids
    staking: int
    policy: pricing.PricingPolicy
    price: pricing.TftPrice


class QuoteRow(NamedTuple):
    """A bill's receipt up to its amount, shared by the run's bills of one shape, window length and level."""

    id: int
    seconds: int
    cru: int
    mru: int
    sru: int
    hru: int
    public_ips: int
    rented: bool
    certified_percent: int
    discount: str
    cu_milli: int
    su_milli: int
    cost_usd: int
    gross: int
    discount_percent: int
    discounted: int
    amount: int


# what bill_batch returns, as rows for the ledger's tables (the names are their columns)
BILL_FIELDS = ("contract_id", "period", "until", "seconds", "amount", "paid", "discount", "billed_at", "quote_id",
               "balance", "overdraft_before", "cycle")
UPDATE_FIELDS = ("amount", "discount", "overdraft", "reserve", "cycles", "billed_at", "id")
TRANSITION_FIELDS = ("state", "grace_since", "deleted_at", "deleted_reason", "id")
PAYOUT_FIELDS = ("contract_id", "at", "reason", "amount", "farmer_account_id", "farmer", "foundation", "staking_pool")


@dataclasses.dataclass(slots=True)
class Batch:
    """What one run did: ``bills`` (each names its receipt row in ``quotes`` by id), ``updates`` every billed
    contract's new totals, ``transitions`` the state changes among them, ``payouts``, ``refused`` the contracts
    not billed (invariant 6) whose reason is new, ``changed`` the ids whose state or error changed, and
    ``balances`` every account after the run."""

    balances: dict[int, int]
    bills: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    updates: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    transitions: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    payouts: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    refused: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    quotes: list[QuoteRow] = dataclasses.field(default_factory=list)
    changed: list[int] = dataclasses.field(default_factory=list)
    total: int = 0
    skipped: int = 0


class _Overflow(Exception):
    """One contract's amounts would leave the ledger's bounds: it is not billed (invariant 6)."""


_Picked = tuple[int, str, int]  # a bill's amount, discount level and receipt id


class _Prices:
    """Each contract shape and window length priced once (pricing.Quote) with its discount levels' floors; a
    bill then only compares the payer's balance with them, and each level's receipt row is made on first use
    and numbered from ``first_id``."""

    __slots__ = ("_first_id", "_levels", "_quotes", "_run")

    def __init__(self, run: Run, quotes: list[QuoteRow], first_id: int) -> None:
        self._run, self._quotes, self._first_id = run, quotes, first_id
        self._levels: dict[tuple[Any, ...], tuple[tuple[int, ...], list[_Picked | None], tuple[Any, ...]]] = {}

    def pick(self, key: tuple[Any, ...], balance: int) -> _Picked:
        """(amount, discount level, receipt id) of a bill of a shape for some seconds (``key``: ContractRow's
        cru … certified, then the seconds) at ``balance`` (§2.6)."""
        found = self._levels.get(key)
        if found is None:
            found = self._levels[key] = self._price(key[:-1], key[-1])
        floors, made, _quote = found
        i = 0
        for floor in floors:
            if balance >= floor:
                break
            i += 1
        return made[i] or self._make(key, i)

    def _price(self, shape: tuple[Any, ...],
               seconds: int) -> tuple[tuple[int, ...], list[_Picked | None], tuple[Any, ...]]:
        cru, mru, sru, hru, ips, dedicated, certified = shape
        reserved = units.Resources(cru, mru, sru, hru)
        # a rent is priced on what its contract reserved at placement (the whole node as it was then, capped
        # by what the node attested), never on the node's spec now: a farmer raising the spec cannot raise it
        quote = pricing.Quote.of(resources=reserved, public_ips=ips, seconds=seconds, certified=bool(certified),
                                 dedicated_node=reserved if dedicated else None, policy=self._run.policy,
                                 price=self._run.price)
        floors = tuple(f for f, _level, _factor in pricing.discount_floors(amount_due=quote.gross, seconds=seconds))
        # a balance at a level's floor has that level; 0 is below every floor: no discount
        return floors, [None] * (len(floors) + 1), (quote, shape, (*floors, 0))

    def _make(self, key: tuple[Any, ...], i: int) -> _Picked:
        _floors, made, (quote, shape, at) = self._levels[key]
        b = quote.bill(balance=at[i])
        cru, mru, sru, hru, ips, dedicated, _certified = shape
        reserved = units.Resources(cru, mru, sru, hru)
        cu = money.round_half_up(units.billing_cu(reserved) * 1000)  # for reading: CU and SU in thousandths
        su = money.round_half_up(units.billing_su(reserved) * 1000)
        row = QuoteRow(self._first_id + len(self._quotes), b.seconds, cru, mru, sru, hru, ips, bool(dedicated),
                       b.certified_percent, str(b.discount), cu, su, b.cost_units_usd, b.gross, b.discount_percent,
                       b.discounted, b.amount)
        self._quotes.append(row)
        picked = made[i] = (b.amount, row.discount, row.id)
        return picked


def bill_batch(rows: Iterable[Sequence[Any]], balances: Mapping[int, int], run: Run, *,
               first_quote_id: int = 1) -> Batch:
    """Bill each contract (rows in ContractRow's order) for [max(start, created, billed_until), until), by id:
    each bill's discount reads the payer's balance as the bills before it left it (§2.6). A contract paid by a
    grant is billed up to its grant's end at the latest, and deleted there (GrantExpired): a payer is never billed
    for time it did not agree to pay. A contract already billed up to ``until`` (or its grant's end) is skipped
    (idempotent money). Receipt rows are numbered from ``first_quote_id``. Changes nothing it is given."""
    out = Batch(balances=dict(balances))
    bill_one = _biller(run, _Prices(run, out.quotes, first_quote_id), out)
    start, until = run.start, run.until
    for row in sorted(rows, key=_by_id):
        created_at, billed_until, grant_ends = row[11], row[18], row[19]
        window_start = max(start, created_at, start if billed_until is None else billed_until)
        window_end = until if grant_ends is None or grant_ends > until else grant_ends
        if window_start >= window_end and (billed_until is not None or window_end < until):
            out.skipped += 1  # billed already (a grant that ended before: closed by the sweep, with no bill)
            continue
        try:
            bill_one(row, window_start, window_end)
        except _Overflow as exc:
            message = f"billing period {run.period}: {exc}"
            if row[17] != message:
                out.refused.append((row[0], message))
                out.changed.append(row[0])
    out.total = sum(bill[4] for bill in out.bills)
    return out


def _by_id(row: Any) -> Any:
    return row[0]


def _biller(run: Run, prices: _Prices, out: Batch) -> Callable[[Any, int, int], None]:
    """The run's bill of one contract, with the run's values bound once (100,000 calls a run)."""
    period, now, until, grace_s, frequency = run.period, run.now, run.until, run.grace_s, run.frequency
    is_cycle = run.until == run.end  # only a window to the period's end is a billing cycle (§2.7)
    balances, pick = out.balances, prices.pick
    add_bill, add_update, add_transition = out.bills.append, out.updates.append, out.transitions.append
    add_changed = out.changed.append

    def bill_one(row: Any, window_start: int, window_end: int) -> None:
        """One contract's bill for [window_start, window_end), its state change and its payout; raises _Overflow
        before it changes anything."""
        (cid, payer, _farmer, cru, mru, sru, hru, ips, dedicated, certified, state, _created, grace_since,
         overdraft, reserve, cycles, billed_total, error, _until, grant_ends) = row
        balance = balances[payer]
        seconds = window_end - window_start if window_end > window_start else 0
        amount, discount, quote = pick((cru, mru, sru, hru, ips, dedicated, certified, seconds), balance)
        deleted_at = None if state == CREATED else deletion_at(state, grace_since, amount + overdraft > balance,
                                                               window_start, window_end, grace_s)
        reason = OUT_OF_FUNDS
        if deleted_at is not None:  # billed up to the grace's end and no further
            window_end = deleted_at
            seconds = window_end - window_start
            amount, discount, quote = pick((cru, mru, sru, hru, ips, dedicated, certified, seconds), balance)
        elif grant_ends is not None and grant_ends <= until:  # its payer's grant ends in this window, and it with it
            deleted_at, reason = window_end, GRANT_EXPIRED
        paid, left = settle(amount, overdraft, balance)
        if paid + left > MAX or billed_total + amount > MAX:
            raise _Overflow(f"the amount due, {money.tft(paid + left)} TFT, is beyond the ledger's bound of "
                            f"{money.tft(MAX)} TFT")
        reserve += paid
        if reserve > MAX:
            raise _Overflow(f"the contract's reserve would pass the ledger's bound of {money.tft(MAX)} TFT")
        cycle_no = cycles + 1 if is_cycle else None
        cycles = cycles if cycle_no is None else cycle_no
        gains = None
        if payout_due(cycles, deleted_at is not None, frequency):
            reserve, gains = _pay_out(row, reserve, paid, deleted_at, window_end, run, out)
            cycles = 0
        # nothing is refused past this line: apply
        balances[payer] = balance - paid
        if gains:
            for aid, gain in gains.items():
                balances[aid] += gain
        add_bill((cid, period, window_end, seconds, amount, paid, discount, now, quote, balance, overdraft, cycle_no))
        add_update((amount, discount, left, reserve, cycles, now, cid))
        if left == 0 and state == CREATED and deleted_at is None:  # paid in full, not in grace, not ended: as it is
            if error is not None:
                add_changed(cid)
            return
        new_state, new_grace = after_bill(state, grace_since, left, window_end, deleted_at is not None)
        if new_state != state or new_grace != grace_since:
            add_transition((new_state, new_grace, deleted_at, reason if deleted_at is not None else None, cid))
        if new_state != state or error is not None:
            add_changed(cid)

    return bill_one


def _pay_out(row: Any, reserve: int, paid: int, deleted_at: int | None, at: int, run: Run,
             out: Batch) -> tuple[int, dict[int, int]]:
    """§2.7: the contract's whole reserve to the farmer, the foundation and the staking pool; raises _Overflow
    (before it records anything) when a share would take an account past the bound. Returns the reserve left
    (0) and each account's gain, for the caller to apply."""
    cid, payer, farmer = row[0], row[1], row[2]
    shares, gains = payout_gains(reserve, farmer=farmer, foundation=run.foundation, staking=run.staking)
    problem = past_bound(out.balances, {aid: g - paid if aid == payer else g for aid, g in gains.items()})
    if problem:
        raise _Overflow(problem)
    if reserve:
        out.payouts.append((cid, at, "Deleted" if deleted_at is not None else "Cycles", reserve, farmer,
                            shares.farmer, shares.foundation, shares.staking_pool))
    return 0, gains
