#!/usr/bin/env bash
# The benchmark workloads on a CUDA GPU, in one short run (about 3 minutes on an H100/H200):
# workloads A and B with the DL19 nDCG check (benchmarks/rerank_speed.py), then the
# long-context sweep (benchmarks/long_context.py) and the native long-document path with a
# 512-token query (benchmarks/native_long_documents.py), all on the GPU.
#
# Usage, from the repository root: bash benchmarks/gpu.sh [OUT_DIR]
#   PYTHON       interpreter (default: .venv/bin/python if present, else python3); it needs
#                torch with CUDA, sentence-transformers, transformers and crossrank's
#                dependencies; crossrank itself is read from src/
#   CROSSRANK_BENCH_DATA  folder holding trec-dl19/ (default: ../shared/data)
#   REPEATS      timed repeats per workload (default 5)
#   LENGTHS      long-context pair lengths (default "1024 2048 4096 8192")
set -uo pipefail  # no -e: a failing step must not stop the others
out=${1:-${OUT:-/tmp/crossrank-gpu}}
mkdir -p "$out"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
device=${DEVICE:-cuda}  # DEVICE=cpu only to try this script's logic on a machine without GPU
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt" \
  || true
"$PYTHON" benchmarks/rerank_speed.py --device "$device" --repeats "${REPEATS:-5}" \
  ${QUERIES:+--queries "$QUERIES"} ${NDCG_QUERIES:+--ndcg-queries "$NDCG_QUERIES"} \
  --json "$out/rerank_speed.json" 2>&1 | tee "$out/rerank_speed.log"
# shellcheck disable=SC2086
"$PYTHON" benchmarks/long_context.py --device "$device" --lengths ${LENGTHS:-1024 2048 4096 8192} \
  --json "$out/long_context.json" --plot "$out/long_context.png" 2>&1 \
  | tee "$out/long_context.log"
# the native long-document path: a 512-token query and 256 ... 8192 document tokens
"$PYTHON" benchmarks/native_long_documents.py --device "$device" \
  --json "$out/native_long_documents.json" 2>&1 | tee "$out/native_long_documents.log"
