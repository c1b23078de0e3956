"""Borrowed queries: the training questions of some sets, asked of another set's passages.

Only 129 TREC DL queries exist for training, and a cross-encoder learns their topics rather
than relevance. Questions from other training splits (WikiQA, TrecQA) asked of the same
MS MARCO passages give many more unlabelled (query, candidates) groups; a teacher then
scores them for distillation. The passage pool is the candidates of the given runs, so a
teacher that has encoded those passages once scores every borrowed question for the cost
of encoding the question.

    python -m crossrank.training.borrow --queries ../shared/data/wikiqa \\
        --passages ../shared/data/trec-dl22@30 --depth 30 --out work/dl-borrowed

writes a BEIR folder (corpus.jsonl, queries.jsonl, runs/train.bm25.trec; no qrels) that
``crossrank train --data`` and ``crossrank.training.teacher`` read like any other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crossrank.training.data import bm25_candidates, load_beir, parse_depth_spec, write_run


def borrow(
    query_sets: list[str], passage_sets: list[str], out: str | Path, depth: int = 30
) -> Path:
    """Write the borrowed-queries folder; specs are ``DIR[:split][@depth]`` (split: train)."""
    queries: dict[str, str] = {}
    for spec in query_sets:
        folder, split, _ = parse_depth_spec(spec)
        data = load_beir(folder, split)  # refuses test splits
        queries.update({f"{data.name}-{q}": t for q, t in data.queries.items() if q in data.qrels})
    pool: dict[str, str] = {}
    for spec in passage_sets:
        folder, split, pool_depth = parse_depth_spec(spec)
        data = load_beir(folder, split, depth=pool_depth)
        pool.update({d: data.corpus[d] for docs in data.run.values() for d in docs})
    run = bm25_candidates(pool, queries, depth)

    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc_id, text in pool.items():
            f.write(json.dumps({"_id": doc_id, "text": text}) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for query_id, text in queries.items():
            f.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    # BM25 rank as the score: the order is what a run carries
    ranked = {q: {d: float(depth - i) for i, d in enumerate(docs)} for q, docs in run.items()}
    write_run(ranked, out / "runs" / "train.bm25.trec", tag="bm25")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", action="append", required=True, help="DIR[:split]")
    parser.add_argument("--passages", action="append", required=True, help="DIR[:split][@depth]")
    parser.add_argument("--depth", type=int, default=30, help="BM25 candidates per question")
    parser.add_argument("--out", required=True, help="BEIR folder to write")
    args = parser.parse_args(argv)
    out = borrow(args.queries, args.passages, args.out, args.depth)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
