"""The period jobs of each tick: mint every minting period that has ended (plus the settle time), bill every
billing period that has ended, close proposals past their deadline, close contracts nothing proves any more
(grant ended, Deployment gone) and move deployments off nodes that went down. Periods are processed from the
ledger's watermark, so a restart neither skips nor repeats one.
"""

from __future__ import annotations

import logging
import time

from tfgrid_operator import api, conditions, runtime
from tfgrid_operator.backend import errors, records
from tfgrid_operator.backend.config import LedgerConfig
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain import billing, minting, voting
from tfgrid_operator.kube.client import ApiError
from tfgrid_operator.loop import mirror
from tfgrid_operator.loop.events import concurrently, event, object_ref
from tfgrid_operator.loop.requeue import nudge
from tfgrid_operator.loop.status import node_down

log = logging.getLogger("tfgrid_operator.loop")


async def mint_due(rt: runtime.Runtime, now: int, cfg: LedgerConfig) -> int:
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
            ref = object_ref(rt, "nodes", name, s.owner.namespace) if s is not None else None  # the owner's, never a namesake's
            if s is not None and ref is not None:
                minted_events.append(event(rt, ref, "Normal", Reason.MINTED,
                                           f"Minting period {k}: {s.last_mint} units ({s.last_mint_reason})"))
        await concurrently(minted_events)
        k += 1
        done += 1


async def bill_due(rt: runtime.Runtime, now: int, cfg: LedgerConfig) -> int:
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
            ref, c = object_ref(rt, "deployments", name, ns), contracts.get(key)
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
        ref = object_ref(rt, "proposals", name, ns)
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
    if c.state == "Deleted" and c.deleted_reason == billing.GRANT_EXPIRED:
        return ("Warning", Reason.GRANT_EXPIRED, f"Contract {c.id}: the grant of its payer {c.payer!r} ended at "
                f"{conditions.timestamp(c.deleted_at or 0)}; contract deleted with its final bill up to then and "
                f"capacity on node {c.node} released")
    if c.state == "Deleted":
        return ("Warning", Reason.OUT_OF_FUNDS, f"Contract {c.id}: the grace period ended unpaid; contract deleted "
                f"and capacity on node {c.node} released")
    return ("Normal", Reason.FUNDED, f"Contract {c.id}: the payer {c.payer!r} paid what was owed; billing resumed")


async def heal(rt: runtime.Runtime, now: int, summaries: dict[str, records.NodeSummary]) -> int:
    """Self-healing: deployments on a node with no valid uptime report for too long move elsewhere.
    The old contract gets a final bill up to now and the new one starts now: no time is billed twice."""
    down_after = rt.ledger.config.node_down_after_s
    down = {n for n, s in summaries.items() if node_down(s, now, down_after)}
    if not down or "deployments" in rt.unfollowed:  # a move reads the Deployment's spec: never one as last seen
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
            spec = api.parse(api.DeploymentSpec, mirror.spec_of(body))
        except api.InvalidSpec:
            continue
        if not spec.self_healing:
            continue
        try:
            new = await rt.ledger.move_contract(key=key, request=spec.request(exclude=frozenset(down)), now=now)
        except errors.NoCapacity as err:
            await event(rt, object_ref(rt, "deployments", name, ns) or body, "Warning", Reason.NODE_DOWN,
                        f"node {c.node} is down and no other node fits: {err.message}")
            continue
        except errors.NotFound:  # closed since the list (its Deployment deleted meanwhile): the others still move
            continue
        if not new.created:  # its final bill ended the grace period unpaid: deleted (OutOfFunds), not moved
            continue
        moved += 1  # the move is on the ledger: refresh writes status.movedFrom from it (Contract.moved_from)
        await event(rt, object_ref(rt, "deployments", name, ns) or body, "Normal", Reason.MOVED,
                    f"Node {c.node} is down; moved to node {new.node} as contract {new.id} "
                    f"(contract {c.id} closed with a final bill)")
    return moved


# monotonic seconds between two full orphan sweeps (one LIST per namespace that has live contracts): a safety net, since
# the loop's own watch (mirror.py) asks for a sweep of each Deployment it sees vanish, as an event or missing from a
# LIST after a dropped watch; every 60 s it LISTed all 10,000 Deployments four times during a burst at grid size
SWEEP_EVERY_S = 300.0
RENEW_BEFORE_S = 24 * 3600  # in a grant's last day, its Deployment is reconciled (reads its grant again) …
RENEW_EVERY_S = 3600  # … once an hour of grid time, so a grant renewed in its last day is seen before it ends


