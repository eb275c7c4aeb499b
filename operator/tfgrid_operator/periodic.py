"""The batched loop: one task for all objects, never a timer per object.

Each tick: mint every minting period that has ended (plus the settle time), bill every billing period
that has ended, move deployments off nodes that went down, then refresh the status of every Farm, Node
and Deployment from a handful of ledger queries — patching only the objects whose status changed.
Periods are processed from the ledger's watermark, so a restart neither skips nor repeats one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Coroutine
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from tfgrid_operator import api, conditions, runtime
from tfgrid_operator.backend import errors, records
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain import minting, pricing, units, voting
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import ApiError

log = logging.getLogger("tfgrid_operator.periodic")


async def run_forever(rt: runtime.Runtime) -> None:
    while True:
        started = time.perf_counter()
        try:
            await tick(rt)
        except asyncio.CancelledError:
            raise
        except errors.LedgerError as err:
            log.warning("Ledger unavailable in the periodic loop: %s", err.message)
        except Exception:
            log.exception("Periodic loop failed; retrying next tick")
        rt.metrics.loop_tick.observe(time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.wake.wait(), rt.settings.tick_s)
        rt.wake.clear()


async def tick(rt: runtime.Runtime) -> dict[str, int]:
    now = rt.clock.now()
    cfg = rt.ledger.config  # type: ignore[attr-defined]
    minted = await _isolated("minting", mint_due(rt, now, cfg))
    billed = await _isolated("billing", bill_due(rt, now, cfg))
    proposals = await rt.ledger.proposal_summaries()
    closed = await close_due(rt, now, proposals)
    if closed:
        proposals = await rt.ledger.proposal_summaries()
    swept = await sweep(rt, now)
    summaries = await rt.ledger.node_summaries(now=now)
    moved = await heal(rt, now, summaries)
    if moved:
        summaries = await rt.ledger.node_summaries(now=now)  # capacity moved between nodes
    patched = await refresh(rt, now, summaries, proposals)
    return {"minted_periods": minted, "billed_periods": billed, "closed_proposals": closed, "moved": moved,
            "patched": patched, "swept": swept}


async def _isolated(stage: str, job: Coroutine[Any, Any, int]) -> int:
    """Invariant 6: a period the ledger refuses (a bound, a conflict) stops that stage only, never the rest of the
    tick (closing proposals, sweeps, healing, status); an unavailable ledger still ends the tick (every stage needs it)."""
    try:
        return await job
    except errors.Unavailable:
        raise
    except errors.LedgerError as err:
        log.error("The %s stage was refused by the ledger (%s); the rest of the tick goes on: %s", stage,
                  err.reason, err.message)
        return 0


async def mint_due(rt: runtime.Runtime, now: int, cfg: Any) -> int:
    current = minting.period_at(now, epoch=cfg.minting_epoch, length=cfg.minting_period_s).index
    k = await rt.ledger.watermark(name="mint", default=current)
    done = 0
    while True:
        p = minting.period_by_index(k, epoch=cfg.minting_epoch, length=cfg.minting_period_s)
        if now < p.end + cfg.mint_settle_s:
            return done
        report = await rt.ledger.mint_period(period=k, now=now)
        rt.metrics.minted.inc(report.amount)
        summaries = await rt.ledger.node_summaries(now=p.end - 1)
        minted_events = []
        for name in report.changed:
            s = summaries.get(name)
            ref = _ref(rt, "nodes", name, s.owner.namespace) if s is not None else None  # the owner's, never a namesake's
            if s is not None and ref is not None:
                minted_events.append(event(rt, ref, "Normal", Reason.MINTED,
                                           f"Minting period {k}: {s.last_mint} units ({s.last_mint_reason})"))
        await concurrently(minted_events)
        k += 1
        done += 1


async def bill_due(rt: runtime.Runtime, now: int, cfg: Any) -> int:
    current = now // cfg.billing_period_s
    k = await rt.ledger.watermark(name="bill", default=current)
    done = 0
    while (k + 1) * cfg.billing_period_s <= now:
        report = await rt.ledger.bill_period(period=k, now=now)
        rt.metrics.billed.inc(report.amount)
        contracts = await rt.ledger.contract_summaries() if report.changed else {}
        state_events = []
        for key in report.changed:
            ns, _, name = key.partition("/")
            ref, c = _ref(rt, "deployments", name, ns), contracts.get(key)
            if ref is not None and c is not None:
                state_events.append(event(rt, ref, *_state_event(c, k)))
        await concurrently(state_events)
        k += 1
        done += 1
    return done


async def close_due(rt: runtime.Runtime, now: int, proposals: dict[str, records.Proposal]) -> int:
    """§5: close every open proposal whose deadline passed; an approved one's action runs once, in the same
    ledger transaction that marks it Executed (a restart can neither skip nor repeat it)."""
    done = 0
    for key, p in proposals.items():
        if p.state != "Open" or now < p.end_ts:
            continue
        closed = await rt.ledger.close_proposal(proposal=key, now=now)
        done += 1
        ns, _, name = key.partition("/")
        ref = _ref(rt, "proposals", name, ns)
        if ref is not None:
            t = voting.tally({v.farm: v for v in closed.votes})
            await event(rt, ref, "Normal" if closed.state == "Executed" else "Warning",
                        Reason.EXECUTED if closed.state == "Executed" else Reason.REJECTED,
                        f"Proposal {closed.id} closed {closed.state}: {t.voters} farms voted (threshold "
                        f"{closed.threshold}), ayes {t.ayes_weight} vs nays {t.nays_weight}")
    return done


def _state_event(c: records.Contract, period: int) -> tuple[str, Reason, str]:
    """The Event for a contract whose state billing changed (§2.4 state machine)."""
    if c.billing_error:  # invariant 6: this contract alone was not billed; the others were
        return ("Warning", Reason.BILLED, f"Contract {c.id} was not billed: {c.billing_error}")
    if c.state == "GracePeriod":
        return ("Warning", Reason.GRACE_PERIOD, f"Contract {c.id}: the payer {c.payer!r} could not pay billing period "
                f"{period} (owes {c.overdraft} units); the workload is kept during the grace period")
    if c.state == "Deleted":
        return ("Warning", Reason.OUT_OF_FUNDS, f"Contract {c.id}: the grace period ended unpaid; contract deleted "
                f"and capacity on node {c.node} released")
    return ("Normal", Reason.FUNDED, f"Contract {c.id}: the payer {c.payer!r} paid what was owed; billing resumed")


API_CONCURRENCY = 16  # requests the loop keeps in flight to the API server


async def concurrently(calls: list[Coroutine[Any, Any, Any]], limit: int = API_CONCURRENCY) -> None:
    """Await the calls with at most ``limit`` in flight (one Event or PATCH per object, never one at a time)."""
    sem = asyncio.Semaphore(limit)

    async def one(call: Coroutine[Any, Any, Any]) -> None:
        async with sem:
            await call
    await asyncio.gather(*(one(c) for c in calls))


async def event(rt: runtime.Runtime, ref: dict[str, Any], type: str, reason: Reason, message: str) -> None:
    try:
        await rt.kube.post_event(ref, type=type, reason=str(reason), message=message,
                                 now=conditions.timestamp(rt.clock.now()))
    except ApiError as err:  # a namespace being deleted refuses new Events (403): nobody is left to tell
        terminating = err.status == 403 and "being terminated" in str(err)
        log.log(logging.DEBUG if terminating else logging.WARNING, "Could not post event %s: %s", reason, err)


KINDS = {"nodes": "Node", "farms": "Farm", "deployments": "Deployment", "proposals": "Proposal"}


def _ref(rt: runtime.Runtime, plural: str, name: str, namespace: str) -> dict[str, Any] | None:
    body = rt.objects.get((plural, namespace, name))
    if body is None:
        return None
    return {"apiVersion": f"{runtime.GROUP}/{runtime.VERSION}", "kind": KINDS[plural], "metadata": body["metadata"]}


def _down(s: records.NodeSummary | None, now: int, down_after: int) -> bool:
    return s is not None and s.last_report_ts is not None and now - s.last_report_ts > down_after


async def heal(rt: runtime.Runtime, now: int, summaries: dict[str, records.NodeSummary]) -> int:
    """Self-healing: deployments on a node with no valid uptime report for too long move elsewhere.
    The old contract gets a final bill up to now and the new one starts now: no time is billed twice."""
    down_after = rt.ledger.config.node_down_after_s  # type: ignore[attr-defined]
    down = {n for n, s in summaries.items() if _down(s, now, down_after)}
    if not down:
        return 0
    moved = 0
    for key, c in (await rt.ledger.contract_summaries()).items():
        if c.state not in ("Created", "GracePeriod") or c.node not in down:
            continue
        ns, _, name = key.partition("/")
        body = rt.objects.get(("deployments", ns, name))
        if body is None or body["metadata"].get("deletionTimestamp") or \
                c.owner_uid not in ("", body["metadata"].get("uid", "")):  # a namesake's spec never moves it
            continue
        try:
            spec = api.parse(api.DeploymentSpec, body["spec"])
        except api.InvalidSpec:
            continue
        if not spec.self_healing:
            continue
        try:
            new = await rt.ledger.move_contract(key=key, request=spec.request(exclude=frozenset(down)), now=now)
        except errors.NoCapacity as err:
            await event(rt, _ref(rt, "deployments", name, ns) or body, "Warning", Reason.NODE_DOWN,
                        f"node {c.node} is down and no other node fits: {err.message}")
            continue
        if not new.created:  # its final bill ended the grace period unpaid: deleted (OutOfFunds), not moved
            continue
        moved += 1  # the move is on the ledger: refresh writes status.movedFrom from it (Contract.moved_from)
        await event(rt, _ref(rt, "deployments", name, ns) or body, "Normal", Reason.MOVED,
                    f"Node {c.node} is down; moved to node {new.node} as contract {new.id} "
                    f"(contract {c.id} closed with a final bill)")
    return moved


def _percent(used: Resources, total: Resources) -> int:
    ratios = [Fraction(getattr(used, f), getattr(total, f)) for f in ("cru", "mru", "sru", "hru") if getattr(total, f)]
    return int(max(ratios, default=Fraction(0)) * 100)


def _dec(x: Fraction) -> str:
    return f"{float(x):.2f}".rstrip("0").rstrip(".")


async def refresh(rt: runtime.Runtime, now: int, summaries: dict[str, records.NodeSummary],
                  proposals: dict[str, records.Proposal]) -> int:
    """Write each object's status from the ledger; PATCH only where something changed."""
    cfg: Any = rt.ledger.config  # type: ignore[attr-defined]
    stamp = conditions.timestamp(now)
    contracts = await rt.ledger.contract_summaries()
    policy, _ = await rt.ledger.policies()
    attested, receipts = await rt.ledger.attestations(), await rt.ledger.last_receipts()
    farms: dict[str, list[records.NodeSummary]] = defaultdict(list)
    for s in summaries.values():
        farms[s.farm].append(s)
    farm_records = {f.name: f for f in await rt.ledger.list_farms()}
    patches: list[tuple[str, str, str, dict[str, Any]]] = []
    _forget_gone(rt)
    nudges = sorted(set(unobserved(rt)) | set(requeues(rt)))
    for (plural, ns, name), body in list(rt.objects.items()):
        status = body.get("status") or {}
        uid = body["metadata"].get("uid", "")
        held = REPORTED.get((plural, ns, name))  # what its handler reported, never what its status claims
        if body["metadata"].get("deletionTimestamp") or held is None or held[0] != uid:
            continue
        # the generation whose reconcile finished, as the handler reported it: the loop refreshes what the ledger
        # says but never claims a generation no handler has applied yet (a spec edit waiting in kopf's queue)
        generation = status.get("observedGeneration")
        if generation is None:
            continue
        desired: dict[str, Any] | None = None
        owner = records.Owner(ns, uid)
        if held[1] in HANDLER_OWNED:  # the handler's report stands, whatever was written over it since
            claimed = {k: None for k in IDENTITY if k in status} if held[1] == Reason.NAME_TAKEN else {}
            desired = {**claimed, **held[2]}  # a NameTaken object is no ledger record: no identity on it
        elif plural == "nodes" and name in summaries and _mine(summaries[name].owner, owner):
            desired = _node_status(summaries[name], status, generation, stamp, now, cfg)
            desired = node_attestation(desired, body.get("spec") or {}, summaries[name], attested.get(name),
                                       receipts.get(name), generation, stamp)
        elif plural == "farms" and name in farm_records and _mine(farm_records[name].owner, owner):
            desired = _farm_status(farm_records[name], farms.get(name, []), status, generation, stamp)
        elif plural == "deployments" and f"{ns}/{name}" in contracts and \
                contracts[f"{ns}/{name}"].owner_uid in ("", uid):
            c = contracts[f"{ns}/{name}"]
            seen = rt.refreshed.get((plural, ns, name))
            if seen is not None and seen[0] is body.get("status") and seen[1:] == (c, generation, policy):
                continue  # nothing it is made of changed since it was last compared: no change to find
            rt.refreshed[(plural, ns, name)] = (body.get("status"), c, generation, policy)
            desired = deployment_status(c, status, generation, stamp, policy, cfg.tft_price)
        elif plural == "proposals" and f"{ns}/{name}" in proposals and "proposalId" in status:
            try:
                spec = api.parse(api.ProposalSpec, body.get("spec"))
            except api.InvalidSpec:
                continue
            desired = proposal_status(proposals[f"{ns}/{name}"], spec, status, generation, stamp, held[2])
        if desired is None:
            continue
        change = conditions.diff(status, desired)
        if change and not _only_counters(rt, (plural, ns, name), change, now):
            patches.append((plural, ns, name, api.check_status(plural, change)))  # its Status model's, or a bug
        elif change:
            rt.refreshed.pop((plural, ns, name), None)  # a deferred counter: compare again next tick

    async def send(plural: str, ns: str, name: str, change: dict[str, Any]) -> None:
        try:
            written = await rt.kube.patch_status(runtime.GROUP, runtime.VERSION, plural, ns, name, change)
            tracked = rt.objects.get((plural, ns, name))
            if tracked is not None and isinstance(written, dict):
                # the next tick diffs against what was written, even before the watch delivers it
                tracked["status"] = dict(written.get("status") or {})
        except ApiError as err:
            rt.refreshed.pop((plural, ns, name), None)  # not written: compare (and write) again next tick
            rt.counters_written.pop((plural, ns, name), None)
            if err.status != 404:
                log.warning("Status patch of %s %s/%s failed: %s", plural, ns, name, err)

    started = time.perf_counter()
    await concurrently([*(send(*p) for p in patches), *(nudge(rt, *k) for k in nudges)])
    rt.metrics.reconcile_time.labels("periodic").observe(time.perf_counter() - started)
    _gauges(rt, summaries, contracts)
    rt.metrics.proposals_open.set(sum(p.state == "Open" for p in proposals.values()))
    return len(patches)


