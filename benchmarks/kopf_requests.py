"""What one of kopf's API requests costs, kopf's authentication against ours (``handlers/kopf_tuning.authenticated``),
against the local API emulator in this process.

    python benchmarks/kopf_requests.py [--requests 1500] [--rounds 4]

kopf's ``auth.authenticated`` returns from inside its loop over the vault's credentials and leaves two suspended
async generators per request to the garbage collector; asyncio's finalizer hook makes a task for each. Both ways
decode the answer the same (``kube.jsonwire``, slimmed); only the authentication differs. The two alternate, round by
round, GETting one Farm. Prints one JSON object: cpu_us_per_request (process CPU per request, the emulator's
serving included, so a difference is what the client saves), for "kopf" and "ours", each round's; the mean ratio
ours / kopf; and finalized_async_generators per request each way.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import pathlib
import sys
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kopf
from kopf._cogs.clients import auth
from kopf._cogs.structs import credentials

import harness
from tfgrid_operator.handlers import kopf_tuning, startup
from tfgrid_operator.kube.client import KubeClient
from tfgrid_operator.sandbox import local

NS = "bench"
FARM = {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Farm", "metadata": {"name": "f1"},
        "spec": {"ownerKey": "A" * 43 + "=", "payoutAccount": "p", "publicIPs": 1}}


async def kopfs_own(*args: Any, **kwargs: Any) -> Any:
    """kopf's authenticated request, with the answer decoded as ours decodes it."""
    response = await kopf_tuning.KOPF_REQUEST(*args, **kwargs)
    setattr(response, "json", functools.partial(response.json, loads=kopf_tuning.read_response))  # noqa: B010
    return response


async def bench(requests: int, rounds: int) -> dict[str, Any]:
    ways = {"kopf": kopfs_own, "ours": kopf_tuning.request}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    finalized: dict[str, int] = dict.fromkeys(ways, 0)
    async with local.local_api(record_requests=False), KubeClient(user_agent="bench") as kube:
        await harness.create_namespace(kube, NS)
        await kube.request("POST", f"/apis/grid.threefold.io/v1alpha1/namespaces/{NS}/farms", FARM)
        vault = credentials.Vault()
        await vault.populate({"login": startup.login()})
        auth.vault_var.set(vault)
        settings, logger = kopf.OperatorSettings(), logging.getLogger("bench")
        firstiter, finalizer = sys.get_asyncgen_hooks()
        way = ""

        def counted(agen: Any) -> None:
            finalized[way] += 1
            finalizer(agen)
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=counted)
        try:
            for _ in range(rounds):
                for way, fn in ways.items():
                    kopf_tuning.kopf_api.request = fn
                    gc.collect()
                    started = time.process_time()
                    for _ in range(requests):
                        await kopf_tuning.kopf_api.get(f"/apis/grid.threefold.io/v1alpha1/namespaces/{NS}/farms/f1",
                                                       settings=settings, logger=logger)
                    cpu[way].append(round((time.process_time() - started) / requests * 1e6, 1))
        finally:
            sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
            kopf_tuning.kopf_api.request = kopf_tuning.request
            for _key, _info, context in [x async for x in vault.extended(auth.APIContext, "contexts")]:
                await context.session.close()
    mean = {name: sum(v) / len(v) for name, v in cpu.items()}
    return {"requests": requests, "rounds": rounds, "cpu_us_per_request": cpu,
            "ratio_ours_to_kopf": round(mean["ours"] / mean["kopf"], 3),
            "finalized_async_generators_per_request": {k: round(v / (requests * rounds), 2)
                                                       for k, v in finalized.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.requests, args.rounds))))


if __name__ == "__main__":
    main()
