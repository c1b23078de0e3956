"""Reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

Hand-written because it is five lines: a library (ranx) would add a dependency for it.
RRF ignores the raw scores, which live on incomparable scales (BM25 vs cosine).
"""

from __future__ import annotations

from collections.abc import Sequence

Run = dict[str, dict[str, float]]  # query id -> doc id -> score (higher is better)

RRF_K = 60  # the constant of the paper; it damps the weight of the very top ranks


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """Fuse best-first lists of ids into one score per id: sum of 1 / (k + rank)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


def ranked(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda item: -scores[item])


def fuse_runs(runs: Sequence[Run], depth: int, k: int = RRF_K) -> Run:
    """RRF of several runs, keeping the top ``depth`` documents of each query."""
    queries = {q for run in runs for q in run}
    fused: Run = {}
    for query in queries:
        scores = rrf([ranked(run.get(query, {})) for run in runs], k)
        fused[query] = {doc: scores[doc] for doc in ranked(scores)[:depth]}
    return fused