async def nudge(rt: runtime.Runtime, plural: str, ns: str, name: str) -> None:
    """A new event for kopf: it re-runs the handlers of an object (whose last pass never got written, or whose
    payer grant is about to end and must be read again)."""
    # wall time to the microsecond: a value that always differs, so the patch is always a change kopf sees
    meta = {"metadata": {"annotations": {runtime.REQUEUE_ANNOTATION: datetime.now(UTC).isoformat()}}}
    try:
        await rt.kube.request("PATCH", rt.kube.path(runtime.GROUP, runtime.VERSION, plural, ns, name), meta,
                              "application/merge-patch+json")
    except ApiError as err:
        log.warning("Could not request a reconcile of %s %s/%s: %s", plural, ns, name, err)


SWEEP_EVERY_S = 60.0  # monotonic seconds between two orphan sweeps (one LIST per namespace that has live contracts)
RENEW_BEFORE_S = 24 * 3600  # in a grant's last day, its Deployment is reconciled (reads its grant again) …
RENEW_EVERY_S = 3600  # … once an hour of grid time, so a grant renewed in its last day is seen before it ends
# id(runtime) → (the runtime, when (monotonic) it sweeps for orphans next); absent, or another runtime: next tick
_next_sweep: dict[int, tuple[weakref.ref[runtime.Runtime], float]] = {}
_renewals: dict[tuple[str, int], int] = {}  # (contract key, grant expiry) → grid time its Deployment was last nudged


