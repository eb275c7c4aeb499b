"""The status write-back of each tick: every object's status from a handful of ledger queries, queued for a PATCH
only where something changed, and sent at the pace of settings.status_writes_per_s (pacing.py): what a person needs
now first, counters (uptime, billed totals) after, and those at most every settings.counter_refresh_s of grid time;
a Node's occupancy (used, free, deployments), which moves with every placement, at most every
settings.occupancy_refresh_s of wall time (a burst of placements on a node is one write, not one a tick).

An object a handler holds (an invalid spec, a wait on the world, a name taken) keeps that handler's report: the
loop writes the report back over whatever was written since, and writes nothing of the ledger on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from typing import Any

from tfgrid_operator import api, conditions, runtime
from tfgrid_operator.backend import records
from tfgrid_operator.backend.config import LedgerConfig
from tfgrid_operator.conditions import HANDLER_OWNED, Reason
from tfgrid_operator.domain import pricing
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import ApiError
from tfgrid_operator.loop import mirror
from tfgrid_operator.loop.pacing import NUDGE, PacedWrites, Write
from tfgrid_operator.loop.requeue import Key, due, forget_gone, nudge
from tfgrid_operator.loop.status import (
    COUNTERS,
    OCCUPANCY,
    ROUTINE,
    deployment_status,
    farm_status,
    node_attestation,
    node_status,
    proposal_status,
)

log = logging.getLogger("tfgrid_operator.loop")

# objects compared between two yields to the event loop: a pass over every object at grid size (11,050) held the
# loop for 0.26-0.86 s in one piece (issue 17: the longest stalls of a restart and of a period), and an object created
# meanwhile waited for all of it
YIELD_EVERY = 500

# status fields that say which ledger record an object is: removed when written on an object whose name is taken
IDENTITY = ("farmId", "nodeId", "contractId", "proposalId", "node", "farm", "contractState")


@dataclasses.dataclass(frozen=True)
class LedgerView:
    """What one refresh reads from the ledger, once for every object."""

    now: int
    stamp: str
    cfg: LedgerConfig
    summaries: dict[str, records.NodeSummary]
    proposals: dict[str, records.Proposal]
    contracts: dict[str, records.Contract]
    policy: pricing.PricingPolicy
    attested: dict[str, records.Attestation]
    receipts: dict[str, records.MintReceipt]
    farms: dict[str, list[records.NodeSummary]]  # farm name → its nodes
    farm_records: dict[str, records.Farm]


async def read_ledger(rt: runtime.Runtime, now: int, summaries: dict[str, records.NodeSummary],
                      proposals: dict[str, records.Proposal]) -> LedgerView:
    contracts = await rt.ledger.contract_summaries()
    policy, _ = await rt.ledger.policies()
    attested, receipts = await rt.ledger.attestations(), await rt.ledger.last_receipts()
    farms: dict[str, list[records.NodeSummary]] = defaultdict(list)
    for s in summaries.values():
        farms[s.farm].append(s)
    farm_records = {f.name: f for f in await rt.ledger.list_farms()}
    return LedgerView(now, conditions.timestamp(now), rt.ledger.config, summaries, proposals, contracts, policy,
                      attested, receipts, farms, farm_records)


def paced_writes(rt: runtime.Runtime) -> PacedWrites:
    """The loop's write queue and budget (one per run of the loop: run_forever makes it)."""
    async def send(w: Write) -> None:
        if not _alive(rt, w):
            return  # gone, going, or another object of that name since it was queued
        if w.kind == NUDGE:
            await nudge(rt, *w.key)
        elif (rt.objects[w.key].get("status") or {}) != w.basis or rt.reported.get(w.key) is not w.report or \
                w.key in rt.busy:
            # written since, or its handler reported since or is running (a write of its own on the way): compare again
            rt.refreshed.pop(w.key, None)
            rt.counters_written.pop(w.key, None)
            rt.occupancy_written.pop(w.key, None)
        else:
            await _send(rt, *w.key, w.change)
    writes = PacedWrites(rt.settings.status_writes_per_s, send)
    rt.metrics.writes_queued.set_function(lambda: len(writes))  # read when scraped
    return writes


