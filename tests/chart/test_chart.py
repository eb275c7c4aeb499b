"""The Helm chart, rendered by the real helm binary (bin/helm, installed by scripts/install.sh): lint, render
with default and non-default values, validate every manifest against the Kubernetes schemas offline, and check
what the operator's users rely on (security context, probes, storage, peering, opt-in pieces)."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from tfgrid_operator import metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tfgrid-operator"
HELM = str(ROOT / "bin" / "helm")
K8S = "1.30.0"
PG = ["--set", "ledger.postgres.enabled=true", "--set", "ledger.postgres.existingSecret=pg-url"]


def helm(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([HELM, *args], capture_output=True, text=True)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def render(*args: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(helm("template", "grid", str(CHART), "-n", "tfgrid-system", *args).stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", [[], [*PG, "--set", "replicaCount=2", "--set", "metrics.serviceMonitor.enabled=true",
                                         "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                                         "--set", "podDisruptionBudget.enabled=true",
                                         "--set", "grafanaDashboard.enabled=true", "--set", "operator.logFormat=text"],
                                    ["--set", "watchNamespace=grid", "--set", "serviceAccount.name=custom"]])
def test_lint_and_render_validate_against_kubernetes_schemas(values):
    helm("lint", str(CHART), *[v for v in values if not v.startswith("monitoring") and v != "--api-versions"])
    docs = render(*values)
    for doc in docs:
        if doc["apiVersion"].startswith(("monitoring.coreos.com", "kopf.dev")):
            continue  # not Kubernetes' own kinds: no schema to check against offline
        kubernetes_validate.validate(doc, K8S, strict=True)
    labels = {d["kind"]: d["metadata"].get("labels", {}) for d in docs}
    for kind, lab in labels.items():
        assert lab.get("app.kubernetes.io/name") == "tfgrid-operator" and "helm.sh/chart" in lab, kind


def test_default_install_is_one_hardened_replica_on_a_kept_sqlite_volume():
    docs = render()
    dep = by_kind(docs, "Deployment")[0]
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TFGRID_LEDGER_URL"] == "sqlite:////data/ledger.db" and env["TFGRID_LOG_FORMAT"] == "json"
    pvc = by_kind(docs, "PersistentVolumeClaim")[0]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not by_kind(docs, "PodDisruptionBudget") and not by_kind(docs, "ServiceMonitor")
    assert not by_kind(docs, "ClusterKopfPeering") and "--peering" not in c["args"]


def test_the_loops_write_budget_and_counter_cadence_default_as_the_operator_does_and_reach_it(monkeypatch):
    from tfgrid_operator.settings import Settings

    def env(*values: str) -> dict:
        c = by_kind(render(*values), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in c["env"] if e["name"].startswith("TFGRID_")}

    default = Settings()
    for name, value in env().items():
        monkeypatch.setenv(name, value)
    assert (Settings().status_writes_per_s, Settings().counter_refresh_s, Settings().occupancy_refresh_s) == \
        (default.status_writes_per_s, default.counter_refresh_s, default.occupancy_refresh_s) == (20.0, 3600, 30.0)
    chosen = env("--set-json", "operator.statusWritesPerSecond=7.5", "--set", "operator.counterRefreshSeconds=0",
                 "--set-json", "operator.occupancyRefreshSeconds=2.5")
    assert (chosen["TFGRID_STATUS_WRITES_PER_S"], chosen["TFGRID_COUNTER_REFRESH_S"],
            chosen["TFGRID_OCCUPANCY_REFRESH_S"]) == ("7.5", "0", "2.5")


def test_postgres_standbys_peer_with_distinct_priorities():
    docs = render(*PG, "--set", "replicaCount=3")
    dep = by_kind(docs, "Deployment")[0]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert dep["spec"]["replicas"] == 3 and "--peering" in c["args"]
    url = next(e for e in c["env"] if e["name"] == "TFGRID_LEDGER_URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "pg-url", "key": "url"}
    assert next(e for e in c["env"] if e["name"] == "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert by_kind(docs, "ClusterKopfPeering")[0]["metadata"]["name"] == "tfgrid-operator"
    assert not by_kind(docs, "PersistentVolumeClaim")


def test_peering_priority_comes_from_the_pod_name(monkeypatch):
    from tfgrid_operator import cli

    monkeypatch.setenv("POD_NAME", "grid-tfgrid-operator-abc12")
    a = cli.peering_priority(None)
    monkeypatch.setenv("POD_NAME", "grid-tfgrid-operator-def34")
    assert a != cli.peering_priority(None) and cli.peering_priority(5) == 5


@pytest.mark.parametrize(("values", "message"), [
    (["--set", "replicaCont=2"], "additional properties 'replicaCont' not allowed"),
    (["--set", "replicaCount=two"], "got string, want integer"),
    (["--set", "operator.logFormat=xml"], "logFormat"),
    (["--set", "operator.councilKeys={not-a-key}"], "councilKeys"),
    (["--set", "operator.statusWritesPerSecond=0"], "statusWritesPerSecond"),
    (["--set", "operator.counterRefreshSeconds=-1"], "counterRefreshSeconds"),
    (["--set", "replicaCount=2"], "needs ledger.postgres.enabled=true"),
    (["--set", "ledger.postgres.enabled=true"], "needs ledger.postgres.existingSecret"),
    (["--set", "metrics.serviceMonitor.enabled=true"], "needs the Prometheus Operator"),
    ([*PG, "--set", "replicaCount=2", "--set", "watchNamespace=grid"], "cluster-wide peering"),
])
def test_bad_values_fail_at_install_time_with_a_clear_message(values, message):
    out = helm("template", "grid", str(CHART), *values, ok=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_crds_ship_in_crds_folder_unmodified():
    shipped = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert all(not re.search(r"\{\{", (CHART / "crds" / n).read_text()) for n in shipped)  # plain YAML, no templating


def test_grafana_dashboard_plots_only_metrics_the_operator_exports():
    exported = {m.name for m in metrics.Metrics().registry.collect()}
    dashboard = json.loads((CHART / "dashboards" / "tfgrid-operator.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|total|count|sum)$", "", m)
            for e in exprs for m in re.findall(r"\b(?:tfgrid|controller_runtime)_[a-z_]+", e)}
    assert used and used <= {re.sub(r"_total$", "", n) for n in exported}, used - exported
    cm = by_kind(render("--set", "grafanaDashboard.enabled=true"), "ConfigMap")[0]
    assert json.loads(cm["data"]["tfgrid-operator.json"])["uid"] == "tfgrid-operator"
