#!/usr/bin/env bash
# tfgrid-operator on a real cluster: a kind cluster, the image, the Helm chart with its ServiceAccount, the
# examples in two namespaces, and a node agent per Node — then waits until every example object is Ready.
#
# Needs only kind, docker, kubectl and helm (the node agents and key generation run in the operator's image).
# NOT run by CI: where this project's CI runs there is no Docker engine, so CI tests the chart, the image's
# wheel and the manifests offline, and the operator against the strict API emulator over TLS instead.
#
#   bash scripts/kind-demo.sh            # create (or reuse) cluster "tfgrid" and run the demo
#   bash scripts/kind-demo.sh --delete   # delete the cluster and the node agents
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=tfgrid
IMAGE=tfgrid-operator:0.1.0
RELEASE=tfgrid
SYSTEM_NS=tfgrid-system
NAMESPACES=(grid-a grid-b)  # the examples go into grid-a; a second tenant deployment into grid-b
# node keys and the agents' kubeconfig outlive this script (the agents keep running): removed by --delete
WORK="${XDG_CACHE_HOME:-$HOME/.cache}/tfgrid-kind-demo"

for tool in kind docker kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-demo: '$tool' is not installed (needs kind, docker, kubectl, helm)" >&2; exit 1; }
done

agents() { docker ps -aq --filter "label=tfgrid-demo=node-agent"; }

if [[ "${1:-}" == "--delete" ]]; then
  ids=$(agents); [[ -n "$ids" ]] && docker rm -f $ids >/dev/null
  kind delete cluster --name "$CLUSTER"
  # the key files belong to the image's user (uid 10001): remove them from a container as that user
  [[ -d "$WORK" ]] && docker run --rm -v "$WORK:/keys" --entrypoint sh "$IMAGE" -c 'rm -f /keys/*' 2>/dev/null || true
  rm -rf "$WORK"
  exit 0
fi

step() { echo; echo "== $*"; }

step "cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config kind-config.yaml
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "image $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "keys: a council key, the twin alice's key, one key per node (generated in the image, kept in $WORK)"
mkdir -p "$WORK" && chmod 0777 "$WORK"  # the image runs as uid 10001
KEYGEN() { [[ -s "$WORK/$1.pub" ]] || docker run --rm -v "$WORK:/keys" "$IMAGE" keygen "/keys/$1.key" >"$WORK/$1.pub"; }
IN_IMAGE() { docker run --rm -v "$WORK:/keys" -v "$PWD/examples:/examples:ro" "$IMAGE" "$@"; }
for k in council alice node1 node2 node3; do KEYGEN "$k"; done
COUNCIL_KEY=$(tail -n1 "$WORK/council.pub")

step "chart (CRDs, least-privilege RBAC, the operator with its ServiceAccount)"
helm upgrade --install "$RELEASE" charts/tfgrid-operator -n "$SYSTEM_NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE#*:}" --set image.pullPolicy=Never \
  --set "operator.councilKeys={$COUNCIL_KEY}" --wait
kubectl -n "$SYSTEM_NS" rollout status "deployment/$RELEASE-tfgrid-operator" --timeout=180s
OP="kubectl -n $SYSTEM_NS exec deploy/$RELEASE-tfgrid-operator --"

step "ledger accounts: the twin alice, known by its key (the key itself stays in $WORK)"
OPI="kubectl -n $SYSTEM_NS exec -i deploy/$RELEASE-tfgrid-operator --"  # with the key on its standard input
docker run --rm -v "$WORK:/keys" --entrypoint cat "$IMAGE" /keys/alice.key | $OPI tfgrid-operator ledger create-account alice --key-file /dev/stdin >/dev/null || true
$OP tfgrid-operator ledger fund alice 5000

step "node keys (in the image) and the examples in ${NAMESPACES[*]}"
for ns in "${NAMESPACES[@]}"; do kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -; done
for ns in "${NAMESPACES[@]}"; do  # alice's grant: Deployments of this namespace may bill alice (payer.grantRef)
  IN_IMAGE grant --account alice --namespace "$ns" --key-file /keys/alice.key | kubectl -n "$ns" apply -f -
done
kubectl -n grid-a apply -f examples/farm.yaml -f examples/nodes.yaml -f examples/deployment.yaml
# the example proposal, signed by this demo's council key for the namespace it lives in
IN_IMAGE council sign /examples/proposal.yaml --namespace grid-a --key-file /keys/council.key | kubectl -n grid-a apply -f -
for n in node1 node2 node3; do
  kubectl -n grid-a patch gnode "$n" --type merge -p "{\"spec\":{\"publicKey\":\"$(tail -n1 "$WORK/$n.pub")\"}}"
done
kubectl -n grid-b apply -f - <<'EOF'
apiVersion: grid.threefold.io/v1alpha1
kind: Deployment
metadata: {name: tenant-b-web}
spec:
  resources: {cru: 1, mru: 2, sru: 20}
  payer: {account: alice, grantRef: {name: alice-grant}}
EOF

step "a node agent per Node (containers on kind's network, logging in with kind's kubeconfig)"
kind get kubeconfig --name "$CLUSTER" --internal >"$WORK/kubeconfig"
chmod 0644 "$WORK/kubeconfig"  # readable by the agents' uid; the keys are theirs already (0600)
ids=$(agents); [[ -n "$ids" ]] && docker rm -f $ids >/dev/null
for n in node1 node2 node3; do
  docker run -d --name "tfgrid-agent-$n" --label tfgrid-demo=node-agent --network kind \
    -v "$WORK/kubeconfig:/kube/config:ro" -v "$WORK/$n.key:/keys/$n.key:ro" -e KUBECONFIG=/kube/config \
    "$IMAGE" node-agent --node "$n" --namespace grid-a --key-file "/keys/$n.key" --interval 60 >/dev/null
done

step "the council certifies node2 (the farmer expects it certified; a Node's spec cannot certify itself)"
kubectl -n grid-a wait --for=jsonpath='{.status.nodeId}' gnode/node2 --timeout=300s
docker run --rm --network kind -v "$WORK/kubeconfig:/kube/config:ro" -v "$WORK/council.key:/keys/council.key:ro" \
  -e KUBECONFIG=/kube/config "$IMAGE" council certify --node node2 --namespace grid-a --key-file /keys/council.key

step "waiting for every example to be Ready"
kubectl get grid -A
kubectl -n grid-a wait --for=condition=Ready farm/freefarm gnode/node1 gnode/node2 gnode/node3 --timeout=300s
kubectl -n grid-a wait --for=condition=Ready gdeploy --all --timeout=300s
kubectl -n grid-b wait --for=condition=Ready gdeploy/tenant-b-web --timeout=300s
kubectl -n grid-a wait --for=condition=Ready gprop --all --timeout=120s
kubectl get grid -A
echo
echo "kind-demo: every example is Ready. The node agents run as docker containers labelled tfgrid-demo=node-agent;"
echo "           'bash scripts/kind-demo.sh --delete' removes them and the cluster."
