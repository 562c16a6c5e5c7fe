#!/usr/bin/env bash
# The README's main command: set up this machine (once), then run the narrated demo on the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
npm run demo -- "$@"
