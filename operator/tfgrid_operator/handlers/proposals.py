"""Proposal (§5): a council-signed proposal opens on the ledger; signed farm votes and council vetoes count.

Who may create a Proposal object is Kubernetes RBAC's decision; whether it is a proposal at all is the
council signature's. Votes and vetoes arrive in the spec (a Git pull request, or `tfgrid-operator vote`
patching it); each is verified here and on the ledger, counted once, and a rejected one gets an Event
naming it once. Closing at the deadline and executing the action happen in the batched loop.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from tfgrid_operator import api, ballot, conditions, runtime
from tfgrid_operator.backend import errors, records
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain import identity, voting
from tfgrid_operator.handlers import reporting
from tfgrid_operator.loop import status as projections

G, V = runtime.GROUP, runtime.VERSION
log = logging.getLogger("tfgrid_operator.proposals")

NOT_YET = frozenset({"UnknownFarm", "FarmHasNoNodes"})  # a vote that may count once its farm registers
_VOTE_ERRORS: tuple[tuple[type[errors.LedgerError], str], ...] = (
    (errors.BadSignature, "BadSignature"), (errors.NotFound, "UnknownFarm"), (errors.Superseded, "Superseded"),
    (errors.Replayed, "ProposalClosed"), (errors.InvalidRequest, "FarmHasNoNodes"),
)


def council_problem(s: api.ProposalSpec, key: str, council: frozenset[str]) -> str | None:
    if s.council_key not in council:
        return f"councilKey {s.council_key!r} is not a council member's key"
    if not s.nonce:
        return ("the proposal carries no nonce: a council signature opens one proposal, once, and says which by its "
                "nonce; have it signed again (tfgrid-operator council sign)")
    try:
        identity.verify(s.council_key, voting.PROPOSAL_V2, s.signed_payload(key), s.council_signature)
    except identity.BadSignature:
        return "councilSignature does not verify: the proposal was not signed (as it stands) by councilKey"
    return None


def veto_problem(v: api.SignedVeto, key: str, prop: records.Proposal, council: frozenset[str]) -> str | None:
    """Why a veto does not count on the ledger's proposal ``prop`` (None: it does). It must sign ``prop``'s ledger
    identity, its id and nonce as the ledger holds them, never what the object's status or spec says."""
    if v.member_key not in council:
        return "NotCouncil"
    try:
        identity.verify(v.member_key, identity.VETO,
                        ballot.veto_payload(proposal=key, proposal_id=prop.id, nonce=prop.nonce), v.signature)
    except identity.BadSignature:
        return "BadSignature"
    return None


async def cast_votes(rt: runtime.Runtime, body: Any, key: str, s: api.ProposalSpec, prop: records.Proposal,
                     now: int) -> tuple[records.Proposal, list[dict[str, Any]]]:
    """Count each new or switched vote once; return the proposal and the rejected votes with reasons (and the
    sequence number of the entry rejected, so `vote` can tell its own verdict from an earlier one's)."""
    ledger = rt.ledger
    counted = {v.farm: (v.approve, v.seq) for v in prop.votes}
    rejected: list[dict[str, Any]] = []
    seen: set[str] = set()
    for v in s.votes:
        if v.farm in seen:
            rejected.append({"farm": v.farm, "reason": "DuplicateVote"})
            continue
        seen.add(v.farm)
        if v.seq is None:  # signs neither this proposal's digest nor a sequence: it could be replayed anywhere
            rejected.append({"farm": v.farm, "reason": "Unbound"})
            continue
        if counted.get(v.farm) == (v.approve, v.seq):
            continue  # counted already: re-reconciling is not a second vote
        try:
            prop = await ledger.cast_vote(proposal=key, farm=v.farm, approve=v.approve, seq=v.seq,
                                          signature=v.signature, now=now)
        except errors.Unavailable:
            raise
        except errors.LedgerError as err:
            rejected.append({"farm": v.farm, "seq": v.seq,
                             "reason": next((r for cls, r in _VOTE_ERRORS if isinstance(err, cls)), err.reason)})
            continue
        weight = next(x.weight for x in prop.votes if x.farm == v.farm)
        kopf.info(body, reason=str(Reason.VOTE_COUNTED),
                  message=f"Vote of farm {v.farm} counted: {'aye' if v.approve else 'nay'} with weight {weight}")
    return prop, rejected


