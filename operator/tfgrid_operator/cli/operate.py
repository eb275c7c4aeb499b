"""`run`: the operator against a cluster."""

from __future__ import annotations

import asyncio

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


def peering_priority(explicit: int | None) -> int:
    """kopf peering is not leader election: equal priorities all pause. Replicas of one Deployment share their
    settings, so the default priority comes from the pod's own name (stable for the pod, distinct across pods)."""
    import os
    import socket
    import zlib

    if explicit is not None:
        return explicit
    return 1 + zlib.crc32((os.environ.get("POD_NAME") or socket.gethostname()).encode()) % 1_000_000


def cluster_reachable() -> bool:
    from tfgrid_operator.kube.client import KubeClient

    async def probe() -> bool:
        try:
            async with KubeClient() as kube:
                await kube.request("GET", "/version")
            return True
        except Exception:  # no kubeconfig (ConfigError), refused, DNS, TLS, 401 …: not usable
            return False
    return asyncio.run(probe())


@main.command(help="Run the operator against the cluster in the kubeconfig (or in-cluster). With no cluster "
                   "reachable it runs the local sandbox instead (see `sandbox --help`).")
@click.option("--namespace", "-n", default="", help="watch one namespace; default: all namespaces")
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
def run(namespace: str, ledger_url: str | None, liveness: str, peering: bool, priority: int | None,
        log_format: str, verbose: bool) -> None:
    import os

    import kopf

    import tfgrid_operator.handlers  # noqa: F401  (registers the handlers)

    if not cluster_reachable():
        click.echo("no cluster reachable in the kubeconfig: running the local sandbox instead", err=True)
        from tfgrid_operator import sandbox as sandbox_mod

        sandbox_mod.main(ledger_url=ledger_url)
        return
    configure_logging(log_format, verbose)
    if ledger_url:
        os.environ["TFGRID_LEDGER_URL"] = ledger_url
    asyncio.run(kopf.operator(
        registry=kopf.get_default_registry(), clusterwide=not namespace, namespaces=[namespace] if namespace else [],
        liveness_endpoint=liveness,
        # naming a peering makes it mandatory in kopf, so standalone runs must not name one
        **({"peering_name": PEERING_NAME, "priority": peering_priority(priority)} if peering else {"standalone": True})))