def request_sweep(rt: runtime.Runtime) -> None:
    """An object vanished (a finalizer removed by hand skips our delete handler): sweep on the next tick."""
    _next_sweep.pop(id(rt), None)


async def sweep(rt: runtime.Runtime, now: int) -> int:
    """Close the live contracts nothing proves any more, each with its final bill (design.md "Trust model"):
    every tick, those whose payer grant ended (GrantExpired; in a grant's last day its Deployment is reconciled
    to read a renewed one); and orphans (Orphaned), whose Deployment is gone or is a later object of the same name
    (another uid): on the first tick (what happened while the operator was down), after an object vanished, and
    every SWEEP_EVERY_S. Objects are LISTed from the API server, never taken from the watch cache; a namespace that
    cannot be listed closes nothing (fail closed)."""
    now = max(now, rt.clock.now())  # an object that vanished during this tick is billed up to now, not the tick's start
    live = {k: c for k, c in (await rt.ledger.contract_summaries()).items() if c.state in ("Created", "GracePeriod")}
    closing: dict[str, tuple[records.Contract, str]] = {}
    renew = []
    for key, c in live.items():
        if c.proof_until is None:
            continue
        if c.proof_until <= now:
            closing[key] = (c, "GrantExpired")
        elif c.proof_until - now <= RENEW_BEFORE_S and now - _renewals.get((key, c.proof_until), -RENEW_EVERY_S) >= \
                RENEW_EVERY_S:
            _renewals[(key, c.proof_until)] = now
            renew.append(key)
    mine, at = _next_sweep.get(id(rt), (None, 0.0))
    if mine is None or mine() is not rt or time.monotonic() >= at:
        _next_sweep[id(rt)] = (weakref.ref(rt), time.monotonic() + SWEEP_EVERY_S)
        closing.update({k: (c, "Orphaned") for k, c in (await _orphans(rt, live)).items() if k not in closing})
    for key, (c, reason) in sorted(closing.items()):
        try:  # one contract that cannot be closed never stops the others (nor the rest of the tick)
            closed = await rt.ledger.close_contract(key=key, owner_uid=c.owner_uid, now=now, reason=reason)
        except errors.LedgerError as err:
            log.warning("Contract %s of %s could not be closed (%s): %s", c.id, key, reason, err.message)
            continue
        log.info("Contract %s of %s closed (%s) with a final bill; billed total %s units", c.id, key, reason,
                 closed.billed_total if closed else "?")
    for held in [k for k in _renewals if k[0] in closing or k[0] not in live or live[k[0]].proof_until != k[1]]:
        del _renewals[held]  # forgotten with its grant
    await concurrently([nudge(rt, "deployments", *k.split("/", 1)) for k in renew if k not in closing])
    return len(closing)


