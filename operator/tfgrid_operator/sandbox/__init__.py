"""The local sandbox: the real operator, a month of grid life, in a few minutes, with no cluster.

It starts the strict Kubernetes API emulator on a local port, runs the real kopf operator against it with
a fresh SQLite ledger in a temporary folder (or the empty ledger ``--ledger-url`` names), applies the
scenario's manifests (sandbox/scenario/, or ``--examples``) with fresh keys, funds the payers, runs one
node agent per Node and moves an injected clock one uptime report (40 minutes) at a time. The scenario
(scenario.py) shows each mechanism once: a DAO vote that passes and lowers prices, a node going down and
its deployment moving, a payer in grace recovering after a top-up, a rented node, a node below the SLA.

The same arguments print the same amounts on every run: grid time is the injected clock only, each object
is created once the one before it is registered, each report is on the ledger and the operator's loop has
finished a pass at the new time before the clock moves on. The summary is an audit of the ledger's raw rows
(audit.py), and the month is drawn to an SVG (picture.py).

Sandbox-only settings (everything else is the chain's): minting periods of 3 days (settled after 1 h).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import pathlib
import signal
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tfgrid_operator import agent, backend, ballot, clock, crd_models, local, metrics, runtime
from tfgrid_operator.domain import identity, money
from tfgrid_operator.kube.client import ApiError, KubeClient
from tfgrid_operator.kube.emulator import StrictApiServer
from tfgrid_operator.sandbox import audit as audit_mod
from tfgrid_operator.sandbox import picture, scenario, view
from tfgrid_operator.settings import Settings

START = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed start, so every run prints the same amounts
HOUR, DAY = 3600, 86_400
STEP_S = DAY // scenario.STEPS_PER_DAY  # §1.3: a node reports every 40 minutes; the clock moves one report at a time
CONFIG = backend.LedgerConfig(billing_period_s=HOUR, minting_epoch=START, minting_period_s=3 * DAY,
                              mint_settle_s=HOUR)
KINDS = ("Namespace", "Secret", "Farm", "Node", "Deployment", "Proposal")  # sync-wave order
GRID_KINDS = ("Farm", "Node", "Deployment", "Proposal")
WAIT_S = 30.0  # how long an object may take to become Ready (real seconds) before the sandbox gives up


class SandboxError(Exception):
    """The sandbox cannot run (no examples, a broken example, a used ledger): the message says what to fix."""


class Interrupted(Exception):  # not an error: a person pressed Ctrl-C
    """SIGINT or SIGTERM stopped the sandbox; everything it started was stopped and its folders removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclasses.dataclass
class Manifest:
    file: pathlib.Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.doc["metadata"].get("namespace") or "default")


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


def load_examples(folder: pathlib.Path) -> list[Manifest]:
    if not folder.is_dir():
        raise SandboxError(f"no examples folder at {folder}: run from the project root or pass --examples")
    found: list[Manifest] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SandboxError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        for d in docs:
            if not d:
                continue
            if not isinstance(d, dict) or not isinstance(d.get("metadata"), dict) or not d["metadata"].get("name"):
                raise SandboxError(f"{path}: every manifest needs kind and metadata.name")
            if d.get("kind") in KINDS:
                found.append(Manifest(path, d))
    if not any(m.kind == "Node" for m in found):
        raise SandboxError(f"{folder} has no Node: nothing to run")
    wave = {k: i for i, k in enumerate(KINDS)}
    return sorted(found, key=lambda m: wave[m.kind])  # stable: files and documents keep their order in a wave


