#!/usr/bin/env bash
# tp's e2e scenarios (intercept, VIF, eBPF) on a kind cluster made from images built on this machine
# (kind/README.md), as root on Debian 12. Installs what is missing (Debian's docker.io and mmdebstrap,
# npm dependencies), builds tp and its image, then `tp-kind up` (the lab's and kind's binaries, the
# images and the node image, each built only when missing; Docker started when none runs), runs the
# scenarios with the workstation in tp-kind's namespace, and always `tp-kind down`: the cluster and the
# workstation removed, Docker stopped if tp-kind started it, and a check that nothing of it is left.
#   bash test/e2e/kind/run.sh [FILTER...]   # default filters: e2e/intercept e2e/vif e2e/ebpf
#   TP_KIND_KEEP=1 bash test/e2e/kind/run.sh   # keep the cluster (and Docker) for a look; tp-kind down later
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
t0=$(date +%s)
phase() { echo "kind-e2e: $* ($(( $(date +%s) - t0 ))s)" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "kind-e2e: run as root (Docker, network namespaces): sudo bash $0" >&2
  exit 2
fi
missing=()
for p in docker.io mmdebstrap containerd runc iproute2 util-linux; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  phase "installing ${missing[*]}"
  apt-get update -qq
  # The package must not start Docker's system service (with its iptables rules): tp-kind starts its own
  # dockerd when none runs. A policy-rc.d that refuses service starts, for the install only.
  policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$policy" ] || rm -f "$policy"
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
phase "building tp and its image"
node build.mjs
node dist/image/main.js >/dev/null

keep=${TP_KIND_KEEP:-}
down() {
  local code=$?
  if [ "$keep" = 1 ]; then
    phase "TP_KIND_KEEP=1: the cluster stays (node dist/kind/main.js down removes it)"
  else
    phase "tp-kind down"
    node dist/kind/main.js down || code=1
  fi
  phase "done (exit $code)"
  exit "$code"
}
trap down EXIT

phase "tp-kind up"
kubeconfig=$(node dist/kind/main.js up)
phase "running the scenarios"
[ $# -gt 0 ] || set -- e2e/intercept e2e/vif e2e/ebpf
TP_E2E_KUBECONFIG=$kubeconfig \
  TP_E2E_KUBECTL="$(bash lab/build.sh)/kubectl" \
  TP_E2E_WORKSTATION="$(dirname "$kubeconfig")/workstation.json" \
  node test/run.mjs "$@"
