#!/usr/bin/env bash
# Agent passthrough vs the app directly (wrk). Build first: node build.mjs
set -euo pipefail
cd "$(dirname "$0")/.."
exec node dist/bench/passthrough.js "$@"
