"""The local sandbox: the real operator, a month of grid life, in under a minute, with no cluster.

It starts the strict Kubernetes API emulator on a local port, runs the real kopf operator against it with
the embedded SQLite ledger, applies examples/ (re-keyed with fresh keys: a sandbox never needs anyone's
secrets), funds the payers, runs one node agent per Node, and moves an injected clock an hour at a time
for a month. A live table shows farms, nodes, deployments and proposals as minting and billing move;
the summary at the end compares what the objects' status says with the ledger.

Sandbox-only settings (everything else is the chain's): minting periods of 3 days (settled after 1 h),
payers funded with 5,000 TFT each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import pathlib
import tempfile
from typing import Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tfgrid_operator import agent, backend, ballot, clock, local, metrics, runtime
from tfgrid_operator.domain import identity, money
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.kube.emulator import StrictApiServer
from tfgrid_operator.settings import Settings

START = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed start, so every run prints the same amounts
HOUR, DAY = 3600, 86_400
STEP_S = 2400  # §1.3: a node reports every 40 minutes; the clock moves one report at a time
CONFIG = backend.LedgerConfig(billing_period_s=HOUR, minting_epoch=START, minting_period_s=3 * DAY,
                              mint_settle_s=HOUR)
FUNDING_TFT = 5_000
KINDS = ("Farm", "Node", "Deployment", "Proposal")
API = f"/apis/{runtime.GROUP}/{runtime.VERSION}/namespaces/default"


@dataclasses.dataclass
class Summary:
    days: int
    minted_ledger: int
    minted_status: int
    billed_ledger: int
    billed_status: int
    deployments: dict[str, str]
    proposals: dict[str, str]

    @property
    def matches(self) -> bool:
        return (self.minted_ledger, self.billed_ledger) == (self.minted_status, self.billed_status)


class SandboxError(Exception):
    """The sandbox cannot start (no examples, a broken example): the message says what to fix."""


def load_examples(folder: pathlib.Path) -> list[dict[str, Any]]:
    if not folder.is_dir():
        raise SandboxError(f"no examples folder at {folder}: run from the project root or pass --examples")
    docs = [d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    docs = [d for d in docs if d.get("kind") in KINDS]
    if not any(d["kind"] == "Node" for d in docs):
        raise SandboxError(f"{folder} has no Node: nothing to run")
    wave = {k: i for i, k in enumerate(KINDS)}
    return sorted(docs, key=lambda d: wave[d["kind"]])  # sync-wave order: farms, nodes, deployments, proposals


def rekey(docs: list[dict[str, Any]], council: identity.KeyPair) -> dict[str, identity.KeyPair]:
    """Fresh keys for every farm owner and node, proposals re-signed by the sandbox council."""
    keys: dict[str, identity.KeyPair] = {"council": council}
    for d in docs:
        name, spec = d["metadata"]["name"], d["spec"]
        if d["kind"] == "Farm":
            keys[f"farm/{name}"] = identity.KeyPair.generate()
            spec["ownerKey"] = keys[f"farm/{name}"].public_key
        elif d["kind"] == "Node":
            keys[f"node/{name}"] = identity.KeyPair.generate()
            spec["publicKey"] = keys[f"node/{name}"].public_key
        elif d["kind"] == "Proposal":
            from tfgrid_operator import crd_models

            spec.update(councilKey=council.public_key, councilSignature="-", votes=[], vetoes=[])
            parsed = crd_models.parse(crd_models.ProposalSpec, spec)
            spec["councilSignature"] = council.sign(identity.PROPOSAL, parsed.signed_payload(f"default/{name}"))
    return keys


def _status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("status") or {}


def _ready(obj: dict[str, Any] | None) -> str:
    for c in _status(obj).get("conditions") or []:
        if c["type"] == "Ready":
            return c["reason"] if c["status"] != "True" else "Ready"
    return "…"


def _tft(units: int) -> str:
    return f"{units / money.UNITS_PER_TFT:,.2f}"


def _objects(emu: StrictApiServer, plural: str) -> list[dict[str, Any]]:
    return sorted(emu.read_all(f"{runtime.GROUP}/{runtime.VERSION}/{plural}"), key=lambda o: o["metadata"]["name"])


def table(emu: StrictApiServer) -> Table:
    read = functools.partial(_objects, emu)

    t = Table(title="tfgrid sandbox", expand=False)
    for col in ("kind", "name", "state", "where", "minted / billed TFT", "detail"):
        t.add_column(col)
    for f in read("farms"):
        s = _status(f)
        t.add_row("Farm", f["metadata"]["name"], _ready(f), f"{s.get('nodes', 0)} nodes", _tft(s.get("mintedTotal", 0)),
                  f"capacity {s.get('capacity', {}).get('cru', 0)} cores")
    for n in read("nodes"):
        s = _status(n)
        t.add_row("Node", n["metadata"]["name"], _ready(n), s.get("farm", ""), _tft((s.get("minting") or {}).get("total", 0)),
                  f"used {s.get('usedPercent', 0)}%, uptime {s.get('uptimePercent', 0)}%")
    for d in read("deployments"):
        s = _status(d)
        t.add_row("Deployment", d["metadata"]["name"], _ready(d), s.get("node", ""), _tft(s.get("billedTotal", 0)),
                  f"{s.get('contractState', '')} {s.get('discount', '')}".strip())
    for p in read("proposals"):
        s = _status(p)
        t.add_row("Proposal", p["metadata"]["name"], s.get("state", _ready(p)), f"until {s.get('deadline', '')}", "",
                  f"ayes {s.get('ayesWeight', 0)} / nays {s.get('naysWeight', 0)}")
    return t


async def _until(check: Any, timeout: float = 30.0, max_pause: float = 0.02) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.002
    while True:
        result = await check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, max_pause)  # a poll that reads the ledger costs the operator CPU: back off


async def run(*, days: int = 30, ledger_url: str | None = None, examples: pathlib.Path = pathlib.Path("examples"),
              console: Console | None = None) -> Summary:
    console = console or Console()
    council = identity.KeyPair.generate()
    docs = load_examples(examples)
    keys = rekey(docs, council)
    clk = clock.ManualClock(START)
    with tempfile.TemporaryDirectory(prefix="tfgrid-sandbox-") as tmp:
        url = ledger_url or f"sqlite:///{pathlib.Path(tmp) / 'ledger.db'}"

        async def make_runtime() -> runtime.Runtime:
            settings = Settings(tick_s=1.0, batch_window_s=0.001, metrics_port=0, council_keys=council.public_key,
                                counter_refresh_s=6 * HOUR)  # counters in the table move every 6 grid hours
            return runtime.Runtime(settings=settings, clock=clk, ledger=await backend.open_backend(url, CONFIG),
                                   kube=KubeClient(), metrics=metrics.Metrics(), retry_delay_s=0.05)

        async with local.local_api(record_requests=False) as emu:
            ledger = await backend.open_backend(url, CONFIG)
            try:
                async with local.operator(make_runtime) as rt:
                    summary = await _simulate(emu, rt, ledger, clk, docs, keys, days, console)
                summary = summary or await _summary(emu, ledger, days, final=True)
            finally:
                await ledger.close()
    assert summary is not None
    _print_summary(console, summary)
    return summary


async def _simulate(emu: StrictApiServer, rt: runtime.Runtime, ledger: backend.GridBackend, clk: clock.ManualClock,
                    docs: list[dict[str, Any]], keys: dict[str, identity.KeyPair], days: int,
                    console: Console) -> Summary | None:
    for payer in sorted({d["spec"]["payer"]["account"] for d in docs
                         if d["kind"] == "Deployment" and "account" in d["spec"]["payer"]}):
        await ledger.ensure_account(name=payer)
        await ledger.fund(name=payer, amount=FUNDING_TFT * money.UNITS_PER_TFT)
    nodes = [d["metadata"]["name"] for d in docs if d["kind"] == "Node"]
    # a simulation: each agent states its node's spec as the capacity it measured (agent --capacity)
    capacity = {d["metadata"]["name"]: Resources(**d["spec"]["resources"]) for d in docs if d["kind"] == "Node"}
    async with KubeClient(user_agent="tfgrid-sandbox") as kube:
        await _apply(emu, kube, docs, keys, ledger)
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("day {task.completed:.0f}/{task.total:.0f}"), TimeRemainingColumn())
        task = progress.add_task(f"{days} days on the grid", total=days)
        with Live(Group(table(emu), progress), console=console, auto_refresh=False) as live:
            steps_per_day = DAY // STEP_S
            for step in range(1, days * steps_per_day + 1):
                ts = START + step * STEP_S
                clk.set(ts)
                await asyncio.gather(*(agent.send_report(kube, keys[f"node/{n}"], namespace="default", node=n, ts=ts,
                                                         uptime=ts - START + 600, capacity=capacity[n]) for n in nodes))
                handled = (step + 1) * len(nodes)  # the operator counts every lease event it handled (+ the attestations)
                if not await _until(lambda handled=handled: _leases_handled(rt, handled), timeout=2, max_pause=0.002):
                    await _until(lambda ts=ts: _reported(ledger, nodes, ts))  # events were coalesced
                rt.wake.set()
                if ts // HOUR != (ts - STEP_S) // HOUR:  # a billing period ended: wait until it is billed
                    await _until(lambda ts=ts: _billed(ledger, ts))
                if step % steps_per_day == 0:
                    progress.update(task, completed=step // steps_per_day)
                    live.update(Group(table(emu), progress), refresh=True)
            rt.counters_written.clear()  # the last counters are written now, for the summary
            rt.wake.set()
            summary = await _until(lambda: _summary(emu, ledger, days), timeout=10)
            live.update(Group(table(emu), progress), refresh=True)
    return summary


async def _apply(emu: StrictApiServer, kube: KubeClient, docs: list[dict[str, Any]], keys: dict[str, identity.KeyPair],
                 ledger: backend.GridBackend) -> None:
    """Create the objects in sync-wave order, each deployment after the one before it is placed (so the
    least-loaded placement is the same on every run), then the farms' votes on every proposal."""
    for d in docs:
        plural = f"{d['kind'].lower()}s"
        await kube.request("POST", f"{API}/{plural}", d)
        if d["kind"] in ("Node", "Deployment"):
            name = d["metadata"]["name"]
            await _until(lambda p=plural, n=name: _has_ready(emu, p, n))
        if d["kind"] == "Node":  # its agent attests the capacity; the council certifies what the farmer expects
            await _attest(emu, kube, d, keys, ledger)
    for d in docs:
        if d["kind"] != "Proposal":
            continue
        name = d["metadata"]["name"]
        path = f"{runtime.GROUP}/{runtime.VERSION}/proposals"
        await _until(lambda path=path, name=name: _opened(emu, path, name))  # a vote signs the proposal as the operator opened it
        for farm in (x["metadata"]["name"] for x in docs if x["kind"] == "Farm"):
            await ballot.add_entry(kube, namespace="default", name=name, field="votes", same="farm",
                                   entry=ballot.vote_on(emu.read(path, "default", name), keys[f"farm/{farm}"],
                                                        farm=farm, approve=True))


