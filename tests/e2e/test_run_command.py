"""The real entry point, as the container runs it: `tfgrid-operator run` in its own process against the
cluster in $KUBECONFIG (the emulator), with kopf's liveness endpoint and the metrics port up, stopped by
SIGTERM like a pod."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from e2e.objects import create, farm, ready

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except OSError:
        return 0, ""


async def test_run_against_the_cluster_in_kubeconfig(apiserver, tmp_path):
    health, metrics_port = free_port(), free_port()
    env = {**os.environ, "TFGRID_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
           "TFGRID_METRICS_PORT": str(metrics_port), "TFGRID_TICK_S": "0.5", "TFGRID_LOG_FORMAT": "json",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "tfgrid_operator", "run", f"--liveness=http://127.0.0.1:{health}/healthz"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        await create(apiserver, farm("f1"))
        await ready(apiserver, "farms", "f1", timeout=30)
        status, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{health}/healthz")
        assert status == 200
        status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and 'controller_runtime_reconcile_total{controller="farm",result="success"} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, out[-2000:]
    assert "no cluster reachable" not in out  # it ran against the cluster, not the sandbox
    assert any(line.startswith("{") and '"message"' in line for line in out.splitlines())  # JSON logs
