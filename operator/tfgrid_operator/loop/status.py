"""What the ledger's records show as status: pure projections, record → status dict, no I/O.

The batched loop (refresh.py) and the reconcile handlers write the same fields from the same functions, so a
status never depends on which of the two wrote it last.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Any

from tfgrid_operator import api, conditions
from tfgrid_operator.backend import records
from tfgrid_operator.backend.config import LedgerConfig
from tfgrid_operator.conditions import Reason
from tfgrid_operator.domain import billing, pricing, units, voting
from tfgrid_operator.domain.units import Resources

# fields that move with every uptime report or billing period; a change of anything else writes at once
COUNTERS = frozenset({"uptimeSeconds", "uptimePercent", "lastReportAt", "billedTotal", "lastBilledAt", "discount",
                      "reserve", "lastBill"})
# a Node's share taken by deployments: moves with every placement, removal and move
OCCUPANCY = frozenset({"used", "free", "usedPercent", "deployments"})
ROUTINE = COUNTERS | OCCUPANCY  # what moves by itself, written at the loop's paced cadence; the rest at once


def node_down(s: records.NodeSummary | None, now: int, down_after: int) -> bool:
    """§1.3: no valid uptime report for longer than ``down_after`` (a node that never reported is not down)."""
    return s is not None and s.last_report_ts is not None and now - s.last_report_ts > down_after


def _percent(used: Resources, total: Resources) -> int:
    ratios = [Fraction(getattr(used, f), getattr(total, f)) for f in ("cru", "mru", "sru", "hru") if getattr(total, f)]
    return int(max(ratios, default=Fraction(0)) * 100)


def _dec(x: Fraction) -> str:
    return f"{float(x):.2f}".rstrip("0").rstrip(".")


def node_status(s: records.NodeSummary, status: dict[str, Any], generation: int, stamp: str, now: int,
                cfg: LedgerConfig) -> dict[str, Any]:
    free = s.resources - s.used
    fields: dict[str, Any] = {
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
    down = node_down(s, now, cfg.node_down_after_s)
    message = (f"no valid uptime report since {fields.get('lastReportAt')}" if down
               else f"registered as node {s.node_id}")
    return conditions.desired_status(status, generation=generation, now=stamp, ready=not down,
                                     reason=Reason.NODE_DOWN if down else Reason.AVAILABLE, message=message,
                                     fields=fields)


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


def farm_status(farm: records.Farm, nodes: list[records.NodeSummary], status: dict[str, Any], generation: int,
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


# a Deployment whose contract the ledger deleted says why in its Ready condition: its grant ended or was revoked, or
# (a grace that ran out, and any other end a live Deployment can show) OutOfFunds
DELETION_REASONS = {billing.GRANT_EXPIRED: Reason.GRANT_EXPIRED, billing.GRANT_REVOKED: Reason.GRANT_REVOKED}


def deployment_status(c: records.Contract, status: dict[str, Any], generation: int, stamp: str,
                      policy: pricing.PricingPolicy, price: pricing.TftPrice) -> dict[str, Any]:
    fields = deployment_fields(c, policy, price)
    if c.state == "Deleted":
        return conditions.desired_status(status, generation=generation, now=stamp, ready=False,
                                         reason=DELETION_REASONS.get(c.deleted_reason or "", Reason.OUT_OF_FUNDS),
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
