"""The deployed first stage (LanceDB store: chunk vectors + native BM25, RRF) on a benchmark.

`crossrank eval --first-stage hybrid` measures bm25s + exact dense search over whole
documents; `crossrank search` runs over chunks in LanceDB. This script indexes a BEIR
corpus into a store, runs the store's hybrid search for every judged query, keeps each
document's best chunk, and prints the harness's metrics, so the two can be compared.

    python benchmarks/evaluation/store_first_stage.py ../shared/data/scifact --store /tmp/sf
"""

from __future__ import annotations

import argparse
import json
import time

from tqdm.auto import tqdm

from crossrank.evaluation.beir import corpus_file, load_dataset, read_jsonl
from crossrank.evaluation.metrics import convention_for, evaluate
from crossrank.retrieval.documents import Document
from crossrank.retrieval.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--store", required=True)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()

    dataset = load_dataset(args.dataset, args.split)
    documents = [
        Document(str(r["_id"]), r.get("text") or "", (r.get("title") or "").strip())
        for r in read_jsonl(corpus_file(dataset.path))
    ]
    store = Store(args.store)
    start = time.perf_counter()
    stats = store.index(documents, progress=True)
    print(f"indexed: {stats}; {len(store)} chunks; {time.perf_counter() - start:.0f} s")
    run = {}
    for query_id, text in tqdm(dataset.queries.items(), desc="searching", unit="query"):
        best: dict[str, float] = {}
        for candidate in store.search(text, args.candidates):  # best first
            best.setdefault(candidate.doc_id, candidate.fused_score)
        run[query_id] = best
    convention = convention_for(dataset.name)
    metrics = evaluate(run, dataset.qrels, convention.relevance_level)
    print(json.dumps({"store_first_stage": metrics}, indent=2))


if __name__ == "__main__":
    main()
