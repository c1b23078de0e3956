"""Pairs to score as a Ray Dataset: from a TREC run of a BEIR folder, Parquet or JSONL."""

from __future__ import annotations

import gzip
import json
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


class InputError(ValueError):
    """An INPUT that cannot be scored, said in one line before Ray starts."""


INPUT_HELP = (
    "INPUT may be a BEIR folder with one run (FOLDER/runs/*.trec), a TREC run file, or "
    "Parquet or JSONL (a file or a folder of them) with 'query' and 'text' columns"
)


def resolve_input(source: str, beir: str | None = None) -> str:
    """Check INPUT before Ray starts; a BEIR folder becomes its one run file.

    Every mistake a user can make here (a missing path, a BEIR folder without a run or with
    several, missing columns, an empty file) is one clear line, not a traceback from inside
    a Ray actor minutes later. Remote inputs (``s3://...``) are left to Ray.
    """
    if "://" in source:
        return source
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"no such file or folder: {source}; {INPUT_HELP}")
    if path.is_dir() and (path / "queries.jsonl").is_file():
        path = only_run(path)
    if path.suffix == ".trec" or beir is not None:
        check_trec(path, Path(beir).expanduser() if beir else path.parent.parent)
    else:
        check_pairs_files(path)
    return str(path)


def only_run(folder: Path) -> Path:
    runs = sorted((folder / "runs").glob("*.trec"))
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise InputError(
            f"{folder} is a BEIR folder without a run (runs/*.trec) to score; {INPUT_HELP}"
        )
    names = ", ".join(str(r) for r in runs)
    raise InputError(f"{folder} holds {len(runs)} runs; pass one of them as INPUT: {names}")


def check_trec(run: Path, folder: Path) -> None:
    if not run.is_file() or run.stat().st_size == 0:
        raise InputError(f"{run} is not a TREC run file, or is empty; {INPUT_HELP}")
    if not (folder / "queries.jsonl").is_file():
        raise InputError(f"{folder} (the BEIR folder of {run}) has no queries.jsonl; pass --beir")
    try:
        corpus_file(folder)
    except DatasetError as error:
        raise InputError(f"{error} (the BEIR folder of {run}); pass --beir") from None


def check_pairs_files(path: Path) -> None:
    """Parquet or JSONL: the first file must hold a row with the columns scoring needs."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    jsonl = [f for f in files if f.name.endswith(JSONL_SUFFIXES)]
    parquet = [f for f in files if f.suffix == ".parquet"]
    if not jsonl and not parquet:
        raise InputError(f"{path} holds no .parquet or .jsonl files; {INPUT_HELP}")
    first = (jsonl or parquet)[0]
    try:
        columns = first_jsonl_keys(first) if jsonl else parquet_columns(first)
    except (pa.ArrowInvalid, OSError, ValueError) as error:
        raise InputError(f"{first} cannot be read: {str(error).splitlines()[0]}") from None
    if columns is None:
        raise InputError(f"{first} holds no pairs")
    missing = [c for c in ("query", "text") if c not in columns]
    if missing:
        raise InputError(
            f"{first} lacks the column(s) {', '.join(missing)} (it has: "
            f"{', '.join(columns)}); {INPUT_HELP}"
        )


def first_jsonl_keys(path: Path) -> list[str] | None:
    """The keys of the first record (only that line is read), or None if there is none."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("a line is not a JSON object")
                return list(record)
    return None


def parquet_columns(path: Path) -> list[str] | None:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path)
    return metadata.schema_arrow.names if metadata.metadata.num_rows else None


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