async def refresh(rt: runtime.Runtime, now: int, summaries: dict[str, records.NodeSummary],
                  proposals: dict[str, records.Proposal], writes: PacedWrites) -> int:
    """Queue each object's status from the ledger where something changed; send what the budget has room for now
    (the rest is carried to the pacer, never recomputed). Returns how many writes were sent in this tick."""
    # the handlers' reports as the ledger is read: an object whose handler reports after that wrote a status newer
    # than this view (its ledger call came later), so this tick leaves it alone and the next compares again
    reports = dict(rt.reported)
    ledger = await read_ledger(rt, now, summaries, proposals)
    forget_gone(rt)
    writes.keep(lambda w: _alive(rt, w))
    for key in await due(rt, YIELD_EVERY):
        if (body := rt.objects.get(key)) is not None:  # not gone since it was found due
            writes.offer_nudge(key, body["metadata"].get("uid", ""))
    readiness: dict[tuple[str, str], int] = defaultdict(int)  # (kind, Ready's status) → objects, for the gauge
    for i, key in enumerate(list(rt.objects)):
        if i and i % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # kopf's handlers run between slices: a pass over the grid never holds the loop
        body = rt.objects.get(key)  # as it is now: an event may have come during the last slice's yield
        if body is not None:
            ready = conditions.get((body.get("status") or {}).get("conditions") or [], "Ready") or {}
            readiness[(key[0][:-1], ready.get("status", "Unknown"))] += 1
        if body is None or rt.reported.get(key) is not reports.get(key) or key in rt.busy or \
                key[0] in rt.unfollowed:
            # its handler reported since the ledger was read, or is running: the handler's report stands; or its
            # kind's watch stopped (a standby replica): what it shows may be old
            continue
        desired = desired_status(rt, ledger, key, body)
        if desired is None:
            continue  # nothing to write, or nothing new since compared: what is queued stands
        change = conditions.diff(body.get("status") or {}, desired)
        if not change:
            writes.withdraw(key)  # already what it should be (a handler wrote it, or the write landed)
        elif writes.queued(key) is not None or not _routine_held(rt, key, change, now):
            writes.offer_status(key, body["metadata"].get("uid", ""), change, urgent=not set(change) <= ROUTINE,
                                basis=body.get("status") or {}, report=reports.get(key))
        else:
            rt.refreshed.pop(key, None)  # a deferred counter: compare again next tick

    started = time.perf_counter()
    sent = await writes.flush()
    rt.metrics.reconcile_time.labels("periodic").observe(time.perf_counter() - started)
    _gauges(rt, summaries, ledger.contracts, readiness)
    rt.metrics.proposals_open.set(sum(p.state == "Open" for p in proposals.values()))
    return sent


def _alive(rt: runtime.Runtime, w: Write) -> bool:
    body = rt.objects.get(w.key)
    return body is not None and not body["metadata"].get("deletionTimestamp") and \
        body["metadata"].get("uid", "") == w.uid


def desired_status(rt: runtime.Runtime, ledger: LedgerView, key: Key, body: dict[str, Any]) -> dict[str, Any] | None:
    """The status the ledger says this object has; None: leave it alone (being deleted, no report of its handler
    in this process, no generation applied yet, not this object's record, or nothing changed since compared)."""
    plural, ns, name = key
    status = body.get("status") or {}
    uid = body["metadata"].get("uid", "")
    held = rt.reported.get(key)  # what its handler reported, never what its status claims
    if body["metadata"].get("deletionTimestamp") or held is None or held[0] != uid:
        return None
    # the generation whose reconcile finished, as the handler reported it: the loop refreshes what the ledger
    # says but never claims a generation no handler has applied yet (a spec edit waiting in kopf's queue)
    generation = status.get("observedGeneration")
    if generation is None:
        return None
    owner = records.Owner(ns, uid)
    if held[1] in HANDLER_OWNED:  # the handler's report stands, whatever was written over it since
        claimed = {k: None for k in IDENTITY if k in status} if held[1] == Reason.NAME_TAKEN else {}
        return {**claimed, **held[2]}  # a NameTaken object is no ledger record: no identity on it
    if plural == "nodes" and name in ledger.summaries and _mine(ledger.summaries[name].owner, owner):
        desired = node_status(ledger.summaries[name], status, generation, ledger.stamp, ledger.now, ledger.cfg)
        return node_attestation(desired, mirror.spec_of(body), ledger.summaries[name], ledger.attested.get(name),
                                ledger.receipts.get(name), generation, ledger.stamp)
    if plural == "farms" and name in ledger.farm_records and _mine(ledger.farm_records[name].owner, owner):
        return farm_status(ledger.farm_records[name], ledger.farms.get(name, []), status, generation, ledger.stamp)
    if plural == "deployments" and f"{ns}/{name}" in ledger.contracts and \
            ledger.contracts[f"{ns}/{name}"].owner_uid in ("", uid):
        c = ledger.contracts[f"{ns}/{name}"]
        seen = rt.refreshed.get(key)
        if seen is not None and seen[0] is body.get("status") and seen[1:] == (c, generation, ledger.policy):
            return None  # nothing it is made of changed since it was last compared: no change to find
        rt.refreshed[key] = (body.get("status"), c, generation, ledger.policy)
        return deployment_status(c, status, generation, ledger.stamp, ledger.policy, ledger.cfg.tft_price)
    if plural == "proposals" and f"{ns}/{name}" in ledger.proposals and "proposalId" in status:
        try:
            spec = api.parse(api.ProposalSpec, mirror.spec_of(body))
        except api.InvalidSpec:
            return None
        return proposal_status(ledger.proposals[f"{ns}/{name}"], spec, status, generation, ledger.stamp, held[2])
    return None