def rekey(manifests: list[Manifest], council: identity.KeyPair) -> dict[str, identity.KeyPair]:
    """Fresh keys for every farm owner, node and twin Secret; proposals re-signed by the sandbox council.
    Keys are "farm/NAME", "node/NAME" and "twin/NAMESPACE/SECRET"."""
    keys: dict[str, identity.KeyPair] = {}
    for m in manifests:
        spec = m.doc.get("spec") or {}
        if m.kind == "Farm":
            spec["ownerKey"] = keys.setdefault(f"farm/{m.name}", identity.KeyPair.generate()).public_key
        elif m.kind == "Node":
            spec["publicKey"] = keys.setdefault(f"node/{m.name}", identity.KeyPair.generate()).public_key
        elif m.kind == "Secret":
            twin = keys.setdefault(f"twin/{m.namespace}/{m.name}", identity.KeyPair.generate())
            for field in list(m.doc.get("data") or {}):
                m.doc["data"][field] = base64.b64encode(twin.to_text().encode()).decode()
        elif m.kind == "Proposal":
            spec.update(councilKey=council.public_key, councilSignature="-", votes=[], vetoes=[])
            try:
                parsed = crd_models.parse(crd_models.ProposalSpec, spec)
            except crd_models.InvalidSpec as exc:
                raise SandboxError(f"{m.file}: Proposal {m.name}: {exc}") from None
            spec["councilSignature"] = council.sign(identity.PROPOSAL, parsed.signed_payload(f"{m.namespace}/{m.name}"))
    return keys


def payers(manifests: list[Manifest], keys: dict[str, identity.KeyPair]) -> dict[str, str]:
    """account → its twin's public key ("" for a payer named by account): the accounts the sandbox funds.
    A Secret-held twin's account is named after the Secret, without a "-twin" suffix."""
    out: dict[str, str] = {}
    for m in manifests:
        payer = (m.doc.get("spec") or {}).get("payer") or {} if m.kind == "Deployment" else {}
        if payer.get("account"):
            out.setdefault(str(payer["account"]), "")
        elif (payer.get("secretRef") or {}).get("name"):
            secret = str(payer["secretRef"]["name"])
            twin = keys.get(f"twin/{m.namespace}/{secret}")
            if twin is None:
                raise SandboxError(f"{m.file}: Deployment {m.name} pays with secret {secret!r}, which no manifest "
                                   f"in namespace {m.namespace!r} defines")
            out[secret.removesuffix("-twin")] = twin.public_key
    return out


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


def _loop_passes(m: metrics.Metrics) -> int:
    return int(next(s.value for s in m.loop_tick.collect()[0].samples if s.name.endswith("_count")))


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = WAIT_S, max_pause: float = 0.02) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.001
    while True:
        result = await check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, max_pause)  # a poll that reads the ledger costs the operator CPU: back off


