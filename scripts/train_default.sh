#!/usr/bin/env bash
# Reproduce crossrank's default model (src/crossrank/default_model/) on a CPU machine.
#
#   scripts/train_default.sh [DATA_DIR] [WORK_DIR]
#
# DATA_DIR: the shared BEIR data (default ../shared/data); WORK_DIR: teacher scores and the
# training run (default /tmp/crossrank-default). Only training splits are read.
set -euo pipefail
START=$(date +%s)
DATA=${1:-../shared/data}
WORK=${2:-/tmp/crossrank-default}
PY=${PYTHON:-.venv/bin/python}
# One thread: on a shared 2-core machine, two OpenMP threads spin-wait and run 2-3x slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
MINILM=$($PY -c "from crossrank.engine.hub import all_minilm_l6_v2_path as p; print(p())")

# 1. Distillation teacher: all-MiniLM-L6-v2 bi-encoder scores (20 x cosine) for the TREC DL
#    candidate lists: all 100 BM25 candidates of DL21, the top 30 of (unlabelled) DL22.
#    Scores already in WORK_DIR are reused.
[ -s "$WORK/teacher/trec-dl21.train.trec" ] ||
$PY -m crossrank.training.teacher --model "$MINILM" --data "$DATA/trec-dl21" --split train \
    --depth 100 --max-length 256 --out "$WORK/teacher/trec-dl21.train.trec"
[ -s "$WORK/teacher/trec-dl22.train.trec" ] ||
$PY -m crossrank.training.teacher --model "$MINILM" --data "$DATA/trec-dl22" --split train \
    --depth 30 --max-length 160 --out "$WORK/teacher/trec-dl22.train.trec"

# 2. Fine-tune the cross-encoder in two phases (the same data, teacher and dev queries).
#    Phase 1: the first 110 steps of a 160-step schedule (peak lr 8e-5). At step 100 its dev
#    nDCG@10 was still rising fast while the schedule was already decaying, so phase 2
#    restarts the schedule from that checkpoint: up to 300 more steps at peak lr 1e-4
#    (--max-minutes 45 ends it earlier on a busy machine).
TRAIN=(
    --data "$DATA/trec-dl21@3,$DATA/trec-dl22@2,$DATA/wikiqa@2,$DATA/trecqa@1,$DATA/scifact@2"
    --teacher-runs "$WORK/teacher"
    --holdout trec-dl21=0.2 --holdout-seed 0
    --depth 100 --list-size 8 --groups-per-step 8 --micro-groups 2
    --max-length 128 --query-max-length 32 --dev-max-length 160
    --bce-weight 0.1 --distill-weight 1.0 --save-every 10 --bf16 --threads 1
)
$PY -m crossrank.cli train --base "$MINILM" "${TRAIN[@]}" \
    --steps 160 --stop-at 110 --lr 8e-5 --warmup 0.1 --eval-every 50 --seed 0 \
    --out "$WORK/run"
$PY -m crossrank.cli train --base "$WORK/run/checkpoint" "${TRAIN[@]}" \
    --steps 300 --lr 1e-4 --warmup 0.05 --eval-every 75 --max-minutes 45 --seed 1 \
    --save-dtype float16 --out "$WORK/run2"

# 3. Ship it: the best dev checkpoint (fp16 safetensors, config, tokenizer).
DEST=src/crossrank/default_model
mkdir -p "$DEST"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json \
         special_tokens_map.json vocab.txt; do
    cp "$WORK/run2/$f" "$DEST/$f"
done
echo "default model written to $DEST in $(( ($(date +%s) - START) / 60 )) minutes"