async def apply_vetoes(rt: runtime.Runtime, key: str, s: api.ProposalSpec,
                       prop: records.Proposal) -> tuple[records.Proposal, list[dict[str, str]]]:
    rejected: list[dict[str, str]] = []
    for v in s.vetoes:
        problem = veto_problem(v, key, prop, rt.settings.council)
        if problem is None:
            prop = await rt.ledger.veto(proposal=key, member_key=v.member_key)
        else:
            rejected.append({"memberKey": v.member_key, "reason": problem})
    return prop, rejected


def warn_new(body: Any, before: list[dict[str, Any]] | None, now: list[dict[str, Any]], reason: Reason, what: str) -> None:
    """An Event for each rejection not already in status: one Event per rejected vote, not one per reconcile."""
    for r in now:
        if r not in (before or []):
            kopf.warn(body, reason=str(reason), message=f"{what.format(**r)} does not count: {r['reason']}")


async def open_proposal(rt: runtime.Runtime, body: Any, patch: kopf.Patch, key: str, s: api.ProposalSpec,
                        now: int) -> records.Proposal | None:
    """The ledger's proposal; opened now if the council signature holds, else None after saying why."""
    prop = await rt.ledger.observe_proposal(key=key)
    if prop is not None:
        return prop
    problem = council_problem(s, key, rt.settings.council)
    if problem is None:
        try:
            opened = await rt.ledger.ensure_proposal(
                key=key, action=s.action.ledger_action(), threshold=s.threshold, end_ts=now + s.duration_hours * 3600,
                nonce=s.nonce or "", council_key=s.council_key, signed_digest=voting.payload_digest(s.signed_payload(key)))
        except errors.Replayed as err:  # a withdrawn proposal's signature, used again
            problem = err.message
        else:
            kopf.info(body, reason=str(Reason.PROPOSED),
                      message=f"Proposal {opened.id} open for votes until {conditions.timestamp(opened.end_ts)}")
            return opened
    if reporting.report(rt, body, patch, ready=False, reason=Reason.UNAUTHORIZED, message=problem):
        kopf.warn(body, reason=str(Reason.UNAUTHORIZED), message=problem)
    return None


@reporting.reconciler("proposals", "proposal")
async def reconcile_proposal(body: Any, spec: Any, name: str, namespace: str, patch: kopf.Patch, memo: kopf.Memo,
                             **_: Any) -> None:
    rt = runtime.get(memo)
    key = f"{namespace}/{name}"
    s = reporting.parse_spec(rt, api.ProposalSpec, body, spec, patch)
    if s is None:
        return
    now = rt.clock.now()
    try:
        prop = await open_proposal(rt, body, patch, key, s, now)
        if prop is None:
            return
        prop, bad_votes = await cast_votes(rt, body, key, s, prop, now)
        prop, bad_vetoes = await apply_vetoes(rt, key, s, prop)
    except errors.LedgerError as err:
        reporting.ledger_failure(rt, body, patch, err, ready_reason=Reason.CREATING)
    status = dict(body.get("status") or {})
    warn_new(body, status.get("rejectedVotes"), bad_votes, Reason.VOTE_REJECTED, "Vote of farm {farm}")
    warn_new(body, status.get("rejectedVetoes"), bad_vetoes, Reason.VETO_REJECTED, "Veto by {memberKey}")
    reporting.apply(rt, body, patch, projections.proposal_status(
        prop, s, status, body["metadata"].get("generation", 1), conditions.timestamp(now),
        {"rejectedVotes": bad_votes, "rejectedVetoes": bad_vetoes}))
    waiting = sorted(r["farm"] for r in bad_votes if r["reason"] in NOT_YET)
    if waiting and prop.state == "Open":  # a farm (or its nodes) may register later in the same sync: try again
        raise reporting.Blocked(f"votes of {', '.join(waiting)} wait for their farm on the ledger",  # expected
                                delay=rt.retry_delay_s * 10)


@kopf.on.delete(G, V, "proposals")
@reporting.metered("proposal")
async def withdraw_proposal(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """Deleting an open Proposal withdraws it (issue 13, invariant 5): it never closes, executes or takes votes."""
    prop = await runtime.get(memo).ledger.withdraw_proposal(proposal=f"{namespace}/{name}")
    if prop is not None and prop.state == "Withdrawn":
        log.info("Proposal %s/%s (ledger id %s) withdrawn", namespace, name, prop.id)