async def _orphans(rt: runtime.Runtime, live: dict[str, records.Contract]) -> dict[str, records.Contract]:
    """The live contracts whose Deployment is gone, or is another object (uid) of the same name."""
    found = {}
    for ns in sorted({k.partition("/")[0] for k in live}):
        try:
            listing = await rt.kube.request("GET", rt.kube.path(runtime.GROUP, runtime.VERSION, "deployments", ns))
        except ApiError as err:
            log.warning("Cannot list the Deployments of namespace %s; no orphan of it is closed: %s", ns, err)
            continue
        present = {o["metadata"]["name"]: o["metadata"].get("uid", "") for o in listing.get("items") or []}
        for key, c in live.items():
            space, _, name = key.partition("/")
            if space == ns and (name not in present or c.owner_uid not in ("", present[name])):
                found[key] = c
    return found


# fields that move with every uptime report or billing period; a change of anything else writes at once
COUNTERS = frozenset({"uptimeSeconds", "uptimePercent", "lastReportAt", "billedTotal", "lastBilledAt", "discount",
                      "reserve", "lastBill"})


def _only_counters(rt: runtime.Runtime, key: tuple[str, str, str], change: dict[str, Any], now: int) -> bool:
    """True when only counters moved (uptime, billed total) and the status was written less than
    settings.counter_refresh_s ago (grid time): such a status is current enough; anything else writes now."""
    last = rt.counters_written.get(key)
    if not set(change) <= COUNTERS or last is None or now - last >= rt.settings.counter_refresh_s:
        rt.counters_written[key] = now
        return False
    return True


