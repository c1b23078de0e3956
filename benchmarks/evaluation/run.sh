#!/usr/bin/env bash
# Full-set evaluations recorded in docs/evaluation.md. Run from the repository root:
#   bash benchmarks/evaluation/run.sh [MODEL]
# Without MODEL only first stages and the bi-encoder baseline run (no cross-encoder).
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=benchmarks/evaluation
eval_() { name=$1; shift; crossrank eval "$@" --json "$OUT/$name.json" --plot "$OUT/$name.png"; }

# Sanity against published first-stage numbers
eval_ scifact-bm25 "$DATA/scifact" --first-stage bm25 --no-rerank
eval_ scifact-dense "$DATA/scifact" --first-stage dense --no-rerank
eval_ dl19-bm25 "$DATA/trec-dl19" --first-stage run:bm25 --no-rerank

# The all-MiniLM-L6-v2 bi-encoder rescoring the same candidate lists (the no-cross-encoder baseline)
eval_ dl19-biencoder "$DATA/trec-dl19" --first-stage run:bm25 --reranker biencoder
eval_ wikiqa-biencoder "$DATA/wikiqa" --first-stage run:bm25 --reranker biencoder
eval_ trecqa-biencoder "$DATA/trecqa" --first-stage run:bm25 --reranker biencoder

# LoCo-style long documents: whole meeting transcripts, first window vs best window
eval_ qmsum-bm25-biencoder "$DATA/qmsum" --top-k 100 --reranker biencoder --long-documents both

if [[ $# -ge 1 ]]; then
  MODEL=$1
  eval_ dl19-rerank "$DATA/trec-dl19" --first-stage run:bm25 --model "$MODEL"
  eval_ scifact-rerank "$DATA/scifact" --first-stage bm25 --model "$MODEL"
  eval_ wikiqa-rerank "$DATA/wikiqa" --first-stage run:bm25 --model "$MODEL"
  eval_ trecqa-rerank "$DATA/trecqa" --first-stage run:bm25 --model "$MODEL"
  eval_ qmsum-rerank "$DATA/qmsum" --top-k 20 --model "$MODEL" --long-documents both
fi
