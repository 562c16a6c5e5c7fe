#!/usr/bin/env bash
# Runs tp's e2e scenarios against a kind cluster, on a host with Docker (the development machines have
# none; there `npm test` runs the same scenarios on the lab). Creates the cluster (or reuses it), builds
# tp and the scenario images, loads them into the cluster, installs the chart, runs test/e2e/.
#   bash test/e2e/kind/run.sh            # TP_KIND_KEEP=1 keeps the cluster afterwards
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cluster=${TP_KIND_CLUSTER:-tp-e2e}
tag=${TP_IMAGE_TAG:-e2e}

for tool in docker kind kubectl helm node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "kind-e2e: $tool is not installed; it is needed to run the scenarios on kind" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "kind-e2e: the Docker engine is not reachable (docker info failed); start it and run again" >&2; exit 2; }

if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  echo "kind-e2e: creating cluster $cluster" >&2
  kind create cluster --name "$cluster" --config "$here/kind-config.yaml" --wait 180s
fi
kubeconfig=$(mktemp)
cleanup() {
  rm -f "$kubeconfig"
  if [ "${TP_KIND_KEEP:-}" != 1 ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
kind get kubeconfig --name "$cluster" >"$kubeconfig"

echo "kind-e2e: building tp" >&2
(cd "$root" && npm ci --no-audit --no-fund && node build.mjs)

echo "kind-e2e: building and loading images" >&2
if [ -f "$root/Dockerfile" ]; then
  docker build -t "tp/tp:$tag" "$root"
else
  docker build -t "tp/tp:$tag" -f "$here/images/tp/Dockerfile" "$root"
fi
docker build -t "tp-e2e/echo:$tag" "$here/images/echo"
docker build -t "tp-e2e/shell:$tag" "$here/images/shell"
for image in "tp/tp:$tag" "tp-e2e/echo:$tag" "tp-e2e/shell:$tag"; do
  kind load docker-image "$image" --name "$cluster"
done

echo "kind-e2e: installing the chart" >&2
# Release name traffic-manager: the one `tp helm install|upgrade|uninstall` manages (the scenarios upgrade and uninstall it).
KUBECONFIG=$kubeconfig helm upgrade --install traffic-manager "$root/charts/tp" \
  --namespace tp-system --create-namespace \
  --set image.repository=tp/tp --set "image.tag=$tag" --set image.pullPolicy=Never \
  --wait --timeout 5m

echo "kind-e2e: running the scenarios" >&2
# The same files as on the lab; TP_E2E_KUBECONFIG points them at kind and the workstation is this host.
TP_E2E_KUBECONFIG=$kubeconfig \
  TP_E2E_IMAGE_ECHO="tp-e2e/echo:$tag" \
  TP_E2E_IMAGE_SHELL="tp-e2e/shell:$tag" \
  node "$root/test/run.mjs" /e2e/
