from __future__ import annotations

import pytest

from crossrank.evaluation.beir import load_dataset, read_run
from crossrank.evaluation.metrics import METRICS, convention_for, evaluate, mixed_queries


def test_perfect_and_worst_rankings():
    qrels = {"q": {"a": 1, "b": 0, "c": 0}}
    best = evaluate({"q": {"a": 3, "b": 2, "c": 1}}, qrels)
    worst = evaluate({"q": {"b": 3, "c": 2, "a": 1}}, qrels)
    assert list(best) == METRICS
    assert best["nDCG@10"] == pytest.approx(1.0) and best["Success@1"] == 1.0
    assert worst["RR@10"] == pytest.approx(1 / 3) and worst["Success@1"] == 0.0
    assert worst["AP"] == pytest.approx(1 / 3)


def test_a_query_missing_from_the_run_counts_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert evaluate({"q1": {"a": 1.0}}, qrels)["nDCG@10"] == pytest.approx(0.5)


def test_binary_metrics_follow_the_relevance_level():
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": {"a": 2.0, "b": 1.0}}
    assert evaluate(run, qrels, relevance_level=1)["RR@10"] == 1.0
    assert evaluate(run, qrels, relevance_level=2)["RR@10"] == 0.5


def test_conventions():
    assert convention_for("trec-dl19").relevance_level == 2
    assert convention_for("trec-dl23").relevance_level == 2
    assert convention_for("wikiqa").mixed_only
    assert convention_for("scifact").relevance_level == 1


def test_given_dl19_bm25_run_reproduces_the_published_ndcg(data_dir):
    # rank_llm's BM25 top-100 for DL19: nDCG@10 0.5058 (0.506 in RankGPT/rank_llm papers)
    dataset = load_dataset(data_dir / "trec-dl19", "test")
    run = read_run(dataset.run_path("bm25"))
    metrics = evaluate(run, dataset.qrels, relevance_level=2)
    assert metrics["nDCG@10"] == pytest.approx(0.506, abs=0.001)


def test_wikiqa_standard_filter_keeps_237_test_questions(data_dir):
    dataset = load_dataset(data_dir / "wikiqa", "test")
    assert len(dataset.qrels) == 633
    assert len(mixed_queries(dataset.qrels)) == 237  # the WikiQA-test-filtered.ref count