async def sweep(rt: runtime.Runtime, now: int) -> int:
    """Close the live contracts nothing proves any more, each with its final bill (design.md "Trust model"):
    every tick, those whose payer grant ended (GrantExpired; in a grant's last day its Deployment is reconciled
    to read a renewed one); and orphans (Orphaned), whose Deployment is gone or is a later object of the same name
    (another uid): on the first tick (what happened while the operator was down), every SWEEP_EVERY_S, and on the
    tick after a Deployment vanished while its contract is still live (only its namespace is listed then). Objects
    are LISTed from the API server, never taken from the watch cache; a namespace that cannot be listed closes
    nothing (fail closed)."""
    now = max(now, rt.clock.now())  # an object that vanished during this tick is billed up to now, not the tick's start
    # the live contracts whose grant ends within RENEW_BEFORE_S (usually none): not every contract ever made
    ending = await rt.ledger.live_contracts(proof_until_before=now + RENEW_BEFORE_S)
    closing: dict[str, tuple[records.Contract, str]] = {}
    renew = []
    for key, c in ending.items():
        if c.proof_until is None:
            continue
        if c.proof_until <= now:
            closing[key] = (c, billing.GRANT_EXPIRED)
        elif c.proof_until - now <= RENEW_BEFORE_S and now - rt.renewals.get((key, c.proof_until), -RENEW_EVERY_S) >= \
                RENEW_EVERY_S:
            rt.renewals[(key, c.proof_until)] = now
            renew.append(key)
    vanished, rt.vanished = rt.vanished, set()
    if time.monotonic() >= rt.sweep_at:  # its first tick, after rt.request_sweep(), or SWEEP_EVERY_S after the last
        rt.sweep_at = time.monotonic() + SWEEP_EVERY_S
        suspects = await rt.ledger.live_contracts()
    else:  # the live contracts of Deployments that vanished since: usually none (our delete handler closed them)
        suspects = await rt.ledger.live_contracts(keys=vanished) if vanished else {}
    if suspects:
        closing.update({k: (c, "Orphaned") for k, c in (await _orphans(rt, suspects)).items() if k not in closing})
    # an orphan is billed up to when its object was seen gone (the LIST just made), not the sweep's start: the
    # object may have vanished while the ledger was read (the e2e tenancy test caught a close a quarter hour early).
    # A contract whose grant ended is billed up to its grant's end whatever the close's time (its final bill stops
    # there and ends it: grid-rules.md "grants"), and not closed if a renewed grant reached the ledger meanwhile
    seen_gone = max(now, rt.clock.now())
    for key, (c, reason) in sorted(closing.items()):
        try:  # one contract that cannot be closed never stops the others (nor the rest of the tick)
            closed = await rt.ledger.close_contract(key=key, owner_uid=c.owner_uid, reason=reason,
                                                    now=seen_gone if reason == "Orphaned" else now)
        except errors.LedgerError as err:
            log.warning("Contract %s of %s could not be closed (%s): %s", c.id, key, reason, err.message)
            continue
        log.info("Contract %s of %s closed (%s) with a final bill; billed total %s units", c.id, key, reason,
                 closed.billed_total if closed else "?")
    for held in [k for k in rt.renewals if k[0] in closing or k[0] not in ending or ending[k[0]].proof_until != k[1]]:
        del rt.renewals[held]  # forgotten with its grant (closed, or renewed past RENEW_BEFORE_S)
    await concurrently([nudge(rt, "deployments", *k.split("/", 1)) for k in renew if k not in closing])
    return len(closing)


async def _orphans(rt: runtime.Runtime, live: dict[str, records.Contract]) -> dict[str, records.Contract]:
    """The live contracts whose Deployment is gone, or is another object (uid) of the same name."""
    found = {}
    for ns in sorted({k.partition("/")[0] for k in live}):
        present: dict[str, str] = {}
        try:
            async for items, _version in rt.kube.list_pages(rt.kube.path(runtime.GROUP, runtime.VERSION,
                                                                         "deployments", ns)):
                present.update((o["metadata"]["name"], o["metadata"].get("uid", "")) for o in items)
        except ApiError as err:
            log.warning("Cannot list the Deployments of namespace %s; no orphan of it is closed: %s", ns, err)
            continue
        for key, c in live.items():
            space, _, name = key.partition("/")
            if space == ns and (name not in present or c.owner_uid not in ("", present[name])):
                found[key] = c
    return found