def unobserved(rt: runtime.Runtime) -> list[tuple[str, str, str]]:
    """Objects whose status has not shown their current generation for settings.nudge_after_s: kopf retries a
    failed handler by itself, but not a failed write of its own (a 409 or a dropped connection on its PATCH).
    When a reconcile ran for that generation, its report was lost: nudge. When none ran yet, the object is either
    still in kopf's queue (a burst of creations: nudging would only add work) or kopf's finalizer write failed
    before the handler: those are nudged once kopf has been quiet for nudge_after_s (no reconcile finished)."""
    now = time.monotonic()
    quiet = now - rt.last_reconcile >= rt.settings.nudge_after_s
    due = []
    for key, body in rt.objects.items():
        meta = body["metadata"]
        generation = meta.get("generation", 1)
        seen = (body.get("status") or {}).get("observedGeneration")
        ready = conditions.get((body.get("status") or {}).get("conditions") or [], "Ready") or {}
        # a wait on the world keeps observedGeneration behind on purpose; requeues() retries those, not nudges
        if meta.get("deletionTimestamp") or (seen is not None and seen >= generation) or \
                ready.get("reason") in WAITING or (rt.handled.get(key, -1) < generation and not quiet):
            rt.unobserved_since.pop(key, None)
            continue
        since = rt.unobserved_since.setdefault(key, now)
        if now - since >= rt.settings.nudge_after_s:
            due.append(key)
            rt.unobserved_since[key] = now
    return due


# conditions that wait on the world, not on the operator: retried by the loop (requeues), not by kopf
WAITING = frozenset({Reason.UNSCHEDULABLE, Reason.RESIZE_BLOCKED, Reason.PAYER_NOT_FOUND, Reason.FARM_NOT_READY,
                     Reason.PAYER_NOT_AUTHORIZED, Reason.FARM_CONSENT_MISSING, Reason.PAYER_IN_DEBT})
