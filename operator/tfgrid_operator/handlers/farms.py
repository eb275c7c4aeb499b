"""Farm: register on the ledger as this object's record (first come, first served by name), report, close on delete."""

from __future__ import annotations

from typing import Any

import kopf

from tfgrid_operator import api, runtime
from tfgrid_operator.backend import errors
from tfgrid_operator.conditions import Reason
from tfgrid_operator.handlers import blocked, reporting, tenancy

G, V = runtime.GROUP, runtime.VERSION


@reporting.reconciler("farms", "farm")
async def reconcile_farm(body: Any, spec: Any, name: str, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime.get(memo)
    s = reporting.parse_spec(rt, api.FarmSpec, body, spec, patch)
    if s is None:
        return
    try:
        farm = await rt.ledger.ensure_farm(name=name, owner=tenancy.owner(body), owner_key=s.owner_key,
                                           payout_account=s.payout_account, certified=s.certified,
                                           dedicated=s.dedicated, public_ips=s.public_ips)
    except errors.NameTaken as err:
        return tenancy.name_taken(rt, body, patch, err)
    except errors.InvalidRequest as err:
        return reporting.invalid_spec(rt, body, patch, err.message)
    except errors.LedgerError as err:
        reporting.ledger_failure(rt, body, patch, err, ready_reason=Reason.CREATING)
    if not farm.created and "farmId" not in (body.get("status") or {}):  # a record made before: say it is adopted
        kopf.info(body, reason=str(Reason.ADOPTED), message=f"Farm {name} is farm {farm.id} on the ledger")
    reporting.report(rt, body, patch, ready=True, reason=Reason.AVAILABLE, message=f"registered as farm {farm.id}",
                     fields={"farmId": farm.id})


@kopf.on.delete(G, V, "farms")
@reporting.metered("farm")
async def delete_farm(body: Any, name: str, patch: kopf.Patch, memo: kopf.Memo, retry: int = 0, **_: Any) -> None:
    rt = runtime.get(memo)
    await reporting.close_on_ledger(rt, body, patch, close_farm(rt, body), message=lambda _: None, retry=retry,
                                    waits=WAITS)  # routine: no Event


async def close_farm(rt: runtime.Runtime, body: Any) -> None:
    await rt.ledger.close_farm(name=body["metadata"]["name"], owner=tenancy.owner(body))


# a Farm's delete waits for its active nodes (the ledger names them); kopf's id of the handler
WAITS = reporting.Waits(plural="farms", handler="delete_farm", on="nodes")
blocked.closes(WAITS.plural, WAITS.on, close_farm)


