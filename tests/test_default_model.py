"""Regression check of the shipped default model on a DL19 slice.

The default model's quality figures (nDCG@10 on TREC DL19 and others) come from long runs;
this check takes a few seconds, so that a silent change of the model files, of the pair
encoding (template, token types, truncation) or of the model code shows up in ``make test``.

When a new default model ships, regenerate the recorded values and paste them over
DEFAULT_MODEL_DL19_SLICE below:

    .venv/bin/python tests/test_default_model.py [DATA_FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from crossrank import Reranker
from crossrank.evaluation.beir import load_dataset, read_run
from crossrank.evaluation.metrics import convention_for, evaluate

QUERIES = 5  # the first judged DL19 queries, by id
CANDIDATES = 20  # each query's BM25 top 20 (100 pairs: a few seconds on one core)

# Recorded with the default model shipped at the time (regenerate: see the module docstring).
# nDCG@10 of reranking the slice, and the raw logits of each query's BM25 top candidate.
DEFAULT_MODEL_DL19_SLICE = {
    "ndcg@10": 0.4478,
    "logits": {
        "1037798/3641634": -0.4145,
        "104861/459676": -0.9691,
        "1063750/4164404": -4.2665,
        "1103812/8220085": 0.252,
        "1106007/6126194": -0.1762,
    },
}
NDCG_TOLERANCE = 0.001  # float32 differences between CPUs cannot move it this far
LOGIT_TOLERANCE = 1e-3  # they move logits by about 1e-5


def measure(data: Path) -> dict:
    """nDCG@10 and top-candidate logits of the default model on the DL19 slice."""
    dataset = load_dataset(data / "trec-dl19", "test")
    bm25 = read_run(dataset.run_path("bm25"))
    reranker = Reranker(dtype="float32")  # the default format depends on the CPU
    run, logits = {}, {}
    for query in sorted(dataset.qrels)[:QUERIES]:
        candidates = sorted(bm25[query], key=lambda d: -bm25[query][d])[:CANDIDATES]
        texts = [dataset.corpus[d] for d in candidates]
        scores = reranker.score(dataset.queries[query], texts, raw=True)
        run[query] = dict(zip(candidates, scores, strict=True))
        logits[f"{query}/{candidates[0]}"] = round(scores[0], 4)
    qrels = {query: dataset.qrels[query] for query in run}
    level = convention_for("trec-dl19").relevance_level
    ndcg = evaluate(run, qrels, level)["nDCG@10"]
    return {"ndcg@10": round(ndcg, 4), "logits": logits}


def test_default_model_on_a_dl19_slice_matches_the_recorded_values(data_dir):
    measured = measure(data_dir)
    hint = "a different default model or pair encoding? see this module's docstring"
    assert measured["logits"] == pytest.approx(
        DEFAULT_MODEL_DL19_SLICE["logits"], abs=LOGIT_TOLERANCE
    ), hint
    assert measured["ndcg@10"] == pytest.approx(
        DEFAULT_MODEL_DL19_SLICE["ndcg@10"], abs=NDCG_TOLERANCE
    ), hint


if __name__ == "__main__":
    from conftest import DATA

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
    values = measure(folder)
    print("DEFAULT_MODEL_DL19_SLICE = {")
    print(f'    "ndcg@10": {values["ndcg@10"]},')
    print('    "logits": {')
    for pair, logit in values["logits"].items():
        print(f'        "{pair}": {logit},')
    print("    },\n}")
