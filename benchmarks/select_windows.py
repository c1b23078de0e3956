"""Choose select mode's defaults on dev splits: which cheap scorer picks windows, and how many.

For each (query, candidate) pair of a dev split it cross-encodes EVERY window once (what
``long_documents="chunk"`` reads), then derives what select mode would give for each
window ranker and each ``max_windows`` m: the document's score is the best cross-encoder
score among the m windows that ranker puts first. A window's logit does not depend on
which other windows are scored with it, so this equals running select mode per (ranker,
m) without paying for the cross-encoder again (tests/engine/test_select.py checks that
select mode with m >= windows equals chunk mode exactly).

Window rankers: ``bm25`` (crossrank's: BM25 over the token ids of the document's
windows), ``bm25s`` (bm25s over the windows' decoded text, stemmed, English stop words),
``biencoder`` (cosine of all-MiniLM-L6-v2 embeddings of query and window), ``first``
(the first m windows, what a plain cap on chunks gives) and ``first+bm25`` (the first
window, where titles, abstracts and call introductions are, then BM25's best others). The
time each ranker takes is reported too.

    python benchmarks/select_windows.py ../shared/data --sets ectsum:val:5 qmsum:val:3 \\
        scitldr:dev:10 --top-k 5 --max-length 256 --biencoder-sets ectsum --json out.json

Never run it on a test split: it exists to pick defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from crossrank import Reranker
from crossrank.engine.tokenization import rank_windows, window_starts
from crossrank.evaluation.beir import load_dataset
from crossrank.evaluation.harness import select_queries
from crossrank.evaluation.metrics import convention_for, evaluate
from crossrank.evaluation.rerank import top_docs
from crossrank.retrieval.bm25 import BM25, bm25_run
from crossrank.retrieval.embeddings import Embedder

WINDOW_COUNTS = (1, 2, 3, 4, 6, 8)
# m growing with the document: max(3, ceil(fraction * windows)), written "m=10%" and so on
WINDOW_FRACTIONS = (0.1, 0.2)
CLS, SEP = 101, 102  # all-MiniLM-L6-v2's (the bi-encoder and the default model share a vocab)


def pair_windows(reranker: Reranker, query: str, document: str):
    """(window token ids, model inputs) of every window of one pair, as chunk mode makes them."""
    encoder = reranker.encoder
    query_encoding = encoder.encode_query(query)
    template = encoder.template(query, query_encoding)
    budget = encoder.document_budget(template)
    [ids] = encoder.document_ids([document])
    overlap = encoder.window_overlap(budget)
    starts = list(window_starts(len(ids), budget, overlap))
    windows = [ids[s : s + budget] for s in starts]
    features = [template.pair(w.tolist(), 0) for w in windows]
    return query_encoding.ids, ids, budget, overlap, windows, features


def rank_by_bm25s(query: str, texts: list[str]) -> np.ndarray:
    """bm25s (stemmed words, English stop words) over the windows' decoded text."""
    try:
        positions, _ = BM25(texts, k1=1.2, b=0.75).search([query], len(texts))
    except (ValueError, IndexError):  # a query of stop words only: keep document order
        return np.arange(len(texts))
    return np.asarray(positions[0])


