"""BM25 baseline for answer selection: rank each question's OWN candidates by BM25.

`crossrank eval --first-stage run:bm25` cannot give this number for WikiQA/TrecQA: their
run files hold the source's candidate order (in TrecQA it leaks the labels), not BM25
scores. This scores every candidate of every question with the same BM25 as the harness
(crossrank.retrieval.bm25: Lucene BM25, k1=0.9, b=0.4, stemmed, stop words removed;
IDF over the whole corpus file) and reports the harness's metrics under the same query
filter (questions with both a correct and a wrong candidate).

    .venv/bin/python scripts/bm25_over_candidates.py ../shared/data/wikiqa --split test
"""

from __future__ import annotations

import argparse
import json

from crossrank.evaluation.beir import load_dataset, read_run
from crossrank.evaluation.harness import select_queries
from crossrank.evaluation.metrics import convention_for, evaluate
from crossrank.retrieval.bm25 import BM25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--run", default="bm25", help="runs/<split>.NAME.trec: the candidates")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, args.split)
    convention = convention_for(dataset.name)
    select_queries(dataset, convention, None)
    candidates = read_run(dataset.run_path(args.run))
    doc_ids = list(dataset.corpus)
    bm25 = BM25([dataset.corpus[d] for d in doc_ids])
    query_ids = list(dataset.queries)
    positions, scores = bm25.search([dataset.queries[q] for q in query_ids], k=len(doc_ids))
    run = {}
    for row, query_id in enumerate(query_ids):
        score_of = {doc_ids[p]: float(s) for p, s in zip(positions[row], scores[row], strict=True)}
        # candidates sharing no term with the question score 0 (ties: ir-measures breaks them)
        run[query_id] = {d: score_of.get(d, 0.0) for d in candidates.get(query_id, {})}
    metrics = evaluate(run, dataset.qrels, convention.relevance_level)
    print(json.dumps({"dataset": dataset.name, "split": args.split, "queries": len(run),
                      "bm25_over_candidates": metrics}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
