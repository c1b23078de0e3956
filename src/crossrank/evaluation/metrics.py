"""Ranking metrics with ``ir-measures`` (pytrec_eval underneath: trec_eval semantics).

Benchmarks differ in what "relevant" means for binary metrics and in which queries
count; ``Convention`` records each benchmark's published setting so that numbers are
comparable with the literature, and ``describe`` says which one was used.
"""

from __future__ import annotations

from dataclasses import dataclass

import ir_measures

from crossrank.evaluation.beir import Qrels, Run

# Metric names as ir-measures prints them (without a relevance level).
METRICS = ["nDCG@10", "RR@10", "RR", "AP", "R@100", "Success@1", "Success@5"]


@dataclass(frozen=True)
class Convention:
    relevance_level: int = 1  # binary metrics count grade >= this as relevant
    mixed_only: bool = False  # keep only queries judged with both a relevant and a wrong doc
    note: str = ""
    rerank_all: bool = False  # the candidate list is the task: rerank all of it, not a top-k


TREC_DL = Convention(
    relevance_level=2,
    note="TREC DL convention: nDCG uses graded gains; binary metrics (RR, AP, R, Success) "
    "count grade >= 2 as relevant",
)
ANSWER_SELECTION = Convention(
    mixed_only=True,
    note="answer-selection convention: only questions with both a correct and a wrong "
    "candidate are scored, and all of a question's candidates are reranked",
    rerank_all=True,
)
CONVENTIONS = {
    "trec-dl19": TREC_DL,
    "trec-dl20": TREC_DL,
    "trec-dl21": TREC_DL,
    "trec-dl22": TREC_DL,
    "wikiqa": ANSWER_SELECTION,
    "trecqa": ANSWER_SELECTION,
}


def convention_for(dataset_name: str) -> Convention:
    if dataset_name in CONVENTIONS:
        return CONVENTIONS[dataset_name]
    if dataset_name.startswith("trec-dl"):
        return TREC_DL
    return Convention()


def measures(relevance_level: int) -> dict[str, ir_measures.Measure]:
    """Our metric names -> ir-measures objects at the given binary relevance level."""
    out = {}
    for name in METRICS:
        measure = ir_measures.parse_measure(name)
        if relevance_level != 1 and name != "nDCG@10":  # nDCG uses the grades themselves
            measure = measure(rel=relevance_level)
        out[name] = measure
    return out


def mixed_queries(qrels: Qrels, relevance_level: int = 1) -> Qrels:
    """Queries whose judged docs include at least one relevant and one non-relevant doc."""
    return {
        query: judged
        for query, judged in qrels.items()
        if any(g >= relevance_level for g in judged.values())
        and any(g < relevance_level for g in judged.values())
    }


def evaluate(run: Run, qrels: Qrels, relevance_level: int = 1) -> dict[str, float]:
    """Mean of each metric over the judged queries (a query missing from the run scores 0)."""
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    named = measures(relevance_level)
    # pytrec_eval skips judged queries absent from the run, which would flatter a first
    # stage that returns nothing; average per-query values over all judged queries instead.
    totals = dict.fromkeys(named, 0.0)
    by_measure = {measure: name for name, measure in named.items()}
    run = {q: docs for q, docs in run.items() if q in qrels and docs}
    for metric in ir_measures.iter_calc(list(named.values()), qrels, run):
        totals[by_measure[metric.measure]] += metric.value
    return {name: total / len(qrels) for name, total in totals.items()}