# conditions only a reconcile handler writes and clears: the loop leaves those objects' status alone
HANDLER_OWNED = WAITING | {Reason.INVALID_SPEC, Reason.DELETE_BLOCKED, Reason.CREATING, Reason.UNAUTHORIZED,
                           Reason.NAME_TAKEN}
# (plural, namespace, name) → (uid, the Ready reason its handler last reported in this process, that report): the
# loop decides from this whether a handler holds an object, never from the object's status (its user can write
# that), and writes a held object's report back over whatever was written since
REPORTED: dict[tuple[str, str, str], tuple[str, str, dict[str, Any]]] = {}
# status fields that say which ledger record an object is: removed when written on an object whose name is taken
IDENTITY = ("farmId", "nodeId", "contractId", "proposalId", "node", "farm", "contractState")
REQUEUE_BACKOFF_CAP = 12  # the longest wait between two tries, in multiples of the first (retry_delay_s)


def requeues(rt: runtime.Runtime) -> list[tuple[str, str, str]]:
    """Objects waiting on the world (no room, no payer, no farm yet) due for another try: first after
    rt.retry_delay_s, then each wait twice the last, up to REQUEUE_BACKOFF_CAP times the first."""
    now = time.monotonic()
    first = rt.retry_delay_s
    due = []
    for key, body in rt.objects.items():
        held = REPORTED.get(key)
        if body["metadata"].get("deletionTimestamp") or held is None or \
                held[0] != body["metadata"].get("uid", "") or held[1] not in WAITING:
            rt.requeue_at.pop(key, None)
            continue
        at, wait = rt.requeue_at.setdefault(key, (now + first, first))
        if now >= at:
            due.append(key)
            wait = min(wait * 2, first * REQUEUE_BACKOFF_CAP)
            rt.requeue_at[key] = (now + wait, wait)
    return due


def _forget_gone(rt: runtime.Runtime) -> None:
    """Per-object bookkeeping of the loop ends with the object."""
    for book in (rt.unobserved_since, rt.counters_written, rt.handled, rt.requeue_at, rt.refreshed, REPORTED):
        for key in set(book) - set(rt.objects):
            del book[key]


def _node_status(s: records.NodeSummary, status: dict[str, Any], generation: int, stamp: str, now: int,
                 cfg: Any) -> dict[str, Any]:
    free = s.resources - s.used
    fields = {
        "nodeId": s.node_id, "farm": s.farm,
        "cu": _dec(units.farming_cu(s.resources)), "su": _dec(units.farming_su(s.resources)),
        "used": s.used.as_dict(), "free": free.as_dict(), "usedPercent": _percent(s.used, s.resources),
        "deployments": s.contracts, "uptimeSeconds": s.uptime_s, "uptimePercent": s.uptime_permille // 10,
        "minting": {"reward": s.last_mint or 0, "reason": s.last_mint_reason or "Pending", "total": s.minted_total},
    }
    if s.last_mint_period is not None:
        fields["minting"]["period"] = s.last_mint_period
    if s.last_report_ts is not None:
        fields["lastReportAt"] = conditions.timestamp(s.last_report_ts)
    if s.violation:
        fields["violation"] = s.violation
    down = _down(s, now, cfg.node_down_after_s)
    message = (f"no valid uptime report since {fields.get('lastReportAt')}" if down
               else f"registered as node {s.node_id}")
    return conditions.desired_status(status, generation=generation, now=stamp, ready=not down,
                                     reason=Reason.NODE_DOWN if down else Reason.AVAILABLE, message=message,
                                     fields=fields)


def _mine(record: records.Owner, obj: records.Owner) -> bool:
    """Whether a ledger record is this object's (made by it, or made before ownership and not claimed since)."""
    if record.uid == "":
        return record.namespace in ("", obj.namespace)
    return record == obj


