#!/usr/bin/env bash
# Builds the lab's binaries from the Go module proxy into a cache outside the repo: the Kubernetes
# control plane, the kubelet, kubeadm (for the kind node image, kind/), kubectl, etcd, helm, CoreDNS, crictl and the CNI plugins (bridge,
# host-local, loopback, portmap; in bin/cni/). Cold: 15-25 minutes on 2 cores; warm: nothing to do.
# Prints the bin directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${TP_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tp-lab}
k8s=$(awk '/^require k8s.io\/kubernetes/{print $3}' "$here/k8s/go.mod")
etcd=$(awk '/^require go.etcd.io/{print $3}' "$here/etcd/go.mod")
helm=$(awk '/^require helm.sh/{print $3}' "$here/helm/go.mod")
coredns=$(awk '/^require github.com\/coredns/{print $3}' "$here/coredns/go.mod")
cni=$(awk '/^require github.com\/containernetworking/{print $3}' "$here/cni/go.mod")
cri=$(awk '/^require sigs.k8s.io\/cri-tools/{print $3}' "$here/cri/go.mod")
bin="$cache/k8s-$k8s-etcd-$etcd-helm-$helm-coredns-$coredns-cni-$cni-cri-$cri/bin"

if ! command -v go >/dev/null 2>&1; then
  echo "tp-lab: Go is not installed; the lab builds Kubernetes from the Go module proxy. Install Go 1.24 or newer (apt-get install golang-go, or go.dev/dl) and run again." >&2
  exit 3
fi
mkdir -p "$bin/cni"
# One build at a time per cache: a second `tp-lab up` waits for the first instead of compiling again.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$bin/.build.lock"
  if ! flock -n 9; then
    echo "tp-lab: another build of the lab's binaries is running; waiting for it..." >&2
    flock 9
  fi
fi
minor=${k8s#v1.}; minor=${minor%%.*}
ldk8s="-s -w -X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$k8s"
targets=(
  "k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver"
  "k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager"
  "k8s kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler"
  "k8s kube-proxy k8s.io/kubernetes/cmd/kube-proxy"
  "k8s kubectl k8s.io/kubernetes/cmd/kubectl"
  "k8s kubelet k8s.io/kubernetes/cmd/kubelet"
  "k8s kubeadm k8s.io/kubernetes/cmd/kubeadm"
  "etcd etcd go.etcd.io/etcd/server/v3"
  "helm helm helm.sh/helm/v3/cmd/helm"
  "coredns coredns github.com/coredns/coredns"
  "cri crictl sigs.k8s.io/cri-tools/cmd/crictl"
  "cni cni/bridge github.com/containernetworking/plugins/plugins/main/bridge"
  "cni cni/host-local github.com/containernetworking/plugins/plugins/ipam/host-local"
  "cni cni/loopback github.com/containernetworking/plugins/plugins/main/loopback"
  "cni cni/portmap github.com/containernetworking/plugins/plugins/meta/portmap"
)
total=${#targets[@]} n=0
for t in "${targets[@]}"; do
  read -r mod name pkg <<<"$t"
  n=$((n + 1))
  if [ -x "$bin/$name" ]; then continue; fi
  flags="-s -w"
  [ "$mod" = k8s ] && flags=$ldk8s
  [ "$mod" = cri ] && flags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$cri"
  echo "tp-lab: building $name ($n/$total) from the Go module proxy..." >&2
  start=$(date +%s)
  # Progress while go works: a line every 30 s so a cold build never looks hung.
  ( while sleep 30; do echo "tp-lab:   still building $name ($(( $(date +%s) - start ))s)" >&2; done ) & ticker=$!
  if ! (cd "$here/$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$bin/$name.tmp" "$pkg") >"$bin/$name.log" 2>&1; then
    kill "$ticker" 2>/dev/null || true
    echo "tp-lab: building $name failed; the last lines of $bin/$name.log:" >&2
    tail -n 15 "$bin/$name.log" >&2
    if grep -qiE 'proxy|dial tcp|no such host|i/o timeout|connection refused' "$bin/$name.log"; then
      echo "tp-lab: the Go module proxy ($(go env GOPROXY)) could not be reached; check the network or GOPROXY and run again." >&2
    fi
    exit 4
  fi
  kill "$ticker" 2>/dev/null || true
  mv "$bin/$name.tmp" "$bin/$name"
  echo "tp-lab: built $name in $(( $(date +%s) - start ))s" >&2
done
echo "$bin"
