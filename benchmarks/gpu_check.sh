#!/usr/bin/env bash
# The course on a CUDA GPU: every solution notebook (wall time, peak GPU memory), then one class graded
# with --jobs 8 on one GPU with a per-kernel memory share. Prints one table and writes
# benchmarks/results/gpu_check.{json,md}. On a machine without a CUDA GPU it says "no GPU" and exits 0.
#   bash benchmarks/gpu_check.sh [--assignment 05_rlhf] [--students 16] [--jobs 8] [--skip-notebooks]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no GPU: nvidia-smi finds no CUDA device here; nothing was measured."
  exit 0
fi
exec "$PY" benchmarks/gpu_check.py "$@"
