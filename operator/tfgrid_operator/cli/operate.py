"""`run`: the operator against a cluster."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from tfgrid_operator.cli.app import main

PEERING_NAME = "tfgrid-operator"  # the ClusterKopfPeering/KopfPeering the chart creates for standby replicas


def configure_logging(log_format: str, verbose: bool = False) -> None:
    """kopf's logging, with one JSON object per line when asked (for log shippers)."""
    import logging

    import kopf

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
                   log_refkey="k8s" if log_format == "json" else None)
    # kopf logs two INFO lines per object and reconcile ("Handler … succeeded", "Creation is processed"): 20,000
    # lines each time a grid's 10,000 deployments resume. They show with --verbose; warnings and errors always do.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)


GC_THRESHOLDS = (20_000, 20, 10)  # Python's default: (700, 10, 10)


def tune_gc() -> None:
    """The garbage collector for a long-lived process with a large heap, set once its modules are imported.

    What the operator imports (kopf, the `kubernetes` package, SQLAlchemy, pydantic: ~123,000 objects the collector
    tracks) lives as long as the process, yet every full collection walked it again: at scale 0.3, 18 full
    collections of 0.15-0.29 s each during a burst, and the collector took ~10 % of the operator's CPU in all
    (benchmarks/timed_operator.py's BENCH_GC_LOG). gc.freeze() moves those objects out of the collector's sight; a
    higher first threshold lets the many short-lived objects of each watch event die by reference counting before
    a collection could promote them (the objects that wait in kopf's queue during a burst would otherwise be promoted
    to the oldest generation and each time trigger another full collection)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def peering_priority(explicit: int | None) -> int:
    """kopf peering is not leader election: equal priorities all pause. Replicas of one Deployment share their
    settings, so the default priority comes from the pod's own name (stable for the pod, distinct across pods)."""
    import os
    import socket
    import zlib

    if explicit is not None:
        return explicit
    return 1 + zlib.crc32((os.environ.get("POD_NAME") or socket.gethostname()).encode()) % 1_000_000


def in_a_pod() -> bool:
    from tfgrid_operator.kube import client

    return client.in_cluster()


async def wait_for_cluster(context: str | None, budget_s: float, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                           echo: Callable[[str], None] = lambda line: click.echo(line, err=True)) -> None:
    """Probe the cluster until it answers, for at most ``budget_s`` seconds of waiting: only failures a starting
    API server gives (refused, DNS, timeout, 5xx) are waited for, each wait twice the last (1 s … 30 s) and one
    log line each. TLS and 401/403 fail at once. Raises ClusterUnusable (or ConfigError) with the cause."""
    from tfgrid_operator.kube.client import ClusterUnusable, KubeClient, transient

    delay, waited = 1.0, 0.0
    while True:
        async with KubeClient(context=context) as kube:  # a fresh login each time: a token may have appeared
            try:
                await kube.probe()
                return
            except ClusterUnusable as err:
                if not transient(err.cause) or waited + delay > budget_s:
                    raise
                echo(f"waiting for the cluster: {err} (retrying in {delay:g} s; "
                     f"{budget_s - waited:g} s of --wait-for-cluster left)")
        await sleep(delay)
        waited += delay
        delay = min(delay * 2, 30.0)


@main.command(help="Run the operator against the cluster in the kubeconfig (or in-cluster). It never runs anything "
                   "else: with no usable cluster it exits non-zero with one line saying why (the sandbox is its own "
                   "command, see `sandbox --help`).")
@click.option("--namespace", "-n", default="", help="watch one namespace; default: all namespaces")
@click.option("--context", default=None, help="the kubeconfig context to use; default: its current context")
@click.option("--wait-for-cluster", "wait_s", type=click.FloatRange(min=0), envvar="TFGRID_WAIT_FOR_CLUSTER_S",
              default=None, help="seconds to keep retrying (with backoff) an API server that is not up yet; default: "
                                 "300 in a pod, 0 elsewhere. TLS and 401/403 errors are never retried.")
@click.option("--ledger-url", envvar="TFGRID_LEDGER_URL", default=None, help="sqlite:///file.db or postgresql://…")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True, help="kopf liveness endpoint")
@click.option("--peering/--standalone", envvar="TFGRID_PEERING", default=False, show_default=True,
              help="join kopf's peering of standby replicas (PostgreSQL ledger): the highest priority runs, the others "
                   "wait. Standalone by default: one replica.")
@click.option("--priority", type=int, envvar="TFGRID_PEERING_PRIORITY", default=None,
              help="this replica's peering priority; default: derived from the pod name, so replicas differ")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="TFGRID_LOG_FORMAT", default="text",
              show_default=True)
@click.option("--verbose", is_flag=True)
def run(namespace: str, context: str | None, wait_s: float | None, ledger_url: str | None, liveness: str,
        peering: bool, priority: int | None, log_format: str, verbose: bool) -> None:
    import os

    import kopf

    import tfgrid_operator.handlers  # noqa: F401  (registers the handlers)
    from tfgrid_operator.handlers import kopf_tuning
    from tfgrid_operator.kube import client

    client.use_context(context)  # our clients and kopf's login (handlers/startup.py) resolve the same context
    budget = wait_s if wait_s is not None else (300.0 if in_a_pod() else 0.0)
    try:  # before anything opens the ledger: a cluster we cannot use leaves every ledger untouched
        asyncio.run(wait_for_cluster(context, budget))
    except (client.ConfigError, client.ClusterUnusable) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    configure_logging(log_format, verbose)
    if ledger_url:
        os.environ["TFGRID_LEDGER_URL"] = ledger_url
    os.environ["TFGRID_WATCH_NAMESPACE"] = namespace  # the loop's own watches see what kopf's see
    tune_gc()
    asyncio.run(kopf_tuning.operator(
        registry=kopf.get_default_registry(), clusterwide=not namespace, namespaces=[namespace] if namespace else [],
        liveness_endpoint=liveness,
        # naming a peering makes it mandatory in kopf, so standalone runs must not name one
        **({"peering_name": PEERING_NAME, "priority": peering_priority(priority)} if peering else {"standalone": True})))
