"""What the sandbox reports at the end: the objects' states, the status totals against the ledger, the audit."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Console

from tfgrid_operator.sandbox import audit as audit_mod
from tfgrid_operator.sandbox import view


@dataclasses.dataclass
class Summary:
    days: int
    minted_ledger: int
    minted_status: int
    billed_ledger: int
    billed_status: int
    deployments: dict[str, str]
    proposals: dict[str, str]
    audit: audit_mod.Audit | None = None
    picture: str = ""
    events: list[str] = dataclasses.field(default_factory=list)
    funding: dict[str, int] = dataclasses.field(default_factory=dict)  # account → what the sandbox put in

    @property
    def matches(self) -> bool:
        return (self.minted_ledger, self.billed_ledger) == (self.minted_status, self.billed_status)

    @property
    def ok(self) -> bool:
        return self.matches and self.audit is not None and self.audit.ok

    def as_json(self) -> dict[str, Any]:
        a = self.audit
        return {
            "days": self.days, "ok": self.ok, "picture": self.picture, "events": self.events,
            "minted": {"total": a.minted if a else 0, "periods": a.mint_periods if a else 0,
                       "nodeStatus": self.minted_status, "nodeLedger": self.minted_ledger},
            "billed": {"total": a.billed if a else 0, "paid": a.paid if a else 0, "periods": a.bill_periods if a else 0,
                       "deploymentStatus": self.billed_status, "liveContractsLedger": self.billed_ledger},
            "statusMatchesLedger": self.matches, "deployments": self.deployments, "proposals": self.proposals,
            "balances": a.balances if a else {}, "funded": self.funding, "reserves": a.reserves if a else 0,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in (a.checks if a else ())],
        }


def print_summary(console: Console, s: Summary) -> None:
    a = s.audit
    console.print(f"\n[bold]{s.days} days on the grid[/bold] (sandbox: 3-day minting periods settled after 1 h, "
                  "hourly billing)")
    if a is not None:
        console.print(f"  minted  {view.tft(a.minted)} TFT in {a.mint_periods} settled minting periods"
                      + ("" if a.mint_periods else " (the first settles after 3 days and 1 hour)"))
        console.print(f"  billed  {view.tft(a.billed)} TFT in {a.bill_periods} hourly periods; payers paid "
                      f"{view.tft(a.paid)} TFT")
        console.print("  balances:")
        for name, balance in a.balances.items():
            console.print(f"    {name:<20} {view.tft(balance):>14} TFT")
    console.print(f"  deployments: {', '.join(f'{k} {v}' for k, v in sorted(s.deployments.items()))}")
    if s.proposals:
        console.print(f"  proposals: {', '.join(f'{k} {v}' for k, v in sorted(s.proposals.items()))}")
    console.print(f"  status vs ledger (live contracts): minted {view.tft(s.minted_status)} / {view.tft(s.minted_ledger)}, billed "
                  f"{view.tft(s.billed_status)} / {view.tft(s.billed_ledger)}: "
                  + ("pass" if s.matches else "[red]FAIL[/red]"))
    for c in a.checks if a else ():
        console.print(f"  audit {c.name}: " + ("pass" if c.ok else "[red]FAIL[/red]") + f" ({c.detail})", soft_wrap=True)
    console.print(f"  picture of the month: {s.picture}", soft_wrap=True)
    console.print("  audit passed" if s.ok else "[red]  audit FAILED[/red]")
