"""Long documents, measured: a LoCo-style suite and a reranking-depth sweep.

``run_suite`` reranks one first stage's candidates on several sets with every
long-document mode of the cross-encoder (``truncate``, ``chunk``, ``select``) and with
the bi-encoder baseline over the same candidates, and records nDCG@10, the rerank
stage's wall time and the tokens the cross-encoder read. ``depth_sweep`` reranks the
top 10, 20, 50... of one set and records nDCG@10 and the rerank time at each depth.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crossrank.engine.tokenization import LongDocuments
from crossrank.evaluation.beir import Dataset, DatasetError, load_dataset
from crossrank.evaluation.first_stage import first_stage_run
from crossrank.evaluation.harness import RECALL_DEPTH, select_queries
from crossrank.evaluation.metrics import convention_for, evaluate
from crossrank.evaluation.rerank import (
    BiEncoder,
    CrossEncoder,
    Scorer,
    rerank_run,
    rescored_run,
    score_in_blocks,
    top_docs,
)
from crossrank.retrieval.embeddings import Embedder
from crossrank.retrieval.fusion import Run

# LoCo's shape with the sets at hand: three long-document sets and a short control.
LOCO_SETS = ("qmsum:test", "covid-qa:test", "ectsum:test", "scitldr:test")
SHORT_CONTROLS = ("scitldr",)
MODES: tuple[LongDocuments, ...] = ("truncate", "chunk", "select")


@dataclass
class SystemResult:
    system: str  # "BM25", "bi-encoder", "cross-encoder"
    mode: str  # "-", "truncate", "chunk", "select (m=4)"
    ndcg10: float
    seconds: float | None = None  # rerank stage wall time
    tokens: int | None = None  # tokens the cross-encoder read
    cpu_seconds: float | None = None  # CPU time of this process in the rerank stage

    @property
    def label(self) -> str:
        return self.system if self.mode == "-" else f"{self.system} {self.mode}"


@dataclass
class SetResult:
    name: str
    split: str
    queries: int
    top_k: int
    first_stage: str
    systems: list[SystemResult] = field(default_factory=list)

    @property
    def long(self) -> bool:
        return self.name not in SHORT_CONTROLS


def parse_set(spec: str, max_queries: int | None) -> tuple[str, str, int | None]:
    """``NAME[:SPLIT[:QUERIES]]`` -> (name, split, queries); the split defaults to test."""
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"expected NAME[:SPLIT[:QUERIES]], not {spec!r}")
    name, split, queries = [*parts, "", ""][:3]
    if queries and not queries.isdigit():
        raise ValueError(f"the number of queries in {spec!r} must be a whole number")
    return name, split or "test", int(queries) if queries else max_queries


def prepare(folder: Path, split: str, max_queries: int | None) -> Dataset:
    if not folder.is_dir():
        raise DatasetError(f"no dataset folder {folder} (the suite reads its sets from there)")
    dataset = load_dataset(folder, split)
    select_queries(dataset, convention_for(dataset.name), max_queries)
    return dataset


def timed_rerank(run: Run, dataset: Dataset, scorer: Scorer, top_k: int, progress: bool):
    """The reranked run, its wall time and its CPU time (which other processes on a
    shared machine do not inflate)."""
    start, cpu = time.perf_counter(), time.process_time()
    reranked = rerank_run(run, dataset.queries, dataset.corpus, scorer, top_k, progress=progress)
    return reranked, time.perf_counter() - start, time.process_time() - cpu


def run_suite(
    data_dir: str | Path,
    sets: tuple[str, ...] = LOCO_SETS,
    first_stage: str = "bm25",
    top_k: int = 20,
    modes: tuple[LongDocuments, ...] = MODES,
    biencoder: bool = True,
    model: str | Path | None = None,
    max_length: int | None = None,
    max_windows: tuple[int | None, ...] = (None,),
    max_queries: int | None = None,
    device: str | None = None,
    progress: bool = False,
) -> list[SetResult]:
    """Every set's first stage, then each reranker over the same top ``top_k`` candidates.

    ``max_windows`` lists the window counts to try in select mode (None: the default).
    """
    from crossrank import Reranker

    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, not {top_k}")
    reranker = Reranker.from_pretrained(model, device=device, max_length=max_length)
    embedder = Embedder(device=device) if biencoder or first_stage != "bm25" else None
    results = []
    for spec in sets:
        name, split, queries = parse_set(spec, max_queries)
        dataset = prepare(Path(data_dir) / name, split, queries)
        level = convention_for(dataset.name).relevance_level
        run = first_stage_run(
            dataset, first_stage, max(top_k, RECALL_DEPTH), embedder, progress, True
        )
        result = SetResult(name, split, len(dataset.queries), top_k, first_stage)
        result.systems.append(
            SystemResult(first_stage, "-", evaluate(run, dataset.qrels, level)["nDCG@10"])
        )
        scorers: list[tuple[str, Scorer]] = []
        if biencoder:
            scorers += [("bi-encoder", BiEncoder(embedder, mode, progress)) for mode in MODES[:2]]
        for mode in modes:
            for windows in max_windows if mode == "select" else (None,):
                scorers.append(("cross-encoder", CrossEncoder(reranker, mode, windows)))
        for system, scorer in scorers:
            reranked, seconds, cpu = timed_rerank(run, dataset, scorer, top_k, progress)
            ndcg = evaluate(reranked, dataset.qrels, level)["nDCG@10"]
            tokens = scorer.tokens if isinstance(scorer, CrossEncoder) else None
            result.systems.append(SystemResult(system, scorer.label, ndcg, seconds, tokens, cpu))
        results.append(result)
    return results


def suite_json(results: list[SetResult]) -> list[dict]:
    return [{**asdict(r), "systems": [asdict(s) for s in r.systems]} for r in results]


@dataclass
class DepthRow:
    depth: int
    ndcg10: float
    seconds: float  # time to rerank the top ``depth`` of every query
    pairs: int
    tokens: int
    cpu_seconds: float = 0.0  # this process's CPU time for the same


def depth_sweep(
    dataset_dir: str | Path,
    depths: list[int],
    split: str = "test",
    first_stage: str = "bm25",
    model: str | Path | None = None,
    long_documents: LongDocuments | None = None,
    max_windows: int | None = None,
    max_length: int | None = None,
    max_queries: int | None = None,
    device: str | None = None,
    progress: bool = False,
) -> tuple[Dataset, float, list[DepthRow]]:
    """nDCG@10 and rerank time after reranking the top ``depth`` candidates, per depth.

    Each (query, document) pair is scored once: depth 20 scores ranks 11-20 on top of
    depth 10's pairs, and its time is depth 10's time plus that increment. A pair's
    score does not depend on the other pairs, so this equals reranking each depth
    afresh, at the cost of the deepest one alone. Returns the dataset, the first
    stage's nDCG@10 and one row per depth.
    """
    from crossrank import Reranker

    if not depths or min(depths) < 1:
        raise ValueError(f"depths must be positive whole numbers, not {depths}")
    dataset = prepare(Path(dataset_dir), split, max_queries)
    level = convention_for(dataset.name).relevance_level
    embedder = Embedder(device=device) if first_stage in ("dense", "hybrid") else None
    run = first_stage_run(dataset, first_stage, max(*depths, RECALL_DEPTH), embedder, progress)
    reranker = Reranker.from_pretrained(
        model, device=device, max_length=max_length, long_documents=long_documents
    )
    scorer = CrossEncoder(reranker, long_documents, max_windows)
    scores: dict[tuple[str, str], float] = {}
    rows, seconds, cpu = [], 0.0, 0.0
    for depth in sorted(set(depths)):
        slots = [(q, d) for q in run for d in top_docs(run[q], depth) if (q, d) not in scores]
        pairs = [(dataset.queries[q], dataset.corpus[d]) for q, d in slots]
        start, cpu_start = time.perf_counter(), time.process_time()
        new = score_in_blocks(pairs, scorer, progress=progress)
        seconds += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        scores.update(zip(slots, new, strict=True))
        reranked = rescored_run(run, scores, depth)
        ndcg = evaluate(reranked, dataset.qrels, level)["nDCG@10"]
        pairs_at_depth = sum(min(len(docs), depth) for docs in run.values())
        rows.append(DepthRow(depth, ndcg, seconds, pairs_at_depth, scorer.tokens, cpu))
    return dataset, evaluate(run, dataset.qrels, level)["nDCG@10"], rows
