"""A distillation teacher reranking a TEST split: the ceiling the default model is held to.

The teacher module refuses test splits (it writes training signal), so this separate
script reports, for the record only, how well a teacher (any mean-pooling
sentence-transformers folder, e.g. all-mpnet-base-v2) reranks a dataset's first-stage
run. Nothing it prints may feed back into training choices.

    .venv/bin/python scripts/teacher_on_test.py ../shared/data/trec-dl19 \\
        --model /tmp/crossrank-default/all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from crossrank.evaluation.beir import load_dataset, read_run
from crossrank.evaluation.harness import select_queries
from crossrank.evaluation.metrics import convention_for, evaluate
from crossrank.training.teacher import BiEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--model", required=True, help="sentence-transformers folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--run", default="bm25", help="runs/<split>.NAME.trec: the candidates")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, args.split)
    convention = convention_for(dataset.name)
    select_queries(dataset, convention, None)
    candidates = read_run(dataset.run_path(args.run))
    teacher = BiEncoder(args.model, max_length=args.max_length, bf16=True)
    run = {}
    for query_id in tqdm(sorted(dataset.qrels), desc="teacher", unit="query"):
        ranked = sorted(candidates.get(query_id, {}), key=lambda d: -candidates[query_id][d])
        ids = ranked[: args.depth]
        vectors = teacher.encode(
            [dataset.queries[query_id], *(dataset.corpus[d] for d in ids)], progress=False
        )
        run[query_id] = dict(zip(ids, (vectors[1:] @ vectors[0]).tolist(), strict=True))
    metrics = evaluate(run, dataset.qrels, convention.relevance_level)
    report = {"dataset": dataset.name, "split": args.split, "model": args.model}
    report |= {"depth": args.depth, "queries": len(run), "teacher": metrics}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