@contextlib.contextmanager
def _signals_cancel(task: asyncio.Task[Any], caught: list[int]) -> Any:
    """SIGINT/SIGTERM cancel ``task`` (its cleanup runs: the operator stops, folders are removed)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not caught:
            caught.append(signum)
            task.cancel()

    def install() -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, on_signal, s)
    install()
    try:
        yield install  # kopf installs its own handlers when it starts: the caller re-installs ours after
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)


async def _empty_ledger(url: str) -> None:
    engine = audit_mod.engine_for(url)
    try:
        minted, billed, balances = await audit_mod.totals(engine)
    except Exception:  # no tables yet: a new ledger
        return
    finally:
        await engine.dispose()
    if minted or billed or any(balances.values()):
        raise SandboxError(f"the ledger at {url} is not empty: the sandbox audits every unit, so it needs a new one")


async def run(*, days: int = 30, ledger_url: str | None = None, examples: pathlib.Path = scenario.FOLDER,
              console: Console | None = None, picture_path: pathlib.Path | None = None, keep: bool = False,
              quiet: bool = False) -> Summary:
    """The month. SIGINT/SIGTERM stop it cleanly (Interrupted); with ``keep`` the emulator and the operator
    stay up after the month until one of them arrives."""
    console = console or Console()
    manifests = load_examples(examples)
    timeline = scenario.for_folder(examples)
    councils = [identity.KeyPair.generate() for _ in range(3)]  # §5: three vetoes stop a proposal
    keys = rekey(manifests, councils[0])
    twins = payers(manifests, keys)
    caught: list[int] = []
    me = asyncio.current_task()
    assert me is not None
    try:
        with _signals_cancel(me, caught) as reinstall, tempfile.TemporaryDirectory(prefix="tfgrid-sandbox-") as tmp:
            url = ledger_url or f"sqlite:///{pathlib.Path(tmp) / 'ledger.db'}"
            await _empty_ledger(url)
            clk = LoopClock(START)

            async def make_runtime() -> runtime.Runtime:
                # the loop runs when the sandbox wakes it (the month) and every 5 s once the month is over (--keep)
                settings = Settings(tick_s=3600.0, batch_window_s=0.001, metrics_port=0,
                                    council_keys=",".join(c.public_key for c in councils),
                                    counter_refresh_s=6 * HOUR)  # counters in the table move every 6 grid hours
                m = metrics.Metrics()
                clk.passes = lambda: _loop_passes(m)
                return runtime.Runtime(settings=settings, clock=clk, ledger=await backend.open_backend(url, CONFIG),
                                       kube=KubeClient(), metrics=m, retry_delay_s=0.05)

            async with local.local_api(record_requests=False) as emu:
                ledger = await backend.open_backend(url, CONFIG)
                engine = audit_mod.engine_for(url)
                try:
                    async with local.operator(make_runtime) as rt:
                        reinstall()
                        month = Month(emu, rt, ledger, engine, clk, manifests, keys, twins, timeline, days, console,
                                      quiet)
                        summary = await month.run()
                        summary.picture = _draw(month.points, days, picture_path or pathlib.Path(tmp) / "month.svg")
                        if not quiet:
                            print_summary(console, summary)
                        if keep:
                            rt.settings.tick_s = 5.0
                            await _keep(console, tmp, url, keys, councils, manifests)
                finally:
                    await engine.dispose()
                    await ledger.close()
    except asyncio.CancelledError:
        if caught:
            raise Interrupted(caught[0]) from None
        raise
    return summary


def _draw(points: list[picture.Point], days: int, path: pathlib.Path) -> str:
    path.write_text(picture.svg(points, days))
    return str(path)


async def _keep(console: Console, tmp: str, url: str, keys: dict[str, identity.KeyPair],
                councils: list[identity.KeyPair], manifests: list[Manifest]) -> None:
    """Write the sandbox's keys where a person can use them, say how, and run until Ctrl-C."""
    import os

    folder = pathlib.Path(tmp) / "keys"
    folder.mkdir(mode=0o700)
    for ref, key in [*keys.items(), *((f"council/{i}", c) for i, c in enumerate(councils))]:
        f = folder / (ref.replace("/", "-") + ".key")
        f.write_text(key.to_text() + "\n")
        f.chmod(0o600)
    proposal = next((m for m in manifests if m.kind == "Proposal"), None)
    farm = next((m for m in manifests if m.kind == "Farm"), None)
    console.print("\n[bold]The grid keeps running.[/bold] In another shell:")
    console.print(f"  export KUBECONFIG={os.environ['KUBECONFIG']}", soft_wrap=True)
    console.print("  kubectl get grid -A", soft_wrap=True)
    console.print(f"  tfgrid-operator ledger --ledger-url {url} show", soft_wrap=True)
    target = f"--proposal {proposal.name if proposal else 'NAME'} --namespace {proposal.namespace if proposal else 'default'}"
    if farm is not None:
        console.print(f"  tfgrid-operator vote {target} --farm {farm.name} --yes --key-file {folder}/farm-{farm.name}.key",
                      soft_wrap=True)
    console.print(f"  tfgrid-operator council veto {target} --key-file {folder}/council-0.key  (council-1, -2 too)",
                  soft_wrap=True)
    console.print(f"  tfgrid-operator council sign DRAFT.yaml --key-file {folder}/council-0.key  (a new proposal)",
                  soft_wrap=True)
    console.print("Grid time stands still at the month's end. Ctrl-C stops everything and removes the temporary files.")
    await asyncio.Event().wait()


