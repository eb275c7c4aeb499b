"""The live table: what `kubectl get grid` would show, with the ledger's last settled minting per node."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tfgrid_operator import runtime
from tfgrid_operator.domain import money
from tfgrid_operator.sandbox.emulator import StrictApiServer


def status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("status") or {}


def ready(obj: dict[str, Any] | None) -> str:
    """Ready, or the reason it is not (GracePeriod, NodeDown, Unschedulable …); … before the first status."""
    for c in status(obj).get("conditions") or []:
        if c["type"] == "Ready":
            return "Ready" if c["status"] == "True" else str(c.get("reason") or "NotReady")
    return "…"


def objects(emu: StrictApiServer, plural: str) -> list[dict[str, Any]]:
    return sorted(emu.read_all(f"{runtime.GROUP}/{runtime.VERSION}/{plural}"),
                  key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))


def name(obj: dict[str, Any]) -> str:
    return f"{obj['metadata'].get('namespace') or 'default'}/{obj['metadata']['name']}"


def tft(units: int) -> str:
    return f"{units / money.UNITS_PER_TFT:,.2f}"


def _node_detail(s: dict[str, Any], last: tuple[int, int, int, str] | None) -> str:
    used = f"used {s.get('usedPercent', 0)}%"
    if last is None:
        return f"{used} · no period minted yet"
    period, permille, _amount, reason = last
    return f"{used} · period {period} uptime {permille / 10:.1f}% {reason}"


def table(emu: StrictApiServer, mints: dict[str, tuple[int, int, int, str]], day: float) -> Table:
    t = Table(title=f"tfgrid sandbox · day {day:g}", expand=False)
    for col in ("kind", "name", "state", "where", "minted TFT", "billed TFT", "detail"):
        t.add_column(col, justify="right" if col.endswith("TFT") else "left")
    for f in objects(emu, "farms"):
        s = status(f)
        t.add_row("Farm", name(f), ready(f), f"{s.get('nodes', 0)} nodes", tft(s.get("mintedTotal", 0)), "",
                  f"{s.get('capacity', {}).get('cru', 0)} cores")
    for n in objects(emu, "nodes"):
        s = status(n)
        t.add_row("Node", name(n), ready(n), s.get("farm", ""), tft((s.get("minting") or {}).get("total", 0)), "",
                  _node_detail(s, mints.get(n["metadata"]["name"])))
    for d in objects(emu, "deployments"):
        s = status(d)
        where = s.get("node", "") + (f" (moved from {s['movedFrom']})" if s.get("movedFrom") else "")
        dedicated = " · rents node" if (d.get("spec") or {}).get("placement", {}).get("dedicated") else ""
        t.add_row("Deploy", name(d), ready(d), where, "", tft(s.get("billedTotal", 0)),
                  f"{s.get('contractState', '…')} · discount {s.get('discount', 'None').lower()} · "
                  f"{tft(s.get('costPerHour', 0))}/h{dedicated}")
    for p in objects(emu, "proposals"):
        s = status(p)
        t.add_row("Proposal", name(p), s.get("state", ready(p)), f"until {s.get('deadline', '…')}", "", "",
                  f"{s.get('ayes', 0)} yes (weight {s.get('ayesWeight', 0)}) / {s.get('nays', 0)} no "
                  f"(weight {s.get('naysWeight', 0)}) · needs {s.get('threshold', '…')} farms")
    return t


def frame(emu: StrictApiServer, mints: dict[str, tuple[int, int, int, str]], day: float, events: list[str],
          progress: Any) -> Group:
    recent = Text("\n".join(events[-6:]) or "(nothing has happened yet)", style="dim")
    return Group(table(emu, mints, day), recent, progress)
