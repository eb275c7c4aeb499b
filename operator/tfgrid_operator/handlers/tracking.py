"""Keep the latest body of every object of our kinds in memory, for the batched status loop."""

from __future__ import annotations

from typing import Any

import kopf

from tfgrid_operator import runtime


def track(plural: str) -> None:
    @kopf.on.event(runtime.GROUP, runtime.VERSION, plural, id=f"track-{plural}")
    async def _track(event: dict[str, Any], body: Any, name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
        rt = runtime.of(memo)
        if rt is None:
            return
        key = (plural, namespace, name)
        if event.get("type") == "DELETED":
            rt.objects.pop(key, None)
            if plural == "deployments":  # gone: through our finalizer, or past it (the sweep closes what is left)
                rt.request_sweep()
        else:
            rt.objects[key] = {"metadata": dict(body.get("metadata", {})), "spec": dict(body.get("spec", {})),
                               "status": dict(body.get("status", {}))}
