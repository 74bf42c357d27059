#!/usr/bin/env bash
# The prepared GPU check (docs/benchmarks/gpu.md): on one GPU, in under 8 minutes,
#   1. images/s and peak memory at bf16 for FM, EDM, LSD, MeanFlow, LMD and LMM on the CIFAR-10-size UNet, with
#      torch.compile off and on (benchmarks/image_throughput.py; compiled rows stop after a time budget);
#   2. a short run of each on 32×32 digits: a finite, falling loss; sampling throughput at 1, 2 and 35 NFE
#      (benchmarks/gpu_runs.py);
#   3. a 2-process torchrun (NCCL) training on the one GPU, if NCCL allows two processes on one device (else the
#      script says so).
# Usage: bash benchmarks/gpu_check.sh [--cpu-smoke]     (output also in $GPU_CHECK_LOG, default /tmp/gpu_check.log)
# --cpu-smoke runs the same steps on the CPU with a tiny UNet, a few steps and torch.compile's eager backend (inductor
# builds C++ for a minute per graph on a CPU): a check of the script itself, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOG=${GPU_CHECK_LOG:-/tmp/gpu_check.log}
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ "${1:-}" = "--cpu-smoke" ]; then
  DEV=cpu; SMALL=--small; TP="--batch 4 --steps 2 --warmup 1 --budget 60 --compile-backend eager"; RUNS="--steps 6 --batch 8 --sample-batch 8 --sample-batches 1"
  TR="eval.every=0 train.steps=2 train.batch_size=4 model.channels=16 model.mult=[1,2] model.num_res_blocks=1 model.attn_resolutions=[16]"
else
  DEV=cuda; SMALL=; TP="--batch 128 --steps 10 --warmup 3 --budget 240"; RUNS="--steps 150 --batch 128"
  TR="eval.every=0 train.steps=20 train.batch_size=64"
fi
status=0
{
  echo "# flowmaps GPU check, $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD 2>/dev/null)"
  $PY -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  echo; echo "## 1. training throughput, bf16, compile off and on"
  SECONDS=0
  $PY benchmarks/image_throughput.py --device $DEV $SMALL $TP --compile off,on --out "$WORK/throughput" || status=1
  echo "(${SECONDS} s)"
  echo; echo "## 2. short runs and sampling throughput"
  SECONDS=0
  $PY benchmarks/gpu_runs.py --device $DEV $SMALL $RUNS --work "$WORK/runs" || status=1
  echo "(${SECONDS} s)"
  echo; echo "## 3. torchrun, 2 processes on one device"
  SECONDS=0
  if OMP_NUM_THREADS=1 $PY -m torch.distributed.run --standalone --nproc_per_node 2 -m flowmaps train \
       configs/cifar10_fm.yaml --out "$WORK/ddp" --quiet --device $DEV "data={kind: images, name: digits, size: 32}" \
       train.precision=bf16 $TR > "$WORK/ddp.log" 2>&1; then
    echo "2 processes trained $(tail -1 "$WORK/ddp/metrics.csv" | cut -d, -f1) steps: ok"
  else
    echo "2 processes on one device failed (NCCL may refuse two ranks on one GPU):"
    grep -E "flowmaps: error|NCCL|Error" "$WORK/ddp.log" | sort -u | tail -4
  fi
  echo "(${SECONDS} s)"
  exit $status
} 2>&1 | tee "$LOG"
