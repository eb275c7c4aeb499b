"""Argo CD's health check for our kinds, run by a real Lua interpreter (lupa) against sample objects, the way
Argo CD runs resource.customizations.health.* scripts: a global ``obj``, a returned table."""

import pathlib

import lupa
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
LUA = (ROOT / "argocd" / "health.lua").read_text()


def health(obj):
    rt = lupa.LuaRuntime(unpack_returned_tuples=True)
    rt.globals().obj = _lua(rt, obj)
    result = rt.execute(LUA)
    return result["status"], result["message"]


def _lua(rt, value):
    if isinstance(value, dict):
        return rt.table_from({k: _lua(rt, v) for k, v in value.items()})
    if isinstance(value, list):
        return rt.table_from([_lua(rt, v) for v in value])
    return value


def cr(*conditions, generation=1, observed=1):
    conds = [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions]
    return {"metadata": {"name": "x", "generation": generation},
            "status": {"conditions": conds, "observedGeneration": observed}}


@pytest.mark.parametrize(("obj", "status", "in_message"), [
    ({"metadata": {"name": "x"}}, "Progressing", "Waiting"),
    (cr(("Ready", "True", "Available", "contract 7 on node n1"), ("Synced", "True", "ReconcileSuccess", "")),
     "Healthy", "contract 7"),
    (cr(("Ready", "False", "Creating", "placing"), ("Synced", "True", "ReconcileSuccess", "")), "Progressing", "Creating"),
    (cr(("Ready", "False", "FarmNotReady", "farm f1 is not registered"),), "Progressing", "FarmNotReady"),
    (cr(("Ready", "False", "Unschedulable", "Capacity: no room"), ("Synced", "True", "ReconcileSuccess", "")),
     "Degraded", "Unschedulable: Capacity"),
    (cr(("Ready", "False", "GracePeriod", "fund the payer"),), "Degraded", "GracePeriod"),
    (cr(("Ready", "True", "Available", ""), ("Synced", "False", "ReconcileError", "the ledger is unavailable")),
     "Degraded", "the ledger is unavailable"),
    (cr(("Ready", "True", "Available", ""), generation=2, observed=1), "Progressing", "generation 2"),
    (cr(("Ready", "Unknown", "Creating", ""),), "Progressing", "Waiting"),
])
def test_health_maps_ready_and_synced(obj, status, in_message):
    got, message = health(obj)
    assert got == status and in_message in message


def test_argocd_cm_carries_the_same_script_for_every_kind():
    cm = yaml.safe_load((ROOT / "argocd" / "argocd-cm.yaml").read_text())
    kinds = {k.rsplit("_", 1)[1]: v for k, v in cm["data"].items()}
    assert set(kinds) == {"Farm", "Node", "Deployment", "Proposal"}
    assert all(v == LUA for v in kinds.values())
