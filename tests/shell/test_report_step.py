"""The handlers' report step (handlers/reporting.apply): a change of only what moves by itself (a new bill, uptime, a
node's occupancy) is left to the loop's paced write-back — a restart resuming every object after a billing hour
must not write each new bill at once — and anything a person needs now is written whole, counters included."""

from __future__ import annotations

import kopf

from tfgrid_operator import clock, conditions, metrics, runtime
from tfgrid_operator.conditions import Reason
from tfgrid_operator.handlers import reporting
from tfgrid_operator.settings import Settings

STAMP = "2026-01-01T00:00:00Z"


def rt() -> runtime.Runtime:
    return runtime.Runtime(settings=Settings(), clock=clock.ManualClock(0), ledger=None,  # type: ignore[arg-type]
                           kube=None, metrics=metrics.Metrics())  # type: ignore[arg-type]


def deployment(status: dict) -> dict:
    return {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "a", "uid": "u1", "generation": 1}, "spec": {}, "status": status}


def ready(fields: dict, reason: Reason = Reason.AVAILABLE, status: dict | None = None) -> dict:
    return conditions.desired_status(status or {}, generation=1, now=STAMP, ready=reason == Reason.AVAILABLE,
                                     reason=reason, message="m", fields=fields)


def test_a_change_of_counters_only_is_left_to_the_paced_write_back_and_the_report_still_noted():
    r = rt()
    current = ready({"contractId": 1, "billedTotal": 10, "lastBilledAt": STAMP})
    body, patch = deployment(current), kopf.Patch()
    later = ready({"contractId": 1, "billedTotal": 25, "lastBilledAt": "2026-01-01T01:00:00Z"}, status=current)
    assert reporting.apply(r, body, patch, later) is False
    assert not patch  # nothing sent by kopf: the loop writes the new bill at its pace
    assert r.reported[("deployments", "a", "web")][:2] == ("u1", "Available")


def test_a_change_a_person_needs_goes_out_whole_with_the_counters():
    r = rt()
    current = ready({"contractId": 1, "billedTotal": 10})
    body, patch = deployment(current), kopf.Patch()
    moved = ready({"contractId": 2, "billedTotal": 25}, status=current)
    assert reporting.apply(r, body, patch, moved) is True
    assert patch["status"]["contractId"] == 2 and patch["status"]["billedTotal"] == 25
    waiting = ready({"billedTotal": 25}, reason=Reason.UNSCHEDULABLE, status=current)
    patch = kopf.Patch()
    assert reporting.apply(r, body, patch, waiting) is True and "conditions" in patch["status"]
    # a held object keeps its whole report (the loop writes it back); any other keeps only the reason
    assert r.reported[("deployments", "a", "web")][2] == waiting
