"""Prometheus metrics on an injectable registry. Names follow controller-runtime's where they overlap;
no label is ever an object name (bounded cardinality). Money is in TFT smallest units (10^7 per TFT)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_total = Counter("controller_runtime_reconcile_total", "Reconciles per controller and result.",
                                       ["controller", "result"], registry=r)
        self.reconcile_errors = Counter("controller_runtime_reconcile_errors_total", "Reconcile errors per controller.",
                                        ["controller"], registry=r)
        self.reconcile_time = Histogram("controller_runtime_reconcile_time_seconds", "Reconcile duration.",
                                        ["controller"], registry=r)
        self.loop_tick = Histogram("tfgrid_loop_tick_seconds", "Duration of the batched loop's ticks (minting, "
                                   "billing, healing and the status refresh of every object).", registry=r,
                                   buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.objects = Gauge("tfgrid_objects", "Objects by kind and Ready condition.", ["kind", "ready"], registry=r)
        self.capacity = Gauge("tfgrid_capacity", "Grid capacity (cores, GiB) by resource and state.",
                              ["resource", "state"], registry=r)
        self.minted = Counter("tfgrid_minted_units_total", "TFT units minted (Proof-of-Capacity).", registry=r)
        self.billed = Counter("tfgrid_billed_units_total", "TFT units billed (Proof-of-Utilization).", registry=r)
        self.contracts = Gauge("tfgrid_contracts", "Contracts by state.", ["state"], registry=r)
        self.proposals_open = Gauge("tfgrid_proposals_open", "Open DAO proposals.", registry=r)
        self.writes_queued = Gauge("tfgrid_status_writes_queued", "The loop's writes (status PATCHes, requeue "
                                   "touches) waiting for its budget (TFGRID_STATUS_WRITES_PER_S).", registry=r)
        self.status_refused = Counter("tfgrid_status_refused_total", "Status changes the loop did not write: the "
                                      "kind's status model refused them (a defect; the log names the field).",
                                      ["kind"], registry=r)
        self.uptime_rejected = Counter("tfgrid_uptime_reports_rejected_total", "Rejected uptime reports by reason.",
                                       ["reason"], registry=r)
        for kind in ("farm", "node", "deployment", "proposal", "lease"):
            for result in ("success", "error", "requeue"):
                self.reconcile_total.labels(kind, result)

    def reconciled(self, controller: str, result: str = "success") -> float:
        """One reconcile counter's value, cheaply (the sandbox polls it to know the operator caught up)."""
        return float(self.reconcile_total.labels(controller, result)._value.get())  # prometheus_client's child value
