#!/usr/bin/env bash
# Intercept throughput vs a chain of plain TCP relays with the same hops. Build first: node build.mjs
set -euo pipefail
cd "$(dirname "$0")/.."
exec node dist/bench/intercept-throughput.js "$@"
