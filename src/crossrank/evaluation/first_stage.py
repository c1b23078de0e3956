"""First-stage rankings for an evaluation: BM25, dense, hybrid (RRF), or a given run."""

from __future__ import annotations

from crossrank.evaluation.beir import Dataset, DatasetError, Run, read_run
from crossrank.retrieval.bm25 import bm25_run
from crossrank.retrieval.dense import dense_run
from crossrank.retrieval.embeddings import Embedder
from crossrank.retrieval.fusion import fuse_runs

FIRST_STAGES = ("bm25", "dense", "hybrid", "run:NAME")


def first_stage_run(
    dataset: Dataset,
    name: str,
    depth: int,
    embedder: Embedder | None = None,
    progress: bool = False,
    cache: bool = True,
) -> Run:
    """The top ``depth`` documents of every judged query of ``dataset``.

    ``cache`` keeps corpus embeddings on disk (see ``retrieval.dense.encode_corpus``).
    """
    if name == "bm25":
        return bm25_run(dataset.corpus, dataset.queries, depth, progress)
    if name == "dense":
        return dense_run(dataset.corpus, dataset.queries, depth, embedder, progress, cache)
    if name == "hybrid":
        runs = [
            bm25_run(dataset.corpus, dataset.queries, depth, progress),
            dense_run(dataset.corpus, dataset.queries, depth, embedder, progress, cache),
        ]
        return fuse_runs(runs, depth)
    if name.startswith("run:"):
        run_name = name[len("run:") :]
        path = dataset.run_path(run_name)
        if not path.is_file():
            given = ", ".join(f"run:{r}" for r in dataset.runs) or "none"
            raise DatasetError(
                f"{dataset.name} has no run {run_name!r} for split {dataset.split!r} "
                f"(expected {path}); given runs: {given}"
            )
        run = read_run(path)
        return {q: run.get(q, {}) for q in dataset.queries}  # only the judged queries
    raise ValueError(f"unknown first stage {name!r}; use one of: {', '.join(FIRST_STAGES)}")
