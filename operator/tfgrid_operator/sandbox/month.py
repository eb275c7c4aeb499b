"""One month against a running operator: the objects applied, then one uptime report (40 minutes) at a time,
the scenario's events, the live table, the points of the picture, the summary."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tfgrid_operator import agent, backend, ballot, clock, metrics, runtime
from tfgrid_operator.domain import identity, money
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import ApiError, KubeClient
from tfgrid_operator.sandbox import audit as audit_mod
from tfgrid_operator.sandbox import picture, scenario, view
from tfgrid_operator.sandbox.emulator import StrictApiServer
from tfgrid_operator.sandbox.manifests import GRID_KINDS, Manifest, SandboxError, api_message, collection_path
from tfgrid_operator.sandbox.summary import Summary

START = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed start, so every run prints the same amounts
HOUR, DAY = 3600, 86_400
STEP_S = DAY // scenario.STEPS_PER_DAY  # §1.3: a node reports every 40 minutes; the clock moves one report at a time
CONFIG = backend.LedgerConfig(billing_period_s=HOUR, minting_epoch=START, minting_period_s=3 * DAY,
                              mint_settle_s=HOUR)
WAIT_S = 30.0  # how long an object may take to become Ready (real seconds) before the sandbox gives up
T = TypeVar("T")


class LoopClock(clock.ManualClock):
    """The injected clock, which also notes the grid time each pass of the operator's batched loop started at:
    the sandbox moves time on only once a pass at the current time has finished (or amounts would depend on
    how fast this machine is)."""

    def __init__(self, start: int) -> None:
        super().__init__(start)
        self.passes: Callable[[], int] = lambda: 0
        self.pass_started: tuple[int, int] = (-1, -1)  # (passes finished when it began, grid time it read)

    def now(self) -> int:
        t = super().now()
        task = asyncio.current_task() if _in_loop() else None
        if task is not None and getattr(task.get_coro(), "__qualname__", "") == "run_forever":
            done = self.passes()
            if done != self.pass_started[0]:
                self.pass_started = (done, t)
        return t

    def caught_up(self, ts: int) -> bool:
        done, seen = self.pass_started
        return seen >= ts and self.passes() > done


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


async def _true_async(found: Awaitable[dict[str, Any]], key: str) -> bool:
    return key in await found


def loop_passes(m: metrics.Metrics) -> int:
    tick = next(iter(m.loop_tick.collect()))  # the histogram has no labels: one metric
    return int(next(s.value for s in tick.samples if s.name.endswith("_count")))


async def _until(check: Callable[[], Awaitable[T]], timeout: float = WAIT_S, max_pause: float = 0.02) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.001
    while True:
        result = await check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, max_pause)  # a poll that reads the ledger costs the operator CPU: back off


class Month:
    """One run of the scenario against a running operator."""

    def __init__(self, emu: StrictApiServer, rt: runtime.Runtime, ledger: backend.GridBackend, engine: Any,
                 clk: LoopClock, manifests: list[Manifest], keys: dict[str, identity.KeyPair], twins: dict[str, str],
                 timeline: scenario.Scenario, days: int, console: Console, quiet: bool,
                 council: identity.KeyPair) -> None:
        self.emu, self.rt, self.ledger, self.engine, self.clk = emu, rt, ledger, engine, clk
        self.manifests, self.keys, self.twins, self.timeline = manifests, keys, twins, timeline
        self.days, self.console, self.quiet = days, console, quiet
        self.funded: dict[str, int] = {}
        self.events: list[str] = []
        self.points: list[picture.Point] = []
        self.nodes = [(m.namespace, m.name) for m in manifests if m.kind == "Node"]
        # a simulation: each agent states its node's spec as the capacity it measured (node-agent --capacity), read
        # once the API server accepted the Node (attest)
        self.capacity: dict[str, Resources] = {}
        self.council = council
        self.farms = [m.name for m in manifests if m.kind == "Farm"]
        self.proposals = [m for m in manifests if m.kind == "Proposal"]
        self.down: str | None = None  # the node of the scenario's outage, once it began
        self.sent = 0  # uptime reports sent
        self.last_report = {n: 0 for _, n in self.nodes}  # node → the step of its latest report

    def note(self, step: int, text: str) -> None:
        self.events.append(f"day {step / scenario.STEPS_PER_DAY:5.2f}  {text}")

    async def fund(self, step: int, account: str, amount: int) -> None:
        await self.ledger.fund(name=account, amount=amount, now=self.clk.now())  # what `ledger fund` does
        self.funded[account] = self.funded.get(account, 0) + amount
        if step:
            self.note(step, f"{account} is topped up with {money.tft(amount)} TFT (ledger fund)")

    async def run(self) -> Summary:
        for account, public_key in sorted(self.twins.items()):
            await self.ledger.ensure_account(name=account, public_key=public_key)
            await self.fund(0, account, self.timeline.funding_of(account))
        async with KubeClient(user_agent="tfgrid-sandbox") as kube:
            await self.apply(kube)
            await self.sample(0)
            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                TextColumn("day {task.completed:.0f}/{task.total:.0f}"), TimeRemainingColumn())
            task = progress.add_task(f"{self.days} days on the grid", total=self.days)
            if not self.quiet:
                self.console.print(f"The operator runs; {self.days} days of grid time start now (Ctrl-C stops the sandbox).")
            live = Live(console=self.console, auto_refresh=False) if not self.quiet else contextlib.nullcontext()
            with live:
                for step in range(1, self.days * scenario.STEPS_PER_DAY + 1):
                    changed = await self.step(kube, step)
                    if step % scenario.STEPS_PER_DAY == 0:
                        progress.update(task, completed=step // scenario.STEPS_PER_DAY)
                        await self.sample(step)
                    if (changed or step % scenario.STEPS_PER_DAY == 0) and isinstance(live, Live):
                        live.update(await self.frame(step, progress), refresh=True)
                self.rt.counters_written.clear()  # the last counters are written now, for the summary
                self.rt.occupancy_written.clear()
                await self.loop_pass(self.clk.now())
                summary = await _until(self.matching_summary, timeout=10) or await self.summary()
                if isinstance(live, Live):
                    live.update(await self.frame(self.days * scenario.STEPS_PER_DAY, progress), refresh=True)
        summary.audit = await audit_mod.audit(self.engine, self.funded)
        summary.events, summary.funding = list(self.events), dict(self.funded)
        return summary

    async def frame(self, step: int, progress: Progress) -> Any:
        return view.frame(self.emu, await audit_mod.last_mints(self.engine), step / scenario.STEPS_PER_DAY,
                          self.events, progress)

    async def sample(self, step: int) -> None:
        minted, billed, balances = await audit_mod.totals(self.engine)
        self.points.append(picture.Point(step / scenario.STEPS_PER_DAY, minted, billed, balances))

    async def step(self, kube: KubeClient, step: int) -> bool:
        """One report interval: time moves, agents report, the scenario's events of this step happen."""
        ts = START + step * STEP_S
        self.clk.set(ts)
        changed = await self.scripted(kube, step)
        reporting = [(ns, n) for ns, n in self.nodes if self.timeline.reports(n, step, self.down)]
        await asyncio.gather(*(agent.send_report(kube, self.keys[f"node/{n}"], namespace=ns, node=n, ts=ts,
                                                 uptime=ts - START + 600, capacity=self.capacity[n])
                               for ns, n in reporting))
        self.sent += len(reporting)
        # the operator counts every lease event it handled: a cheap wait first, then the ledger's word
        await _until(lambda: _true(self.rt.metrics.reconciled("lease") >= self.sent), timeout=2, max_pause=0.002)
        if not await _until(lambda: self.reported([n for _, n in reporting], ts)):
            raise SandboxError(f"the operator did not record the uptime reports of {ts} within {WAIT_S:.0f} s")
        for _, n in reporting:
            self.last_report[n] = step
        if ts // HOUR != (ts - STEP_S) // HOUR or any(step - last >= 2 for last in self.last_report.values()):
            await self.loop_pass(ts)  # a period ended (bill, mint, close), or a node may be down (move)
        states = await self.watch_states()
        return changed or states

    async def loop_pass(self, ts: int) -> None:
        self.rt.wake.set()
        if not await _until(lambda: _true(self.clk.caught_up(ts)), max_pause=0.002):  # a cheap check: poll often
            raise SandboxError(f"the operator's loop did not run at grid time {ts} within {WAIT_S:.0f} s")

    async def reported(self, nodes: list[str], ts: int) -> bool:
        summaries = await self.ledger.node_summaries(now=ts)
        return all(summaries.get(n) is not None and summaries[n].last_report_ts == ts for n in nodes)

    async def scripted(self, kube: KubeClient, step: int) -> bool:
        changed = False
        for at, account, amount in self.timeline.topups:
            if at == step and account in self.twins:
                await self.fund(step, account, amount)
                changed = True
        outage = self.timeline.outage
        if outage is not None and step == outage[1]:
            ns, _, name = outage[0].partition("/")
            d = self.emu.read(f"{runtime.GROUP}/{runtime.VERSION}/deployments", ns, name)
            self.down = view.status(d).get("node")
            if self.down:
                self.note(step, f"node {self.down} stops reporting for {outage[2] * STEP_S // HOUR} h "
                                f"(it hosts {outage[0]})")
                changed = True
        if outage is not None and self.down and step == outage[1] + outage[2]:
            self.note(step, f"node {self.down} reports again")
            changed = True
        for farm, approve in self.timeline.votes_at(step, self.farms):
            for p in self.proposals:  # the same code as `tfgrid-operator vote`: signed on the opened proposal
                body = self.read("proposals", p.namespace, p.name)
                entry = ballot.vote_on(body, self.keys[f"farm/{farm}"], farm=farm, approve=approve)
                await ballot.add_entry(kube, namespace=p.namespace, name=p.name, field="votes", entry=entry,
                                       same="farm")
                self.note(step, f"farm {farm} votes {'yes' if approve else 'no'} on {p.name}")
                changed = True
        return changed

    async def watch_states(self) -> bool:
        """Note what the operator changed: a deployment's state or node, a proposal's state, a node's minting."""
        seen = getattr(self, "_seen", {})
        now: dict[str, str] = {}
        for d in view.objects(self.emu, "deployments"):
            s = view.status(d)
            now[f"deployment {view.name(d)}"] = f"{view.ready(d)} on {s.get('node', '…')}"
        for p in view.objects(self.emu, "proposals"):
            now[f"proposal {view.name(p)}"] = str(view.status(p).get("state", view.ready(p)))
        for n in view.objects(self.emu, "nodes"):
            now[f"node {view.name(n)}"] = view.ready(n)
        step = (self.clk.now() - START) // STEP_S
        for key, value in now.items():
            if key in seen and seen[key] != value:
                self.note(step, f"{key}: {seen[key]} → {value}")
        changed = bool(seen) and seen != now
        self._seen = now
        return changed

    async def apply(self, kube: KubeClient) -> None:
        """Create the objects in sync-wave order, each once the one before it is Ready (registered on the
        ledger, placed): so no agent reports before its node exists, and placement is the same on every run."""
        async def tick() -> None:  # the loop retries what waits on the world (requeues) and lost writes
            while True:
                self.rt.wake.set()
                await asyncio.sleep(0.5)
        ticker = asyncio.create_task(tick())
        try:
            await self._apply_all(kube)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _apply_all(self, kube: KubeClient) -> None:
        for m in self.manifests:
            if m.kind == "Namespace":
                continue  # the emulator serves every namespace; the manifests carry them for a real cluster
            try:
                await kube.request("POST", collection_path(m), m.doc)
            except ApiError as err:
                raise SandboxError(f"{m.file}: {m.kind} {m.namespace}/{m.name} was refused: {api_message(err)}") from None
            if m.kind in GRID_KINDS:
                got = await _until(functools.partial(self._ready, m))
                if got and m.kind == "Node":
                    await self.attest(kube, m)
                if not got:
                    obj = self.emu.read(f"{runtime.GROUP}/{runtime.VERSION}/{m.kind.lower()}s", m.namespace, m.name)
                    cond: dict[str, Any] = next((c for c in view.status(obj).get("conditions") or [] if c["type"] == "Ready"), {})
                    raise SandboxError(f"{m.file}: {m.kind} {m.namespace}/{m.name} did not become Ready within "
                                       f"{WAIT_S:.0f} s: {cond.get('reason', 'no status')}: {cond.get('message', '')}")

    async def attest(self, kube: KubeClient, m: Manifest) -> None:
        """The node's agent attests its capacity (with a first uptime report at the start) and, where the farmer
        expects a certified node, the council certifies it (`tfgrid-operator council certify`)."""
        node = self.read("nodes", m.namespace, m.name)
        self.capacity[m.name] = Resources(**node["spec"]["resources"])
        await agent.send_report(kube, self.keys[f"node/{m.name}"], namespace=m.namespace, node=m.name, ts=START,
                                uptime=600, capacity=self.capacity[m.name])
        self.sent += 1
        if not await _until(lambda: _true_async(self.ledger.attestations(), m.name)):
            raise SandboxError(f"{m.file}: the operator did not record node {m.name}'s capacity within {WAIT_S:.0f} s")
        if not (m.doc.get("spec") or {}).get("certified"):
            return
        node = self.read("nodes", m.namespace, m.name)  # now registered
        entry = ballot.signed_certification(self.council, node=m.name, node_id=view.status(node)["nodeId"],
                                            certified=True, ts=START, resources=self.capacity[m.name])
        await ballot.certify(kube, namespace=m.namespace, node=m.name, entry=entry)

        async def certified() -> bool:
            a = (await self.ledger.attestations()).get(m.name)
            return a is not None and a.certified
        if not await _until(certified):
            raise SandboxError(f"{m.file}: the council's certification of node {m.name} was not applied within "
                               f"{WAIT_S:.0f} s")

    def read(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """An object the sandbox applied, as the API server holds it now."""
        obj = self.emu.read(f"{runtime.GROUP}/{runtime.VERSION}/{plural}", namespace, name)
        if obj is None:
            raise SandboxError(f"{plural[:-1]} {namespace}/{name} is not on the API server")
        return obj

    async def _ready(self, m: Manifest) -> bool:
        """Whether the applied object reports Ready=True (a coroutine function: ``_until`` polls it)."""
        obj = self.emu.read(f"{runtime.GROUP}/{runtime.VERSION}/{m.kind.lower()}s", m.namespace, m.name)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in view.status(obj).get("conditions") or [])

    async def matching_summary(self) -> Summary | None:
        """The summary once the objects' status says what the ledger says (the loop wrote its last pass)."""
        s = await self.summary()
        return s if s.matches else None

    async def summary(self) -> Summary:
        deployments, nodes = view.objects(self.emu, "deployments"), view.objects(self.emu, "nodes")
        contracts = await self.ledger.contract_summaries()
        summaries = await self.ledger.node_summaries(now=self.clk.now())
        s = Summary(
            days=self.days,
            minted_ledger=sum(x.minted_total for x in summaries.values()),
            minted_status=sum((view.status(n).get("minting") or {}).get("total", 0) for n in nodes),
            billed_ledger=sum(c.billed_total for c in contracts.values()),
            billed_status=sum(view.status(d).get("billedTotal", 0) for d in deployments),
            deployments={view.name(d): view.ready(d) for d in deployments},
            proposals={view.name(p): str(view.status(p).get("state", view.ready(p)))
                       for p in view.objects(self.emu, "proposals")},
        )
        return s


async def _true(value: bool) -> bool:
    return value
