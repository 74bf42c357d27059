#!/usr/bin/env bash
# Create or reuse ./.venv and install flowmaps into it (editable, with test tools).
# The CPU build of torch is pinned first so pip never pulls a multi-GB CUDA build on a CPU machine;
# set FLOWMAPS_TORCH to pick another (e.g. FLOWMAPS_TORCH="torch==2.14.1 torchvision==0.29.1" for images), and
# FLOWMAPS_EXTRAS to add optional extras (comma-separated, e.g. FLOWMAPS_EXTRAS=diffusers or images,diffusers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.flowmaps-installed
extras="test${FLOWMAPS_EXTRAS:+,$FLOWMAPS_EXTRAS}"
want="$(cat pyproject.toml) ${FLOWMAPS_TORCH:-torch==2.13.0} [$extras]"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q ${FLOWMAPS_TORCH:-torch==2.13.0}
  .venv/bin/python -m pip install -q -e ".[$extras]"
  printf '%s' "$want" > "$stamp"
fi
