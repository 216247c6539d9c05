#!/usr/bin/env bash
# End-to-end check of the injection webhook on a throwaway kind or minikube cluster.
#
# NOT run by `make test`: it needs docker, kind or minikube, and kubectl, none of which exist
# in the sandbox where the suite runs. Run it on a workstation:
#
#   hack/e2e/cluster.sh                 # kind (default)
#   PROVIDER=minikube hack/e2e/cluster.sh
#   KEEP=1 hack/e2e/cluster.sh          # leave the cluster up afterwards
#
# What it proves, in order: the kustomize base applies; both replicas agree on one CA and the
# caBundle is patched in; a labelled namespace gets pilotfish-init, the env and the probe
# rewrite; the agent tree is on the app's sys.path; /readiness on :55199 answers;
# opt-out, kube-system and server-side dry-run behave as docs/injection.md says.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROVIDER=${PROVIDER:-kind}
CLUSTER=${CLUSTER:-pilotfish-e2e}
VERSION=${VERSION:-0.1.0}
WEBHOOK_IMAGE=ghcr.io/pilotfish/webhook:$VERSION
AGENT_IMAGE=ghcr.io/pilotfish/agent:$VERSION
SHOP_IMAGE=pilotfish-e2e/shop:dev

log() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
  if [[ "${KEEP:-0}" != 1 ]]; then
    case "$PROVIDER" in
      kind) kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true ;;
      minikube) minikube delete -p "$CLUSTER" >/dev/null 2>&1 || true ;;
    esac
  fi
}
trap cleanup EXIT

for tool in docker kubectl "$PROVIDER"; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done

log "building images"
make -C "$ROOT" agent-tree
docker build -q -f "$ROOT/deploy/docker/webhook.Dockerfile" -t "$WEBHOOK_IMAGE" "$ROOT"
docker build -q -f "$ROOT/deploy/docker/agent.Dockerfile" -t "$AGENT_IMAGE" "$ROOT"
docker build -q -t "$SHOP_IMAGE" -f - "$ROOT/hack/demo" <<'DOCKERFILE'
FROM python:3.12-slim
RUN pip install --no-cache-dir flask gunicorn
COPY shop.py /app/shop.py
WORKDIR /app
USER 10001
CMD ["gunicorn", "-b", "0.0.0.0:8080", "-w", "2", "shop:app"]
DOCKERFILE

log "creating the $PROVIDER cluster $CLUSTER"
case "$PROVIDER" in
  kind)
    kind create cluster --name "$CLUSTER" --wait 120s
    for image in "$WEBHOOK_IMAGE" "$AGENT_IMAGE" "$SHOP_IMAGE"; do kind load docker-image --name "$CLUSTER" "$image"; done
    ;;
  minikube)
    minikube start -p "$CLUSTER" --wait=all
    for image in "$WEBHOOK_IMAGE" "$AGENT_IMAGE" "$SHOP_IMAGE"; do minikube -p "$CLUSTER" image load "$image"; done
    ;;
  *) fail "PROVIDER must be kind or minikube" ;;
esac

log "installing deploy/base"
kubectl apply -k "$ROOT/deploy/base"
kubectl -n pilotfish-system rollout status deployment/pilotfish --timeout=180s
for _ in $(seq 60); do
  bundle=$(kubectl get mutatingwebhookconfiguration pilotfish -o jsonpath='{.webhooks[*].clientConfig.caBundle}')
  [[ $(wc -w <<<"$bundle") == 2 ]] && break
  sleep 2
done
[[ $(wc -w <<<"$bundle") == 2 ]] || fail "caBundle was not patched into both webhooks"
secret_ca=$(kubectl -n pilotfish-system get secret pilotfish-webhook-tls -o jsonpath='{.data.ca-bundle\.crt}')
[[ "$bundle" == "$secret_ca $secret_ca" ]] || fail "caBundle differs from the shared Secret"

log "injecting a labelled namespace"
kubectl create namespace shop
kubectl label namespace shop pilotfish.io/inject=enabled
kubectl -n shop apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop, pilotfish.io/tag: gray}}
    spec:
      containers:
        - name: shop
          image: $SHOP_IMAGE
          imagePullPolicy: Never
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: http}}
YAML
kubectl -n shop rollout status deployment/shop --timeout=180s
pod=$(kubectl -n shop get pod -l app=shop -o jsonpath='{.items[0].metadata.name}')
status=$(kubectl -n shop get pod "$pod" -o jsonpath='{.metadata.annotations.pilotfish\.io/status}')
echo "pilotfish.io/status: $status"
grep -q '"containers":\["shop"\]' <<<"$status" || fail "shop was not injected"
[[ $(kubectl -n shop get pod "$pod" -o jsonpath='{.spec.initContainers[0].name}') == pilotfish-init ]] \
  || fail "pilotfish-init is not the first init container"
probe=$(kubectl -n shop get pod "$pod" -o jsonpath='{.spec.containers[0].readinessProbe.httpGet.port}')
[[ "$probe" == 55199 ]] || fail "readiness probe not rewritten (port $probe)"
kubectl -n shop exec "$pod" -c shop -- python -c '
import json, os, sys, urllib.request
assert "/pilotfish/bootstrap" in sys.path, "the agent tree is not on sys.path"
assert json.loads(os.environ["PILOTFISH_APP_PROBE"])["httpGet"]["port"] == 8080
assert os.environ["PILOTFISH_TAG"] == "gray" and os.environ["PILOTFISH_APP"] == "shop"
print(urllib.request.urlopen("http://127.0.0.1:55199/readiness", timeout=5).status)
' || fail "agent checks inside the pod"

log "opt-out, kube-system and server-side dry-run"
kubectl -n shop run optout --image="$SHOP_IMAGE" --image-pull-policy=Never -l pilotfish.io/inject=false
[[ -z $(kubectl -n shop get pod optout -o jsonpath='{.metadata.annotations.pilotfish\.io/status}') ]] \
  || fail "opted-out pod was touched"
kubectl -n kube-system run not-here --image="$SHOP_IMAGE" --image-pull-policy=Never -l pilotfish.io/inject=true \
  --dry-run=server -o jsonpath='{.spec.initContainers}' | grep -q pilotfish-init && fail "kube-system was injected"
kubectl -n shop run dry --image="$SHOP_IMAGE" --dry-run=server -o jsonpath='{.spec.initContainers[0].name}' \
  | grep -q pilotfish-init || fail "dry-run did not show the injection"

log "webhook down: pods are still admitted (failurePolicy Ignore)"
kubectl -n pilotfish-system scale deployment/pilotfish --replicas=0
kubectl -n shop rollout restart deployment/shop
kubectl -n shop rollout status deployment/shop --timeout=180s
kubectl -n pilotfish-system scale deployment/pilotfish --replicas=2

log "all e2e checks passed"