async def _send(rt: runtime.Runtime, plural: str, ns: str, name: str, change: dict[str, Any]) -> None:
    """One status PATCH, checked against its kind's model as it is sent (api.check_status: what goes out is what a
    real API server keeps), not as it is queued: a period's write-back queues a change for every object at once, and
    checking them there was 14 % of a period's tick at grid size (~0.28 s of the event loop in one piece; issue 17,
    py-spy), for changes many of which a later tick replaces before they go. A change the model refuses is this
    object's alone (it failed the whole tick when checked as queued): never written, counted, logged as an error
    once per object and reason, and found again at the cadence its fields have."""
    key = (plural, ns, name)
    try:
        checked = api.check_status(plural, change)
    except api.InvalidStatus as err:
        rt.refreshed.pop(key, None)  # compared again next tick; counters and occupancy keep their cadence
        rt.metrics.status_refused.labels(plural[:-1]).inc()
        known, rt.refused[key] = rt.refused.get(key), str(err)
        (log.debug if known == str(err) else log.error)("Status of %s %s/%s not written: %s", plural, ns, name, err)
        return
    rt.refused.pop(key, None)
    try:
        written = await rt.kube.patch_status(runtime.GROUP, runtime.VERSION, plural, ns, name, checked)
        tracked = rt.objects.get(key)
        if tracked is not None and isinstance(written, dict) and \
                (written.get("metadata") or {}).get("uid", "") in ("", tracked["metadata"].get("uid", "")):
            # the next tick diffs against what was written, even before the watch delivers it (never onto another
            # object of that name that came meanwhile)
            tracked["status"] = mirror.slim_status(written.get("status") or {})
    except Exception as err:  # an API error or a dropped connection: one object's write never stops the others
        rt.refreshed.pop(key, None)  # not written: compare (and write) again next tick
        rt.counters_written.pop(key, None)
        rt.occupancy_written.pop(key, None)
        if not (isinstance(err, ApiError) and err.status == 404):
            log.warning("Status patch of %s %s/%s failed: %s", plural, ns, name, err)


def _routine_held(rt: runtime.Runtime, key: Key, change: dict[str, Any], now: int) -> bool:
    """True when only routine fields moved and this object's were written for themselves too recently: counters
    (uptime, billed total) less than settings.counter_refresh_s of grid time ago (grid time of the tick that found
    them), occupancy (a Node's used/free/deployments) less than settings.occupancy_refresh_s of wall time ago
    (placements come at the speed of the cluster, not of grid time). Such a status is current enough. Anything
    else writes now and leaves both clocks alone (a move in mid-hour never holds back the next hour's bill), so two
    routine writes of an object are a full cadence apart; a write that takes either clock takes both fields."""
    if not set(change) <= ROUTINE:
        return False
    counters_due = _due(rt.counters_written, key, now, rt.settings.counter_refresh_s)
    occupancy_due = _due(rt.occupancy_written, key, time.monotonic(), rt.settings.occupancy_refresh_s)
    moved_counters, moved_occupancy = bool(set(change) & COUNTERS), bool(set(change) & OCCUPANCY)
    if (moved_counters and counters_due) or (moved_occupancy and occupancy_due):
        if moved_counters:
            rt.counters_written[key] = now
        if moved_occupancy:
            rt.occupancy_written[key] = time.monotonic()
        return False
    return True


def _due(written: dict[Key, Any], key: Key, now: float, cadence: float) -> bool:
    last = written.get(key)
    return last is None or now - last >= cadence


def _mine(record: records.Owner, obj: records.Owner) -> bool:
    """Whether a ledger record is this object's (made by it, or made before ownership and not claimed since)."""
    if record.uid == "":
        return record.namespace in ("", obj.namespace)
    return record == obj


def _gauges(rt: runtime.Runtime, summaries: dict[str, records.NodeSummary], contracts: dict[str, records.Contract],
            readiness: dict[tuple[str, str], int]) -> None:
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
    for plural in mirror.PLURALS:  # every kind and state, so a count that fell to none reads 0, not its last value
        for ready in ("True", "False", "Unknown"):
            rt.metrics.objects.labels(plural[:-1], ready).set(readiness.get((plural[:-1], ready), 0))
