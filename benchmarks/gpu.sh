#!/usr/bin/env bash
# The benchmark workloads on a CUDA GPU, in one short run (a few minutes).
# Usage, from the repository root with the venv installed: bash benchmarks/gpu.sh [OUT_DIR]
set -euo pipefail
out=${1:-${OUT:-/tmp/crossrank-gpu}}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" benchmarks/rerank_speed.py --device cuda --repeats 5 --json "$out/rerank_speed.json" \
  2>&1 | tee "$out/rerank_speed.log"
"$py" benchmarks/long_context.py --device cuda --json "$out/long_context.json" \
  --plot "$out/long_context.png" 2>&1 | tee "$out/long_context.log"
