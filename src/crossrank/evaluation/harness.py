"""``evaluate_reranking``: first stage -> metrics -> rerank top-k -> metrics.

The Python face of ``crossrank eval``; the command line only parses and prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from crossrank.engine.tokenization import LongDocuments
from crossrank.evaluation.beir import Dataset, load_dataset
from crossrank.evaluation.first_stage import first_stage_run
from crossrank.evaluation.metrics import Convention, convention_for, evaluate, mixed_queries
from crossrank.evaluation.rerank import BiEncoder, CrossEncoder, Scorer, rerank_run
from crossrank.retrieval.embeddings import Embedder
from crossrank.retrieval.fusion import Run

RECALL_DEPTH = 100  # the first stage always retrieves this deep, so that R@100 is defined


@dataclass
class EvalReport:
    dataset: str
    split: str
    queries: int
    first_stage_name: str
    top_k: int
    convention: Convention
    first_stage: dict[str, float]
    reranker: str | None = None
    # long-documents mode ("truncate"/"chunk") -> metrics after reranking
    reranked: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    runs: dict[str, Run] = field(default_factory=dict, repr=False)  # "first_stage", mode
    # mode -> {"seconds": rerank stage wall time, "cpu_seconds", "tokens": cross-encoder
    # tokens read, "pairs"}
    costs: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict = {"first_stage": self.first_stage}
        if self.reranked:
            out["reranked"] = next(iter(self.reranked.values()))
            if len(self.reranked) > 1:
                out["reranked_by_long_documents"] = self.reranked
        out["settings"] = {
            "dataset": self.dataset,
            "split": self.split,
            "queries": self.queries,
            "first_stage": self.first_stage_name,
            "top_k": self.top_k,
            "reranker": self.reranker,
            "long_documents": list(self.reranked) or None,
            "costs": self.costs,
            "binary_relevance_level": self.convention.relevance_level,
            "mixed_queries_only": self.convention.mixed_only,
            "notes": self.notes,
        }
        return out


def select_queries(dataset: Dataset, convention: Convention, max_queries: int | None) -> None:
    """Apply the benchmark's query filter, then keep the first ``max_queries`` (a quick slice)."""
    if convention.mixed_only:
        dataset.qrels = mixed_queries(dataset.qrels, convention.relevance_level)
    if max_queries is not None:
        dataset.qrels = dict(list(dataset.qrels.items())[:max_queries])
    dataset.queries = {q: dataset.queries[q] for q in dataset.qrels}
    if not dataset.queries:
        raise ValueError(f"{dataset.name} {dataset.split}: no queries left to evaluate")


def make_scorer(
    reranker: str,
    model: str | Path | None,
    long_documents: LongDocuments | None,
    device: str | None,
    max_length: int | None,
    progress: bool = False,
    max_windows: int | None = None,
) -> Scorer:
    if reranker == "biencoder":
        return BiEncoder(Embedder(model, device=device), long_documents or "truncate", progress)
    if reranker != "cross-encoder":
        raise ValueError(f"unknown reranker {reranker!r}; use 'cross-encoder' or 'biencoder'")
    from crossrank import Reranker

    return CrossEncoder(
        Reranker.from_pretrained(
            model, device=device, max_length=max_length, long_documents=long_documents
        ),
        max_windows=max_windows,
    )


def evaluate_reranking(
    dataset_dir: str | Path,
    split: str = "test",
    first_stage: str = "bm25",
    top_k: int = 100,
    rerank: bool = True,
    reranker: str = "cross-encoder",
    model: str | Path | None = None,
    long_documents: list[LongDocuments] | None = None,
    max_length: int | None = None,
    all_queries: bool = False,
    max_queries: int | None = None,
    device: str | None = None,
    progress: bool = False,
    cache: bool = True,
    max_windows: int | None = None,
) -> EvalReport:
    """Metrics of the first stage and, unless ``rerank=False``, of its reranked top-k.

    ``long_documents`` lists the modes to compare (e.g. ``["truncate", "chunk"]``);
    ``None`` uses the model's default. ``all_queries`` turns off a benchmark's query
    filter (WikiQA/TrecQA: questions with both a correct and a wrong candidate).
    ``max_windows``: windows read per document in ``"select"`` mode.
    """
    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, not {top_k}")
    dataset = load_dataset(dataset_dir, split)
    convention = convention_for(dataset.name)
    if all_queries:
        convention = Convention(convention.relevance_level, False, "", convention.rerank_all)
    select_queries(dataset, convention, max_queries)
    notes = [convention.note] if convention.note else []
    if max_queries is not None:
        notes.append(f"quick slice: first {len(dataset.queries)} queries only")
    embedder = Embedder(device=device) if first_stage in ("dense", "hybrid") else None
    depth = max(top_k, RECALL_DEPTH)
    run = first_stage_run(dataset, first_stage, depth, embedder, progress, cache)
    if convention.rerank_all:
        top_k = max(top_k, *(len(docs) for docs in run.values()))
    report = EvalReport(
        dataset=dataset.name,
        split=split,
        queries=len(dataset.queries),
        first_stage_name=first_stage,
        top_k=top_k,
        convention=convention,
        first_stage=evaluate(run, dataset.qrels, convention.relevance_level),
        notes=notes,
        runs={"first_stage": run},
    )
    if first_stage.startswith("run:") and report.first_stage["AP"] > 0.999:
        notes.append(
            "the given run ranks every relevant document above every other one: its order "
            "leaks the labels, so its metrics mean nothing; compare rerankers only"
        )
    if not rerank:
        return report
    for mode in long_documents or [None]:
        windows = max_windows if mode == "select" else None
        scorer = make_scorer(reranker, model, mode, device, max_length, progress, windows)
        start, cpu = time.perf_counter(), time.process_time()
        reranked = rerank_run(
            run, dataset.queries, dataset.corpus, scorer, top_k, progress=progress
        )
        name = scorer.long_documents
        report.costs[name] = rerank_cost(scorer, time.perf_counter() - start, reranked, top_k)
        report.costs[name]["cpu_seconds"] = time.process_time() - cpu
        report.reranked[name] = evaluate(reranked, dataset.qrels, convention.relevance_level)
        report.runs[f"reranked.{name}"] = reranked
        report.reranker = describe_scorer(scorer)
    return report


def rerank_cost(scorer: Scorer, seconds: float, run: Run, top_k: int) -> dict[str, float]:
    cost = {"seconds": seconds, "pairs": sum(min(len(d), top_k) for d in run.values())}
    if isinstance(scorer, CrossEncoder):
        cost["tokens"] = scorer.tokens
    return cost


def describe_scorer(scorer: Scorer) -> str:
    if isinstance(scorer, BiEncoder):
        return f"bi-encoder {scorer.embedder.path}"
    settings = f"max_length={scorer.reranker.max_length}"
    if scorer.long_documents == "select":
        settings += f", max_windows={scorer.windows}"
    return f"cross-encoder {scorer.reranker.path} ({settings})"
