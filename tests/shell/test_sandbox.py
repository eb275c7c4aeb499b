"""The sandbox end to end: the scenario applied to the real operator on the local emulator, a few days of grid
life twice (the same amounts both times), each mechanism seen, an audit that passes and fails on a tampered
ledger, a clean stop on SIGINT/SIGTERM, and `--keep`. (The README's month-long run is timed by hand.)"""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys

import pytest
from rich.console import Console

from tfgrid_operator import sandbox
from tfgrid_operator.sandbox import audit

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tfgrid_operator"]


def _amounts(summary: sandbox.Summary) -> dict:
    out = summary.as_json()
    out.pop("picture")
    return out


async def test_four_days_twice_print_the_same_amounts_and_show_every_mechanism(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "unused"))  # the sandbox sets its own for the emulator
    runs, texts = [], []
    for i in (1, 2):
        out = io.StringIO()
        url = f"sqlite:///{tmp_path / f'ledger{i}.db'}"
        runs.append(await sandbox.run(days=4, ledger_url=url, console=Console(file=out, width=160),
                                      picture_path=tmp_path / f"month{i}.svg"))
        texts.append(out.getvalue())
    first, second = runs
    assert _amounts(first) == _amounts(second)  # every amount, balance, check and event
    assert (tmp_path / "month1.svg").read_text() == (tmp_path / "month2.svg").read_text()
    assert first.ok and first.audit is not None and first.audit.mint_periods == 1 and first.audit.bill_periods == 96
    assert first.deployments == {"alice/db": "Ready", "alice/gateway": "Ready", "alice/web": "Ready", "bob/api": "Ready"}
    assert first.proposals == {"grid/cheaper-compute": "Executed"}  # five farms voted, 4 yes; the price fell
    events = "\n".join(first.events)
    assert "bob/api: Ready on nile-1 → Ready on nile-2" in events or "on nile-1 → GracePeriod on nile-2" in events
    assert "GracePeriod on nile-2 → Ready on nile-2" in events  # bob's grace ended with the top-up
    assert "node grid/nile-1: Ready → NodeDown" in events and "farm tinyfarm votes no" in events
    engine = audit.engine_for(f"sqlite:///{tmp_path / 'ledger1.db'}")
    mints = await audit.last_mints(engine)
    await engine.dispose()
    assert mints["sla-1"][3] == "BelowSla" and mints["sla-1"][2] == 0 and mints["ghent-1"][3] == "Rewarded"
    assert "audit passed" in texts[0] and "rents node" in texts[0] and "Created None" not in texts[0]
    svg = (tmp_path / "month1.svg").read_text()
    assert svg.startswith("<svg") and "<polyline" in svg and "bob" in svg
    assert str(tmp_path / "month1.svg") in texts[0]


async def test_the_json_summary_and_an_audit_that_fails_on_a_tampered_ledger(tmp_path):
    db = tmp_path / "ledger.db"
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "unused")}
    run = subprocess.run([*CLI, "sandbox", "--days", "1", "--json", "--ledger-url", f"sqlite:///{db}",
                          "--picture", str(tmp_path / "m.svg")], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    summary = json.loads(run.stdout)  # stdout is one JSON object; the table went to stderr
    assert summary["ok"] and summary["billed"]["periods"] == 24 and summary["minted"]["periods"] == 0
    assert summary["picture"] == str(tmp_path / "m.svg") and {c["name"] for c in summary["checks"]} >= {"conservation"}
    assert summary["funded"] == {"alice": 5_000 * 10**7, "bob": 30 * 10**7}
    funding = summary["funded"]

    async def check() -> dict[str, bool]:
        engine = audit.engine_for(f"sqlite:///{db}")
        try:
            return {c.name: c.ok for c in (await audit.audit(engine, funding)).checks}
        finally:
            await engine.dispose()
    assert all((await check()).values())
    with sqlite3.connect(db) as conn:  # a unit appears from nowhere in the foundation's account
        conn.execute("UPDATE accounts SET balance = balance + 1 WHERE name = 'foundation'")
    checks = await check()
    assert not checks["conservation"] and not checks["payouts"] and checks["payer alice"]
    with sqlite3.connect(db) as conn:  # a bill says alice paid a unit less than her balance lost
        conn.execute("UPDATE accounts SET balance = balance - 1 WHERE name = 'foundation'")
        conn.execute("UPDATE bills SET paid = paid - 1 WHERE rowid = (SELECT MIN(b.rowid) FROM bills b JOIN contracts c "
                     "ON c.id = b.contract_id JOIN accounts a ON a.id = c.account_id WHERE a.name = 'alice' AND b.paid > 0)")
    checks = await check()
    assert checks["conservation"] and not checks["payer alice"] and not checks["payouts"]
    # and the sandbox refuses to run on a ledger that is not empty (it could not audit it)
    with pytest.raises(sandbox.SandboxError, match="is not empty"):
        await sandbox.run(days=1, ledger_url=f"sqlite:///{db}", console=Console(file=io.StringIO()))


def test_missing_or_broken_examples_are_clear_errors(tmp_path):
    with pytest.raises(sandbox.SandboxError, match="no examples folder"):
        sandbox.load_examples(tmp_path / "nope")
    (tmp_path / "farm.yaml").write_text("kind: Farm\nmetadata: {name: f}\nspec: {}\n")
    with pytest.raises(sandbox.SandboxError, match="has no Node"):
        sandbox.load_examples(tmp_path)
    (tmp_path / "farm.yaml").write_text("kind: Farm\nmetadata: [\n")
    with pytest.raises(sandbox.SandboxError, match=r"farm.yaml: not valid YAML"):
        sandbox.load_examples(tmp_path)


def _start(tmp_path: pathlib.Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "KUBECONFIG": str(tmp_path / "unused"), "COLUMNS": "160", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*CLI, "sandbox", *args, "--picture", str(tmp_path / "m.svg")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """Read the sandbox's output until ``marker`` (it is running), never by a sleep."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"the sandbox ended before printing {marker!r}: {''.join(lines)[-2000:]}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_sandbox_cleanly(tmp_path, signum):
    proc = _start(tmp_path, "--days", "30")
    try:
        _wait_for(proc, "days of grid time start now")  # the operator runs
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "Stopped by" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("tfgrid-sandbox-", "tfgrid-local-"))]


def test_keep_leaves_the_grid_up_for_kubectl(tmp_path):
    proc = _start(tmp_path, "--days", "1", "--keep")
    try:
        lines = _wait_for(proc, "Ctrl-C stops everything")
        export = next(line for line in lines if "export KUBECONFIG=" in line)
        kubeconfig = export.split("KUBECONFIG=", 1)[1].strip()
        got = subprocess.run([sys.executable, "-c", "import asyncio, json\n"
                              "from tfgrid_operator.kube.client import KubeClient\n"
                              "async def go():\n"
                              "    async with KubeClient() as k:\n"
                              "        print(json.dumps(await k.request('GET', '/apis/grid.threefold.io/v1alpha1/proposals')))\n"
                              "asyncio.run(go())"], env={**os.environ, "KUBECONFIG": kubeconfig},
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        assert [p["metadata"]["name"] for p in json.loads(got.stdout)["items"]] == ["cheaper-compute"]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 130 and "Traceback" not in err
    assert not pathlib.Path(kubeconfig).exists()