def measure_set(reranker, embedder, data_dir, name, split, queries, top_k):
    dataset = load_dataset(Path(data_dir) / name, split)
    convention = convention_for(dataset.name)
    select_queries(dataset, convention, queries)
    run = bm25_run(dataset.corpus, dataset.queries, max(top_k, 100))
    rankers = {"bm25": [], "bm25s": [], "biencoder": [], "first": [], "first+bm25": []}
    seconds = dict.fromkeys(rankers, 0.0)
    pairs, cross_seconds = [], 0.0
    window_vectors: dict[tuple[str, int], np.ndarray] = {}
    slots = [(q, d) for q in dataset.queries for d in top_docs(run[q], top_k)]
    for query_id, doc in tqdm(slots, desc=f"{name} {split}", unit="pair"):
        query = dataset.queries[query_id]
        query_ids, ids, budget, overlap, windows, features = pair_windows(
            reranker, query, dataset.corpus[doc]
        )
        start = time.perf_counter()
        logits = reranker.logits(features)
        cross_seconds += time.perf_counter() - start
        texts = [reranker.encoder.tokenizer.decode(w.tolist()) for w in windows]
        start = time.perf_counter()
        rankers["bm25"].append(rank_windows(query_ids, ids, budget, overlap))
        seconds["bm25"] += time.perf_counter() - start
        start = time.perf_counter()
        rankers["bm25s"].append(rank_by_bm25s(query, texts) if len(texts) > 1 else np.zeros(1, int))
        seconds["bm25s"] += time.perf_counter() - start
        rankers["first"].append(np.arange(len(windows)))
        bm25_order = rankers["bm25"][-1]
        rankers["first+bm25"].append(np.concatenate([[0], bm25_order[bm25_order != 0]]))
        pairs.append((query_id, doc, logits, [len(f) for f in features]))
        if embedder is None:
            continue
        start = time.perf_counter()
        key = (doc, budget)  # a document's window vectors serve every query of its budget
        if key not in window_vectors:
            window_vectors[key] = embedder.encode_ids(
                [[CLS, *w.tolist()[: embedder.max_length - 2], SEP] for w in windows]
            )
        vectors = window_vectors[key]
        query_vector = embedder.encode([query])[0]
        rankers["biencoder"].append(np.argsort(-(vectors @ query_vector), kind="stable"))
        seconds["biencoder"] += time.perf_counter() - start
    rows = []
    level = convention.relevance_level

    def reranked(choose):
        out, tokens = {q: {} for q in run}, 0
        for i, (query_id, doc, logits, lengths) in enumerate(pairs):
            chosen = choose(i, len(logits))
            out[query_id][doc] = float(np.max(logits[chosen]))
            tokens += int(np.sum(np.asarray(lengths)[chosen]))
        for query_id, scores in run.items():  # the tail keeps its first-stage order below
            floor = min(out[query_id].values())
            for position, doc in enumerate(top_docs(scores)[top_k:], 1):
                out[query_id][doc] = floor - position
        return evaluate(out, dataset.qrels, level)["nDCG@10"], tokens

    for label, choose in (("truncate", lambda i, n: [0]), ("chunk", lambda i, n: list(range(n)))):
        ndcg, tokens = reranked(choose)
        rows.append({"mode": label, "ranker": "-", "m": None, "ndcg@10": ndcg, "tokens": tokens})
    for ranker, orders in rankers.items():
        if not orders:  # the bi-encoder, when not measured on this set
            continue
        for m in WINDOW_COUNTS:
            ndcg, tokens = reranked(lambda i, n, o=orders, m=m: list(o[i][:m]))
            rows.append(
                {"mode": "select", "ranker": ranker, "m": m, "ndcg@10": ndcg, "tokens": tokens}
            )
        for fraction in WINDOW_FRACTIONS:
            ndcg, tokens = reranked(
                lambda i, n, o=orders, f=fraction: list(o[i][: max(3, math.ceil(f * n))])
            )
            m = f"{fraction:.0%}"
            rows.append(
                {"mode": "select", "ranker": ranker, "m": m, "ndcg@10": ndcg, "tokens": tokens}
            )
    first_stage = evaluate(run, dataset.qrels, level)["nDCG@10"]
    return {
        "set": name,
        "split": split,
        "queries": len(dataset.queries),
        "pairs": len(pairs),
        "windows": int(sum(len(p[2]) for p in pairs)),
        "bm25_first_stage": first_stage,
        "cross_encoder_seconds_all_windows": cross_seconds,
        "ranker_seconds": seconds,
        "rows": rows,
    }


def print_set(result: dict) -> None:
    print(
        f"\n{result['set']} {result['split']}: {result['queries']} queries, "
        f"{result['pairs']} pairs, {result['windows']} windows; BM25 first stage nDCG@10 "
        f"{result['bm25_first_stage']:.4f}; all windows cross-encoded in "
        f"{result['cross_encoder_seconds_all_windows']:.0f} s"
    )
    print(
        "ranker seconds (all pairs): "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["ranker_seconds"].items())
    )
    print(f"{'mode':<9}{'ranker':<11}{'m':>4}{'nDCG@10':>9}{'tokens':>10}")
    for row in result["rows"]:
        m = "-" if row["m"] is None else row["m"]
        print(f"{row['mode']:<9}{row['ranker']:<11}{m:>4}{row['ndcg@10']:>9.4f}{row['tokens']:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir")
    parser.add_argument("--sets", nargs="+", required=True, help="NAME:SPLIT:QUERIES")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--biencoder-sets",
        nargs="*",
        default=["scitldr", "ectsum"],
        help="sets on which to measure the bi-encoder window ranker (it costs about as much "
        "as cross-encoding every window once per document)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("crossrank.engine.tokenization").setLevel(logging.ERROR)  # capped queries
    reranker = Reranker(max_length=args.max_length, long_documents="chunk")
    embedder = Embedder()
    results = []
    for spec in args.sets:
        name, split, queries = spec.split(":")
        if split == "test":
            raise SystemExit("select_windows.py picks defaults: use a training or dev split")
        bi = embedder if name in args.biencoder_sets else None
        results.append(
            measure_set(reranker, bi, args.data_dir, name, split, int(queries), args.top_k)
        )
        print_set(results[-1])
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