async def _attest(emu: StrictApiServer, kube: KubeClient, d: dict[str, Any], keys: dict[str, identity.KeyPair],
                  ledger: backend.GridBackend) -> None:
    name, ts = d["metadata"]["name"], START
    await _until(lambda: ledger.observe_node(name=name))
    await agent.send_report(kube, keys[f"node/{name}"], namespace="default", node=name, ts=ts, uptime=600,
                            capacity=Resources(**d["spec"]["resources"]))
    await _until(lambda: _attested(ledger, name))
    if d["spec"].get("certified"):
        node_id = _status(emu.read(f"{runtime.GROUP}/{runtime.VERSION}/nodes", "default", name))["nodeId"]
        await ballot.certify(kube, namespace="default", node=name, entry=ballot.signed_certification(
            keys["council"], node=name, node_id=node_id, certified=True, ts=ts))
        await _until(lambda: _attested(ledger, name, certified=True))


async def _attested(ledger: backend.GridBackend, name: str, certified: bool = False) -> bool:
    a = (await ledger.attestations()).get(name)  # type: ignore[attr-defined]
    return a is not None and (a.certified or not certified)


async def _opened(emu: StrictApiServer, path: str, name: str) -> bool:
    return "proposalId" in _status(emu.read(path, "default", name))


