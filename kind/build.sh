#!/usr/bin/env bash
# Builds kind's own Go binaries from the Go module proxy into a cache outside the repo: the kind CLI and
# the local-path-provisioner (the node image's storage provisioner). The Kubernetes binaries come from
# the lab's build (lab/build.sh). Cold: ~2 minutes on 2 cores; warm: nothing to do.
# Prints the bin directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${TP_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tp-kind}
kind=$(awk '/^require sigs.k8s.io\/kind /{print $3}' "$here/go/kind/go.mod")
lpp=$(awk '/^require github.com\/rancher/{print $3}' "$here/go/local-path/go.mod")
bin="$cache/kind-$kind-local-path-$lpp/bin"

if ! command -v go >/dev/null 2>&1; then
  echo "tp-kind: Go is not installed; kind is built from the Go module proxy. Install Go 1.24 or newer (apt-get install golang-go, or go.dev/dl) and run again." >&2
  exit 3
fi
mkdir -p "$bin"
exec 9>"$bin/.build.lock"
flock 9
targets=(
  "kind kind sigs.k8s.io/kind -X=sigs.k8s.io/kind/pkg/internal/version.gitCommit=$kind"
  "local-path local-path-provisioner github.com/rancher/local-path-provisioner -X=main.VERSION=$lpp"
)
for t in "${targets[@]}"; do
  read -r mod name pkg ldx <<<"$t"
  if [ -x "$bin/$name" ]; then continue; fi
  echo "tp-kind: building $name from the Go module proxy..." >&2
  start=$(date +%s)
  if ! (cd "$here/go/$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldx" -o "$bin/$name.tmp" "$pkg") >"$bin/$name.log" 2>&1; then
    echo "tp-kind: building $name failed; the last lines of $bin/$name.log:" >&2
    tail -n 15 "$bin/$name.log" >&2
    exit 4
  fi
  mv "$bin/$name.tmp" "$bin/$name"
  echo "tp-kind: built $name in $(( $(date +%s) - start ))s" >&2
done
echo "$bin"