def node_attestation(desired: dict[str, Any], spec: dict[str, Any], s: records.NodeSummary,
                     a: records.Attestation | None, r: records.MintReceipt | None, generation: int,
                     stamp: str) -> dict[str, Any]:
    """What the node's key attested and the council certified, against what the spec expects (issue 13,
    invariant 3), as status.attested and the Attested condition; status.minting points at the last receipt."""
    expects_certified = bool(spec.get("certified", False))
    if a is None:
        ok, reason, message = False, Reason.NOT_ATTESTED, "no signed capacity report from the node's agent yet: " \
            "it mints nothing and weighs nothing in votes"
    else:
        desired["attested"] = {**a.resources.as_dict(), "certified": a.certified,
                               "since": conditions.timestamp(a.since)}
        short = [f"{f} {getattr(s.resources, f)} > attested {getattr(a.resources, f)}"
                 for f in ("cru", "mru", "sru", "hru") if getattr(s.resources, f) > getattr(a.resources, f)]
        if short:
            ok, reason, message = False, Reason.CAPACITY_MISMATCH, "the spec expects more than the node attested: " \
                + ", ".join(short) + "; minting and DAO weight use the attested capacity"
        elif expects_certified and not a.certified:
            ok, reason, message = False, Reason.NOT_CERTIFIED, "spec.certified is true but the council has not " \
                "certified this node (or its capacity changed by more than 1 %, §1.3): minted as DIY"
        else:
            ok, reason, message = True, Reason.CAPACITY_ATTESTED, "the attested capacity covers the spec" + (
                "; certified by the council" if a.certified else "")
    desired["conditions"] = conditions.set_condition(desired["conditions"], type="Attested", status=ok, reason=reason,
                                                     message=message, generation=generation, now=stamp)
    if r is not None and r.inputs:
        desired["minting"] = {**desired["minting"], "uptimePermille": r.uptime_permille,
                              "cu": str(r.inputs.get("cu")), "su": str(r.inputs.get("su")),
                              "certified": bool(r.inputs.get("certified")),
                              "receipt": f"tfgrid-operator ledger mints --node {s.name} --period {r.period}"}
    return desired


def _farm_status(farm: records.Farm, nodes: list[records.NodeSummary], status: dict[str, Any], generation: int,
                 stamp: str) -> dict[str, Any]:
    cap, used = Resources(), Resources()
    for s in nodes:
        cap, used = cap + s.resources, used + s.used
    last_period = max((s.last_mint_period for s in nodes if s.last_mint_period is not None), default=None)
    fields = {
        "farmId": farm.id, "nodes": len(nodes), "capacity": cap.as_dict(), "used": used.as_dict(),
        "mintedLastPeriod": sum(s.last_mint or 0 for s in nodes if s.last_mint_period == last_period),
        "mintedTotal": sum(s.minted_total for s in nodes),
    }
    if last_period is not None:
        fields["lastMintPeriod"] = last_period
    return conditions.desired_status(status, generation=generation, now=stamp, ready=True, reason=Reason.AVAILABLE,
                                     message=f"registered as farm {farm.id}", fields=fields)


@functools.lru_cache(maxsize=1024)
def _hourly(resources: Resources, public_ips: int, certified: bool, dedicated: bool, policy: pricing.PricingPolicy,
            price: pricing.TftPrice) -> pricing.Bill:
    """An hour's price of a contract shape: a grid has few shapes and many contracts (the loop prices all of them)."""
    return pricing.bill(resources=resources, public_ips=public_ips, seconds=3600, certified=certified,
                        dedicated_node=resources if dedicated else None, balance=0, policy=policy, price=price)


def deployment_fields(c: records.Contract, policy: pricing.PricingPolicy, price: pricing.TftPrice) -> dict[str, Any]:
    """A Deployment's status fields from its contract: the handler and the loop write the same ones."""
    hourly = _hourly(c.resources, c.public_ips, c.certified, c.dedicated, policy, price)
    fields: dict[str, Any] = {
        "node": c.node, "farm": c.farm, "contractId": c.id, "contractState": c.state,
        "reserved": c.resources.as_dict(), "publicIPs": c.public_ips,
        "costPerHour": hourly.amount, "billedTotal": c.billed_total, "overdraft": c.overdraft,
        "discount": c.last_discount or "None",
    }
    if c.last_billed_at is not None:
        fields["lastBilledAt"] = conditions.timestamp(c.last_billed_at)
        fields["reserve"] = c.reserve  # the receipts: `tfgrid-operator ledger bills --deployment NS/NAME`
        fields["lastBill"] = {"amount": c.last_bill_amount or 0, "discount": c.last_discount or "None",
                              "billedAt": conditions.timestamp(c.last_billed_at)}
    if c.billing_error:
        fields["billingError"] = c.billing_error
    if c.state == "Deleted":
        fields["deletedReason"] = c.deleted_reason or ""
    # where self-healing last moved it from, as the ledger's contracts say (None removes a value someone else wrote)
    fields["movedFrom"] = c.moved_from
    return fields