class Month:
    """One run of the scenario against a running operator."""

    def __init__(self, emu: StrictApiServer, rt: runtime.Runtime, ledger: backend.GridBackend, engine: Any,
                 clk: LoopClock, manifests: list[Manifest], keys: dict[str, identity.KeyPair], twins: dict[str, str],
                 timeline: scenario.Scenario, days: int, console: Console, quiet: bool) -> None:
        self.emu, self.rt, self.ledger, self.engine, self.clk = emu, rt, ledger, engine, clk
        self.manifests, self.keys, self.twins, self.timeline = manifests, keys, twins, timeline
        self.days, self.console, self.quiet = days, console, quiet
        self.funded: dict[str, int] = {}
        self.events: list[str] = []
        self.points: list[picture.Point] = []
        self.nodes = [(m.namespace, m.name) for m in manifests if m.kind == "Node"]
        self.farms = [m.name for m in manifests if m.kind == "Farm"]
        self.proposals = [m for m in manifests if m.kind == "Proposal"]
        self.down: str | None = None  # the node of the scenario's outage, once it began
        self.sent = 0  # uptime reports sent
        self.last_report = {n: 0 for _, n in self.nodes}  # node → the step of its latest report

    def note(self, step: int, text: str) -> None:
        self.events.append(f"day {step / scenario.STEPS_PER_DAY:5.2f}  {text}")

    async def fund(self, step: int, account: str, amount: int) -> None:
        await self.ledger.fund(name=account, amount=amount)  # what `tfgrid-operator ledger fund` does
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
                await self.loop_pass(self.clk.now())
                summary = await _until(lambda: self.summary(final=False), timeout=10) or await self.summary(final=True)
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
                                                 uptime=ts - START + 600) for ns, n in reporting))
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
            for p in self.proposals:  # the same code as `tfgrid-operator vote`
                entry = ballot.signed_vote(self.keys[f"farm/{farm}"], proposal=f"{p.namespace}/{p.name}", farm=farm,
                                           approve=approve)
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
                await kube.request("POST", _collection(m), m.doc)
            except ApiError as err:
                raise SandboxError(f"{m.file}: {m.kind} {m.namespace}/{m.name} was refused: {_api_message(err)}") from None
            if m.kind in GRID_KINDS:
                got = await _until(lambda m=m: _true(self._ready(m)))
                if not got:
                    obj = self.emu.read(f"{runtime.GROUP}/{runtime.VERSION}/{m.kind.lower()}s", m.namespace, m.name)
                    cond = next((c for c in view.status(obj).get("conditions") or [] if c["type"] == "Ready"), {})
                    raise SandboxError(f"{m.file}: {m.kind} {m.namespace}/{m.name} did not become Ready within "
                                       f"{WAIT_S:.0f} s: {cond.get('reason', 'no status')}: {cond.get('message', '')}")

    def _ready(self, m: Manifest) -> bool:
        obj = self.emu.read(f"{runtime.GROUP}/{runtime.VERSION}/{m.kind.lower()}s", m.namespace, m.name)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in view.status(obj).get("conditions") or [])

    async def summary(self, final: bool) -> Summary | None:
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
        return s if s.matches or final else None


async def _true(value: bool) -> bool:
    return value


def _api_message(err: ApiError) -> str:
    """The API server's own message (a 422 names the field), not its JSON envelope."""
    _, _, body = str(err).partition(": ")
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return str(err)


def _collection(m: Manifest) -> str:
    if m.kind == "Secret":
        return f"/api/v1/namespaces/{m.namespace}/secrets"
    return f"/apis/{runtime.GROUP}/{runtime.VERSION}/namespaces/{m.namespace}/{m.kind.lower()}s"


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


def main(*, days: int = 30, ledger_url: str | None = None, examples: pathlib.Path = scenario.FOLDER,
         picture_path: pathlib.Path | None = None, keep: bool = False, as_json: bool = False) -> Summary:
    """The sandbox from a synchronous caller (the CLI). Raises SandboxError or Interrupted."""
    console = Console(stderr=True) if as_json else Console()
    summary = asyncio.run(run(days=days, ledger_url=ledger_url, examples=examples, console=console,
                              picture_path=picture_path, keep=keep, quiet=as_json))
    if as_json:
        print(json.dumps(summary.as_json(), sort_keys=True))
    return summary
