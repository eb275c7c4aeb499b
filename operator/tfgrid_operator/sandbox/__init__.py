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
import contextlib
import json
import pathlib
import signal
import tempfile
from typing import Any

from rich.console import Console

from tfgrid_operator import backend, metrics, runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.domain import identity
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.sandbox import audit as audit_mod
from tfgrid_operator.sandbox import local, picture, scenario
from tfgrid_operator.sandbox.manifests import Manifest, SandboxError, load_examples, payers, rekey
from tfgrid_operator.sandbox.month import CONFIG, HOUR, START, LoopClock, Month, loop_passes
from tfgrid_operator.sandbox.summary import Summary, print_summary
from tfgrid_operator.settings import Settings

PICTURE = pathlib.Path("tfgrid-sandbox.svg")  # the month's picture, in the current folder unless told

__all__ = ["CONFIG", "START", "Interrupted", "Manifest", "SandboxError", "Summary", "load_examples", "main", "payers",
           "print_summary", "rekey", "run"]


class Interrupted(Exception):  # not an error: a person pressed Ctrl-C
    """SIGINT or SIGTERM stopped the sandbox; everything it started was stopped and its folders removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    """The sandbox audits every unit, so it runs only on a new ledger (or one with nothing in it)."""
    if not url.startswith(("sqlite:", "postgresql:", "postgres:")):
        raise SandboxError(f"unsupported ledger URL {url.split(':', 1)[0]!r}: use sqlite:/// or postgresql://")
    try:
        lg = await backend.open_backend(url, CONFIG)  # creates the schema on a new ledger; says why it cannot
    except errors.LedgerError as err:
        raise SandboxError(f"cannot open the ledger at {url}: {err.message}") from None
    await lg.close()
    engine = audit_mod.engine_for(url)
    try:
        minted, billed, balances = await audit_mod.totals(engine)
    finally:
        await engine.dispose()
    if minted or billed or any(balances.values()):
        raise SandboxError(f"the ledger at {url} is not empty: the sandbox audits every unit, so it needs a new one")


async def run(*, days: int = 30, ledger_url: str | None = None, examples: pathlib.Path = scenario.FOLDER,
              console: Console | None = None, picture_path: pathlib.Path = PICTURE, keep: bool = False,
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
                reinstall()  # kopf's startup calls this just after taking over the signals: take them back
                # the loop runs when the sandbox wakes it (the month) and every 5 s once the month is over (--keep)
                settings = Settings(tick_s=3600.0, metrics_port=0,
                                    council_keys=",".join(c.public_key for c in councils),
                                    counter_refresh_s=6 * HOUR,  # counters in the table move every 6 grid hours
                                    # no cluster to spare (its own emulator): a pass's writes all go with the pass, so
                                    # what the month shows never depends on how fast this machine is
                                    status_writes_per_s=1e6)
                m = metrics.Metrics()
                clk.passes = lambda: loop_passes(m)
                return runtime.Runtime(settings=settings, clock=clk, ledger=await backend.open_backend(url, CONFIG),
                                       kube=KubeClient(), metrics=m, retry_delay_s=0.05)

            async with local.local_api(record_requests=False) as emu:
                ledger = await backend.open_backend(url, CONFIG)
                engine = audit_mod.engine_for(url)
                try:
                    async with local.operator(make_runtime) as rt:
                        reinstall()
                        month = Month(emu, rt, ledger, engine, clk, manifests, keys, twins, timeline, days, console,
                                      quiet, councils[0])
                        summary = await month.run()
                        summary.picture = _draw(month.points, days, picture_path)
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


def main(*, days: int = 30, ledger_url: str | None = None, examples: pathlib.Path = scenario.FOLDER,
         picture_path: pathlib.Path = PICTURE, keep: bool = False, as_json: bool = False) -> Summary:
    """The sandbox from a synchronous caller (the CLI). Raises SandboxError or Interrupted."""
    console = Console(stderr=True) if as_json else Console()
    summary = asyncio.run(run(days=days, ledger_url=ledger_url, examples=examples, console=console,
                              picture_path=picture_path, keep=keep, quiet=as_json))
    if as_json:
        print(json.dumps(summary.as_json(), sort_keys=True))
    return summary