def deployment_status(c: records.Contract, status: dict[str, Any], generation: int, stamp: str,
                      policy: pricing.PricingPolicy, price: pricing.TftPrice) -> dict[str, Any]:
    fields = deployment_fields(c, policy, price)
    if c.state == "Deleted":
        return conditions.desired_status(status, generation=generation, now=stamp, ready=False,
                                         reason=Reason.OUT_OF_FUNDS,
                                         message=f"contract {c.id} was deleted: {c.deleted_reason}", fields=fields)
    grace = c.state == "GracePeriod"
    return conditions.desired_status(
        status, generation=generation, now=stamp, ready=not grace,
        reason=Reason.GRACE_PERIOD if grace else Reason.AVAILABLE,
        message=f"contract {c.id} is in its grace period since {conditions.timestamp(c.grace_since or 0)}: "
                f"fund the payer to keep it" if grace else f"contract {c.id} on node {c.node}", fields=fields)


_CLOSED_NOTE = "closed: edits to the spec do not reopen or re-execute it"


def proposal_status(p: records.Proposal, spec: api.ProposalSpec, status: dict[str, Any], generation: int,
                    stamp: str, rejected: dict[str, Any]) -> dict[str, Any]:
    """A Proposal's status from the ledger (§5): the tally with weights captured at vote time, the state; the
    votes and vetoes its handler rejected (``rejected``: what the handler found, never what the status says, which
    its user can write, and which `vote` reads as its verdict). A spec whose action or threshold differs from what
    opened on the ledger is reported, never applied."""
    t = voting.tally({v.farm: v for v in p.votes})
    deadline = conditions.timestamp(p.end_ts)
    fields: dict[str, Any] = {
        "proposalId": p.id, "state": p.state, "deadline": deadline, "threshold": p.threshold,
        "ayesWeight": t.ayes_weight, "naysWeight": t.nays_weight, "ayes": t.ayes, "nays": t.nays, "vetoes": p.vetoes,
        "counted": [{"farm": v.farm, "approve": v.approve, "weight": v.weight, "seq": v.seq} for v in p.votes],
    }
    if p.executed_at is not None:
        fields["executedAt"] = conditions.timestamp(p.executed_at)
    for key in ("rejectedVotes", "rejectedVetoes"):
        if key in rejected:
            fields[key] = rejected[key]
    reason, message = {
        "Open": (Reason.VOTING, f"voting until {deadline}: {t.voters} of at least {p.threshold} farms voted"),
        "Executed": (Reason.EXECUTED, f"approved ({t.ayes_weight} > {t.nays_weight}) and executed at "
                                      f"{fields.get('executedAt')}; {_CLOSED_NOTE}"),
        "Rejected": (Reason.REJECTED, f"rejected at the deadline: {t.voters} farms voted (threshold {p.threshold}), "
                                      f"ayes {t.ayes_weight} vs nays {t.nays_weight}; {_CLOSED_NOTE}"),
        "Vetoed": (Reason.VETOED, f"vetoed by {p.vetoes} council members; {_CLOSED_NOTE}"),
    }.get(p.state, (Reason.VOTING, p.state))
    changed = p.action != spec.action.ledger_action() or p.threshold != spec.threshold or (
        p.nonce and p.nonce != spec.nonce)  # votes bind the nonce it opened with: a changed one fails them
    locked = changed and (
        f"the proposal is {_CLOSED_NOTE}" if p.state != "Open"
        else "the action, threshold and nonce are fixed once voting opens; create a new Proposal to change them")
    return conditions.desired_status(status, generation=generation, now=stamp, ready=True, reason=reason,
                                     message=message, fields=fields, synced=not locked,
                                     synced_reason=Reason.SPEC_LOCKED if locked else None,
                                     synced_message=locked or "")


def _gauges(rt: runtime.Runtime, summaries: dict[str, records.NodeSummary], contracts: dict[str, records.Contract]) -> None:
    total, used = Resources(), Resources()
    for s in summaries.values():
        total, used = total + s.resources, used + s.used
    for field in ("cru", "mru", "sru", "hru"):
        rt.metrics.capacity.labels(field, "total").set(getattr(total, field))
        rt.metrics.capacity.labels(field, "used").set(getattr(used, field))
    by_state: dict[str, int] = defaultdict(int)
    for c in contracts.values():
        by_state[c.state] += 1
    for state in ("Created", "GracePeriod", "Deleted"):
        rt.metrics.contracts.labels(state).set(by_state[state])
    by_kind: dict[tuple[str, str], int] = defaultdict(int)
    for (plural, _, _), body in rt.objects.items():
        ready = conditions.get((body.get("status") or {}).get("conditions") or [], "Ready") or {}
        by_kind[(plural[:-1], ready.get("status", "Unknown"))] += 1
    for (kind, ready), n in by_kind.items():
        rt.metrics.objects.labels(kind, ready).set(n)
