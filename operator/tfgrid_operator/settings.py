"""Operator settings: env prefix TFGRID_, nested delimiter __. CLI flags override env."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TFGRID_", env_nested_delimiter="__")

    ledger_url: str = Field("sqlite:///tfgrid-ledger.db", description="sqlite:///file.db (default) or postgresql://…")
    watch_namespace: str = Field("", description="the one namespace the operator watches (`run --namespace` sets "
                                                 "it); empty: every namespace")
    metrics_port: int = Field(9090, description="Prometheus /metrics port; 0 disables it")
    tick_s: float = Field(5.0, description="how often (wall seconds) the batched billing/minting/status loop runs")
    worker_limit: int = Field(256, description="objects kopf reconciles at once (0: no limit); the rest wait in "
                                               "its queue, which bounds memory in a burst of creations")
    nudge_after_s: float = Field(30.0, description="an object whose status has not shown its generation this long "
                                                   "after a reconcile ran (kopf's own write failed) gets a requeue "
                                                   "annotation touch (reconcile.grid.threefold.io/requested-at)")
    counter_refresh_s: int = Field(3600, ge=0, description=(
        "grid seconds between status writes that would only move counters (uptimeSeconds, uptimePercent, "
        "lastReportAt, billedTotal, lastBilledAt, lastBill, reserve, discount); 0: every change shows at once. "
        "Default one billing period (§2.5): each hourly bill shows once, in one write per Deployment per hour, the "
        "least that shows every bill at all; a Node's uptime (reported every 40 min) shows at most hourly, one write "
        "instead of 1.5. Honest because the counters are written together with their as-of time (lastBilledAt, "
        "lastReportAt), so a status never shows a total with the wrong date; anything else (Ready, a move, a grace "
        "period, an error, capacity) is written at once, and a node is found down from the ledger, not from status"))
    occupancy_refresh_s: float = Field(30.0, ge=0, description=(
        "wall seconds between status writes of a Node that would only move its occupancy (used, free, usedPercent, "
        "deployments); 0: every change shows at once. A burst of placements lands on a node over minutes: written "
        "every tick it cost ~1 write per deployment at grid size (issue 17's write budget is 2.5 per object); the "
        "first change after a quiet spell shows at once, and scheduling reads the ledger, never this status"))
    status_writes_per_s: float = Field(20.0, gt=0, description=(
        "the batched loop's budget of API writes (status PATCHes and requeue touches) per second, a token bucket "
        "holding at most a second's worth; what does not fit a tick is carried and sent at this pace between ticks. "
        "20/s is a seventh of the ~140 create+status pairs per second a kube-apiserver with etcd took on 2 cores "
        "(issue 17): at grid size (11,050 objects) an hour's counters take about 9 minutes of it (client-go's default "
        "5/s would take 37), and the server keeps the rest for everyone else. kopf's handlers are not paced"))
    billing_period_s: int = Field(3600, description="§2.5: one hour")
    minting_period_s: int = Field(2_630_880, description="§3.1: 2,630,880 s")
    minting_epoch: int = Field(1_522_501_000, description="§3.1: the first period's start")
    mint_settle_s: int = Field(27 * 3600, description="§3.1: wait this long past a period's end before minting it")
    grace_period_s: int = Field(14 * 24 * 3600, description="§2.4: 14 days")
    node_down_after_s: int = Field(80 * 60, description="§1.3: no valid uptime report for this long → the node is down")
    council_keys: str = Field("", description="§5: the council's ed25519 public keys (base64), comma-separated; "
                                               "a Proposal must be signed by one, a veto too")
    clock_file: str = Field("", description="read grid time (unix seconds) from this file instead of the system "
                                            "clock: for tests, benchmarks and demos that move time from outside")
    tft_price_musd: int = Field(20, description="average TFT price in mUSD, clamped to [min, max] (§4.3)")

    @property
    def council(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.council_keys.split(",") if k.strip())
