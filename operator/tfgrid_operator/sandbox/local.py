"""A local Kubernetes API (the strict emulator on a local port) and the real operator in this process:
what the sandbox and the scale benchmark run on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import kopf
import yaml
from kmock._internal.apps import Server

import tfgrid_operator.handlers  # noqa: F401  (registers the handlers)
from tfgrid_operator import runtime
from tfgrid_operator.api import crds
from tfgrid_operator.handlers import kopf_tuning
from tfgrid_operator.sandbox.emulator import StrictApiServer


@contextlib.asynccontextmanager
async def local_api(**emulator: Any) -> AsyncIterator[StrictApiServer]:
    """The emulator with our CRDs registered, served on 127.0.0.1; $KUBECONFIG points at it meanwhile."""
    with tempfile.TemporaryDirectory(prefix="tfgrid-local-") as tmp:
        async with StrictApiServer(**emulator) as emu, Server(emu) as server:
            for crd in crds.ALL.values():
                resp = await emu.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
                if resp.status != 201:
                    raise RuntimeError(f"the emulator refused a CRD: {await resp.text()}")
            kubeconfig = pathlib.Path(tmp) / "kubeconfig"
            kubeconfig.write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "local",
                "clusters": [{"name": "local", "cluster": {"server": str(server.url).rstrip("/")}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
                "users": [{"name": "local", "user": {"token": "local"}}],
            }))
            previous = os.environ.get("KUBECONFIG")
            os.environ["KUBECONFIG"] = str(kubeconfig)  # the operator's login and our clients both read it
            try:
                yield emu
            finally:
                if previous is None:
                    os.environ.pop("KUBECONFIG", None)
                else:
                    os.environ["KUBECONFIG"] = previous


@contextlib.asynccontextmanager
async def operator(factory: Callable[[], Awaitable[runtime.Runtime]]) -> AsyncIterator[runtime.Runtime]:
    """The real kopf operator as a task of this event loop, with the runtime ``factory`` builds (handed to its
    startup handler in kopf's operator memo, where the handlers then find the Runtime)."""
    memo = kopf.Memo({runtime.MAKE_RUNTIME: factory})
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf_tuning.operator(registry=kopf.get_default_registry(), standalone=True,
                                                    clusterwide=True, memo=memo, stop_flag=stop, ready_flag=ready))
    try:
        waiting = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait({waiting, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not ready.is_set():
            raise RuntimeError("the operator stopped while starting" if task.done() else
                               "the operator did not start within 30 s")
        yield runtime.get(memo)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
