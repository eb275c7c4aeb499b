"""Faults the operator must ride out: the ledger unavailable (SQLite locked by another process, PostgreSQL gone
behind a TCP proxy), API errors (500s, 409s) and dropped watch streams. Each time it keeps running, says
Synced=False/Ready=False with the reason, backs off, and recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import pytest

from e2e.conftest import OperatorThread, condition
from e2e.objects import PatchFaults, create, deployment, farm, node, obj, ready, twin_account
from pg import PG_URL, drop_postgres, fresh_postgres
from polling import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def ledger_path(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}?timeout=0.3"  # a writer gives up on a held lock quickly


async def test_sqlite_locked_by_another_process_then_released(apiserver, operator, tmp_path):
    await create(apiserver, farm("f0"))
    await ready(apiserver, "farms", "f0")
    holder = sqlite3.connect(tmp_path / "ledger.db", timeout=5, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        await create(apiserver, farm("f1"))
        f = await eventually(lambda: condition(obj(apiserver, "farms", "f1"), "Synced").get("status") == "False"
                             and obj(apiserver, "farms", "f1"), what="Synced=False while locked")
        assert condition(f, "Synced")["reason"] == "ReconcileError"
        message = condition(f, "Synced")["message"]
        assert "the ledger is unavailable" in message and "database is locked" in message
        assert condition(f)["status"] == "False"
        await eventually(lambda: [e for e in apiserver.read_all("events")
                                  if e["reason"] == "LedgerUnavailable" and e["involvedObject"]["name"] == "f1"])
        assert operator.thread.is_alive()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    f = (await ready(apiserver, "farms", "f1"))[0]  # recovers on the next retry, by itself
    assert condition(f, "Synced")["status"] == "True"


class TcpProxy:
    """127.0.0.1:port → the PostgreSQL server; stop() refuses and cuts every connection, start() serves again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pipes: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for t in list(self.pipes):
            t.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection(*self.target)

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            finally:
                with contextlib.suppress(Exception):
                    w.close()
        tasks = {asyncio.create_task(pipe(reader, up_w)), asyncio.create_task(pipe(up_r, writer))}
        self.pipes |= tasks
        await asyncio.gather(*tasks, return_exceptions=True)
        self.pipes -= tasks


@pytest.mark.postgres
async def test_postgres_gone_then_back(apiserver, grid_clock):
    url, name = await fresh_postgres()
    host_port = PG_URL.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    proxied = url.replace(host_port, f"127.0.0.1:{proxy.port}")
    op = OperatorThread(proxied, grid_clock)
    await asyncio.to_thread(op.start)  # the proxy runs on this loop: do not block it
    try:
        await create(apiserver, farm("f0"))
        await ready(apiserver, "farms", "f0")
        await proxy.stop()  # the database server is gone
        await create(apiserver, farm("f1"))
        f = await eventually(lambda: condition(obj(apiserver, "farms", "f1"), "Synced").get("status") == "False"
                             and obj(apiserver, "farms", "f1"), timeout=20, what="Synced=False while PG is gone")
        assert "the ledger is unavailable" in condition(f, "Synced")["message"]
        await proxy.start()  # back on the same port
        await ready(apiserver, "farms", "f1", timeout=30)
        assert op.thread.is_alive()
    finally:
        await op.stop()
        with contextlib.suppress(Exception):
            await proxy.stop()
        await drop_postgres(name)
    assert not op.errors


async def test_api_500s_409s_and_dropped_watches(apiserver, operator, ledger):
    await twin_account(ledger, apiserver, "alice")
    apiserver.fault = failures = PatchFaults("farms", 500, times=3)
    await create(apiserver, farm("f1"))
    await ready(apiserver, "farms", "f1")  # patches failed with 500/409 and were retried
    assert failures.left == 0
    apiserver.fault = conflicts = PatchFaults("nodes", 409, times=2)
    await create(apiserver, node("n0", "f1"))
    await ready(apiserver, "nodes", "n0", timeout=30)  # a 409 is not fatal: the next pass writes it
    assert conflicts.left == 0
    apiserver.fault = None
    apiserver.drop_watches()  # every watch stream cut mid-flight
    await create(apiserver, node("n1", "f1"), deployment("web", public_ips=0))
    await ready(apiserver, "deployments", "web")  # the operator re-watched and carried on
    apiserver.drop_watches()
    await create(apiserver, deployment("web2", public_ips=0))
    await ready(apiserver, "deployments", "web2")
    assert operator.thread.is_alive()
