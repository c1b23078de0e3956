"""Which distillation teacher? Each source alone and their ensembles, on the dev sets only.

Reads teacher runs written by ``python -m crossrank.training.teacher`` (one folder per
bi-encoder) and each set's BM25 scores, then reranks every dev query's candidates with each
source alone and with weighted sums of per-query z-scored sources (z-scoring puts BM25 and
cosine scores on one scale). Reports nDCG@10 and MRR@10 per set, picks the source with the
best mean nDCG@10, and draws the table as a bar chart. Selection data only: test splits are
refused by the loader.

    python -m crossrank.training.teacher --model PATH --data DIR:dev@20 --out teacher/mpnet
    python scripts/teacher_choice.py --teacher mpnet=teacher/mpnet --teacher minilm=... \\
        --data ../shared/data/msmarco-dev600:dev@20 --data ../shared/data/trec-dl21:train@50 \\
        --plot docs/teacher_choice.png
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from crossrank.training.data import BeirSet, load_beir, parse_depth_spec, read_run_scores
from crossrank.training.train import dev_metrics, dev_queries

Scores = dict[str, dict[str, float]]  # query -> document -> score


def zscored(scores: Scores) -> Scores:
    """Per-query standardised scores (a query whose scores are all equal gets zeros)."""
    out = {}
    for query_id, docs in scores.items():
        values = np.array(list(docs.values()))
        spread = values.std() or 1.0
        out[query_id] = {d: (s - values.mean()) / spread for d, s in docs.items()}
    return out


def ensemble(sources: dict[str, Scores], weights: dict[str, float]) -> Scores:
    """``sum(weight * zscore)`` over the sources with a weight, on the documents all share."""
    used = {name: zscored(sources[name]) for name, w in weights.items() if w}
    run = {}
    for query_id in set.intersection(*(set(s) for s in used.values())):
        shared = set.intersection(*(set(s[query_id]) for s in used.values()))
        run[query_id] = {
            d: sum(weights[name] * s[query_id][d] for name, s in used.items()) for d in shared
        }
    return run


def candidate_weights(names: list[str]) -> list[dict[str, float]]:
    """Each source alone, every equal-weight pair and triple, and each bi-encoder with a
    light BM25 term (0.1-0.3 of its weight)."""
    mixes = []
    for size in range(1, len(names) + 1):
        for chosen in itertools.combinations(names, size):
            mixes.append({name: 1.0 for name in chosen})
    for name in names:
        if name != "bm25":
            mixes += [{name: 1.0, "bm25": w} for w in (0.1, 0.2, 0.3)]
    return mixes


def label(weights: dict[str, float]) -> str:
    return " + ".join(name if w == 1 else f"{w:g} {name}" for name, w in weights.items())


def restrict(scores: Scores, data: BeirSet) -> Scores:
    """The dev queries and candidates the trainer's own dev evaluation reranks."""
    return {
        q: {d: scores[q][d] for d in docs if d in scores.get(q, {})}
        for q, docs in dev_queries(data)
        if q in scores
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", action="append", required=True, help="NAME=FOLDER of runs")
    parser.add_argument("--data", action="append", required=True, help="DIR[:split][@depth]")
    parser.add_argument("--plot", help="bar chart of mean nDCG@10 per source (PNG)")
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args()
    teachers = dict(t.split("=", 1) for t in args.teacher)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for spec in args.data:
        folder, split, depth = parse_depth_spec(spec, "dev", 20)
        data = load_beir(folder, split, depth=depth)
        bm25 = read_run_scores(Path(folder) / "runs" / f"{split}.bm25.trec")
        sources = {"bm25": restrict(bm25, data)}
        for name, runs in teachers.items():
            sources[name] = restrict(
                read_run_scores(Path(runs) / f"{data.name}.{split}.trec"), data
            )
        for weights in candidate_weights(list(sources)):
            run = ensemble(sources, weights)
            table.setdefault(label(weights), {})[data.name] = dev_metrics(run, data)
    for row in table.values():
        row["mean nDCG@10"] = float(np.mean([m["ndcg@10"] for m in row.values()]))
    ranked = sorted(table.items(), key=lambda item: -item[1]["mean nDCG@10"])
    sets = [name for name in ranked[0][1] if name != "mean nDCG@10"]
    print(f"{'source':32s}" + "".join(f"{s:>28s}" for s in sets) + f"{'mean nDCG@10':>14s}")
    for name, row in ranked:
        cells = "".join(f"{row[s]['ndcg@10']:>14.4f}{row[s]['mrr@10']:>14.4f}" for s in sets)
        print(f"{name:32s}{cells}{row['mean nDCG@10']:>14.4f}")
    print(f"(per set: nDCG@10, MRR@10) best teacher on dev: {ranked[0][0]}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")
    if args.plot:
        plot(ranked, sets, Path(args.plot))


def plot(ranked: list, sets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _ in ranked][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.2))
    for i, s in enumerate(sets):
        values = [dict(ranked)[n][s]["ndcg@10"] for n in names]
        ax.barh(np.arange(len(names)) + 0.4 * i, values, height=0.4, label=s)
    ax.set_yticks(np.arange(len(names)) + 0.2, names, fontsize=7)
    ax.set_xlabel("nDCG@10 reranking the dev candidates")
    ax.set_xlim(left=0.4)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
