#!/usr/bin/env bash
# Compiles tp's eBPF programs (bpf/*.bpf.c) into dist/bpf/*.bpf.o. build.mjs runs this script.
# Needs clang (BPF target) and the libbpf and kernel UAPI headers; fails with the Debian packages to install.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist/bpf
clang_bin=${CLANG:-clang}

missing=()
command -v "$clang_bin" >/dev/null 2>&1 || missing+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
[ -f /usr/include/linux/bpf.h ] || missing+=(linux-libc-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bpf/build.sh: cannot compile the eBPF capture program: missing ${missing[*]}." >&2
  echo "  Install them (Debian/Ubuntu): apt-get install -y clang llvm libbpf-dev linux-libc-dev" >&2
  exit 1
fi

# <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the multiarch include directory.
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch="$(uname -m)-linux-gnu"
if [ ! -f "/usr/include/$multiarch/asm/types.h" ] && [ ! -f /usr/include/asm/types.h ]; then
  echo "bpf/build.sh: <asm/types.h> not found (looked in /usr/include/$multiarch and /usr/include)." >&2
  echo "  Install it (Debian/Ubuntu): apt-get install -y linux-libc-dev" >&2
  exit 1
fi

mkdir -p "$out"
for src in bpf/*.bpf.c; do
  obj="$out/$(basename "${src%.c}").o"
  # Rebuild only when the source is newer than the object (the build runs on every `node build.mjs`).
  if [ -f "$obj" ] && [ "$obj" -nt "$src" ] && [ "$obj" -nt "$0" ]; then continue; fi
  if ! "$clang_bin" -O2 -g -target bpf -Wall -Werror -I"/usr/include/$multiarch" -c "$src" -o "$obj.tmp"; then
    rm -f "$obj.tmp"
    echo "bpf/build.sh: clang failed to compile $src (see above)." >&2
    exit 1
  fi
  mv "$obj.tmp" "$obj"
done
