#!/usr/bin/env bash
# The main job: set up (first time only), then `flowmaps demo` on the embedded default (CPU, checkerboard).
# Extra arguments go to `flowmaps demo` (e.g. --out DIR, --fast).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/flowmaps demo "$@"
