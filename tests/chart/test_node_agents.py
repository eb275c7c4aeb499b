"""The chart's simulated node agents (off by default): a workload with a container per Node and RBAC that
allows patching their own Leases and nothing else; values.schema.json refuses what would not work."""

from __future__ import annotations

import kubernetes_validate
import pytest
from test_chart import CHART, K8S, by_kind, helm, render

AGENTS = ["--set", "nodeAgents.enabled=true", "--set", "nodeAgents.nodes={node1,node2,node3}",
          "--set", "nodeAgents.namespace=grid"]


def test_off_by_default():
    docs = render()
    assert not [d for d in docs if "node-agent" in d["metadata"]["name"]] and not by_kind(docs, "Lease")


def test_agents_render_valid_and_may_only_patch_their_own_leases():
    helm("lint", str(CHART), *AGENTS)
    docs = [d for d in render(*AGENTS) if d["metadata"].get("namespace") == "grid"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S, strict=True)
    role = by_kind(docs, "Role")[0]
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["patch"],
                              "resourceNames": ["tfgrid-node-node1", "tfgrid-node-node2", "tfgrid-node-node3"]}]
    binding = by_kind(docs, "RoleBinding")[0]
    sa = by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "grid"}]
    leases = by_kind(docs, "Lease")
    assert [lease["metadata"]["labels"]["grid.threefold.io/node"] for lease in leases] == ["node1", "node2", "node3"]
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa and pod["securityContext"]["runAsNonRoot"]
    assert [c["args"][:3] for c in pod["containers"]] == [
        ["node-agent", f"--node={n}", "--namespace=grid"] for n in ("node1", "node2", "node3")]
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in pod["containers"])
    assert pod["volumes"][0]["secret"]["secretName"] == "tfgrid-node-keys"


def test_agent_pods_are_not_selected_by_the_operator():
    docs = render(*AGENTS, "--set", "nodeAgents.namespace=")  # the release's namespace: next to the operator
    operator, agents = (d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith(("operator", "agents")))
    agent_labels = agents["spec"]["template"]["metadata"]["labels"]
    selector = operator["spec"]["selector"]["matchLabels"]
    assert not all(agent_labels.get(k) == v for k, v in selector.items())
    service = by_kind(docs, "Service")[0]["spec"]["selector"]
    assert not all(agent_labels.get(k) == v for k, v in service.items())


@pytest.mark.parametrize(("values", "message"), [
    (["--set", "nodeAgents.enabled=true"], "needs nodeAgents.nodes"),
    (["--set", "nodeAgents.nodes={Node_1}"], "/nodeAgents/nodes/0"),
    (["--set", "nodeAgents.replicas=2"], "additional properties 'replicas' not allowed"),
])
def test_bad_agent_values_fail_with_a_clear_message(values, message):
    out = helm("template", "grid", str(CHART), *values, ok=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
