"""Pairs to score as a Ray Dataset: from a TREC run of a BEIR folder, Parquet or JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from crossrank.evaluation.beir import (
    DatasetError,
    corpus_file,
    read_corpus,
    read_queries,
    read_run,
)

if TYPE_CHECKING:
    from ray.data import Dataset

COLUMNS = ("query_id", "query", "doc_id", "text")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def read_pairs(
    source: str | Path, *, beir: str | Path | None = None, block_rows: int = 1024
) -> Dataset:
    """A lazy Dataset of ``query_id, query, doc_id, text`` rows.

    ``source`` is a TREC run (``.trec``; its BEIR folder is ``beir`` or, by default, the
    folder above ``runs/``), a Parquet file or folder, or a JSONL file or folder; Parquet
    and JSONL may be remote (``s3://...``) and are read in parallel, in streaming fashion.
    """
    import ray.data

    name = str(source)
    local = Path(name).expanduser()
    if name.endswith(".trec") or beir is not None:
        return trec_pairs(local, beir, block_rows)
    if "://" not in name and not local.exists():
        raise FileNotFoundError(f"no such file or folder: {name}")
    if name.endswith(JSONL_SUFFIXES) or (local.is_dir() and any(local.glob("*.json*"))):
        return ray.data.read_json(name, lines=True)
    return ray.data.read_parquet(name)


def trec_pairs(run_path: Path, beir: str | Path | None, block_rows: int) -> Dataset:
    """The run's pairs with their texts, in blocks of whole queries.

    The run is joined with its corpus here, on the driver, and the blocks are put in
    Ray's object store, so the driver holds the corpus while it builds them; for inputs
    larger than that allows, write Parquet pairs and read those instead.
    """
    import ray
    import ray.data

    folder = Path(beir).expanduser() if beir is not None else run_path.parent.parent
    run = read_run(run_path)
    queries = read_queries(folder / "queries.jsonl")
    corpus = read_corpus(corpus_file(folder))
    missing_queries = [q for q in run if q not in queries]
    missing_docs = {d for docs in run.values() for d in docs if d not in corpus}
    if missing_queries or missing_docs:
        example = missing_queries[:1] or sorted(missing_docs)[:1]
        raise DatasetError(
            f"{run_path} names {len(missing_queries)} queries and {len(missing_docs)} "
            f"documents that {folder} does not hold, e.g. {example[0]}"
        )
    blocks = []
    rows: dict[str, list[str]] = {c: [] for c in COLUMNS}
    for qid, docs in run.items():
        for doc in docs:
            rows["query_id"].append(qid)
            rows["query"].append(queries[qid])
            rows["doc_id"].append(doc)
            rows["text"].append(corpus[doc])
        # Blocks end between queries, so each query is scored in one model call
        # (with batch_rows=None), exactly as Reranker.score scores its candidates.
        if len(rows["query_id"]) >= block_rows:
            blocks.append(ray.put(pa.table(rows)))
            rows = {c: [] for c in COLUMNS}
    if rows["query_id"]:
        blocks.append(ray.put(pa.table(rows)))
    return ray.data.from_arrow_refs(blocks)
