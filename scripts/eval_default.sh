#!/usr/bin/env bash
# Evaluate the shipped default model against BM25 and the all-MiniLM-L6-v2 bi-encoder on the
# TEST splits (never used for training or checkpoint selection). Writes JSON to OUT_DIR.
#
#   scripts/eval_default.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-/tmp/crossrank-eval}
CR=${CROSSRANK:-.venv/bin/crossrank}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
for reranker in cross-encoder biencoder; do
    # TREC DL19: rerank the given BM25 top-100
    $CR eval "$DATA/trec-dl19" --first-stage run:bm25 --reranker $reranker --no-cache \
        --json "$OUT/dl19.$reranker.json"
    # WikiQA / TrecQA: rerank each question's own candidates (questions with both labels)
    $CR eval "$DATA/wikiqa" --first-stage run:bm25 --reranker $reranker --no-cache \
        --json "$OUT/wikiqa.$reranker.json"
    $CR eval "$DATA/trecqa" --first-stage run:bm25 --reranker $reranker --no-cache \
        --json "$OUT/trecqa.$reranker.json"
    # MS MARCO dev600 (the SELECTION set, reported beside the tests): rerank the given top-20
    $CR eval "$DATA/msmarco-dev600" --split dev --first-stage run:bm25 --top-k 20 \
        --reranker $reranker --no-cache --json "$OUT/dev600.$reranker.json"
    # SciFact: BM25 over the corpus, rerank the top 20 (top 100 = 30k long pairs: hours on 2 CPUs)
    $CR eval "$DATA/scifact" --first-stage bm25 --top-k 20 --max-length 256 \
        --reranker $reranker --no-cache --json "$OUT/scifact.$reranker.json"
done
# BM25 over each question's own candidates (the given WikiQA/TrecQA runs are not BM25)
$PY scripts/bm25_over_candidates.py "$DATA/wikiqa" > "$OUT/wikiqa.bm25.json"
$PY scripts/bm25_over_candidates.py "$DATA/trecqa" > "$OUT/trecqa.bm25.json"