async def _has_ready(emu: StrictApiServer, plural: str, name: str) -> bool:
    obj = emu.read(f"{runtime.GROUP}/{runtime.VERSION}/{plural}", "default", name)
    return any(c["type"] == "Ready" for c in _status(obj).get("conditions") or [])


async def _leases_handled(rt: runtime.Runtime, count: int) -> bool:
    return rt.metrics.reconciled("lease") >= count


async def _reported(ledger: backend.GridBackend, nodes: list[str], ts: int) -> bool:
    summaries = await ledger.node_summaries(now=ts)
    return all(summaries.get(n) is not None and summaries[n].last_report_ts == ts for n in nodes)


async def _billed(ledger: backend.GridBackend, ts: int) -> bool:
    """Every billing period that ended by ``ts`` is billed."""
    return await ledger.watermark(name="bill", default=-1) >= ts // CONFIG.billing_period_s


async def _summary(emu: StrictApiServer, ledger: backend.GridBackend, days: int, final: bool = False) -> Summary | None:
    read = functools.partial(_objects, emu)

    contracts = await ledger.contract_summaries()
    summaries = await ledger.node_summaries(now=START + days * DAY)
    s = Summary(
        days=days,
        minted_ledger=sum(x.minted_total for x in summaries.values()),
        minted_status=sum((_status(n).get("minting") or {}).get("total", 0) for n in read("nodes")),
        billed_ledger=sum(c.billed_total for c in contracts.values()),
        billed_status=sum(_status(d).get("billedTotal", 0) for d in read("deployments")),
        deployments={d["metadata"]["name"]: _ready(d) for d in read("deployments")},
        proposals={p["metadata"]["name"]: _status(p).get("state", _ready(p)) for p in read("proposals")},
    )
    return s if s.matches or final else None


def _print_summary(console: Console, s: Summary) -> None:
    console.print(f"\n[bold]{s.days} days on the grid[/bold] (sandbox: 3-day minting periods, hourly billing)")
    console.print(f"  minted  {_tft(s.minted_ledger)} TFT on the ledger; Node status says {_tft(s.minted_status)} TFT")
    console.print(f"  billed  {_tft(s.billed_ledger)} TFT on the ledger; Deployment status says {_tft(s.billed_status)} TFT")
    console.print(f"  deployments: {', '.join(f'{k} {v}' for k, v in sorted(s.deployments.items()))}")
    if s.proposals:
        console.print(f"  proposals: {', '.join(f'{k} {v}' for k, v in sorted(s.proposals.items()))}")
    console.print("  status matches the ledger" if s.matches else "[red]  status does NOT match the ledger[/red]")


def main(*, days: int = 30, ledger_url: str | None = None, examples: pathlib.Path = pathlib.Path("examples")) -> Summary:
    return asyncio.run(run(days=days, ledger_url=ledger_url, examples=examples))
