#!/usr/bin/env bash
# Create or reuse ./.venv and install flowmaps into it (editable, with the test tools and, without its declared
# dependencies, the bench extra: torchcfm, the peer of benchmarks/peers.py).
# The CPU build of torch is pinned first so pip never pulls a multi-GB CUDA build on a CPU machine.
#   FLOWMAPS_EXTRAS=images,diffusers   optional extras to install too (comma-separated; see pyproject.toml)
#   FLOWMAPS_TORCH="torch==… …"        another torch build; the `images` extra needs a torchvision that imports,
#                                       which here is FLOWMAPS_TORCH="torch==2.14.1 torchvision==0.29.1" (a CUDA
#                                       build that also runs on the CPU; the default when `images` is asked for)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras="test${FLOWMAPS_EXTRAS:+,${FLOWMAPS_EXTRAS}}"
case ",${FLOWMAPS_EXTRAS:-}," in
  *,images,*) torch=${FLOWMAPS_TORCH:-"torch==2.14.1 torchvision==0.29.1"} ;;
  *) torch=${FLOWMAPS_TORCH:-torch==2.13.0} ;;
esac
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.flowmaps-installed
want="$(cat pyproject.toml) ${torch} [${extras}]"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q ${torch}
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  .venv/bin/python -m pip install -q --no-deps "torchcfm==1.0.7"   # the bench extra (pyproject.toml), no deps
  printf '%s' "$want" > "$stamp"
fi
