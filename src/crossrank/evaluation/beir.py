"""Read benchmark folders in the BEIR layout.

    corpus.jsonl[.gz]        {"_id", "title", "text"} per line
    queries.jsonl            {"_id", "text"} per line (all splits)
    qrels/<split>.tsv        query-id <TAB> corpus-id <TAB> score, with a header line
    runs/<split>.<name>.trec TREC run: qid Q0 docid rank score tag

Every mistake a user can make with such a folder (wrong path, missing split, missing
run, empty corpus) raises ``DatasetError`` with a message that names the fix.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from crossrank.retrieval.fusion import Run

Qrels = dict[str, dict[str, int]]  # query id -> doc id -> relevance grade


class DatasetError(ValueError):
    """A benchmark folder that is missing something the evaluation needs."""


@dataclass
class Dataset:
    name: str
    path: Path
    split: str
    corpus: dict[str, str]  # doc id -> "title text" (the BEIR convention: title first)
    queries: dict[str, str]  # query id -> text, only the queries judged in this split
    qrels: Qrels
    runs: list[str] = field(default_factory=list)  # names of the given runs of this split

    def run_path(self, name: str) -> Path:
        return self.path / "runs" / f"{self.split}.{name}.trec"


def read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not valid JSON ({error.msg})") from None


def corpus_file(folder: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"{folder} has no corpus.jsonl or corpus.jsonl.gz: not a BEIR folder")


def read_corpus(path: Path) -> dict[str, str]:
    corpus = {}
    for number, record in enumerate(read_jsonl(path), 1):
        if "_id" not in record or "text" not in record:
            raise DatasetError(f"{path}:{number}: a document needs '_id' and 'text' fields")
        title = (record.get("title") or "").strip()
        text = record["text"] or ""
        corpus[str(record["_id"])] = f"{title} {text}" if title else text
    if not corpus:
        raise DatasetError(f"{path} holds no documents")
    return corpus


def read_queries(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DatasetError(f"{path.parent} has no queries.jsonl")
    queries = {}
    for number, record in enumerate(read_jsonl(path), 1):
        if "_id" not in record or "text" not in record:
            raise DatasetError(f"{path}:{number}: a query needs '_id' and 'text' fields")
        queries[str(record["_id"])] = record["text"]
    return queries


def splits(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))


def read_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            columns = line.split()
            if not columns or (number == 1 and not columns[-1].lstrip("-").isdigit()):
                continue  # blank line or the header
            if len(columns) == 4:  # TREC qrels: qid iteration docid grade
                columns = [columns[0], columns[2], columns[3]]
            if len(columns) != 3:
                raise DatasetError(f"{path}:{number}: expected query-id, corpus-id, score")
            query, doc, grade = columns
            try:
                qrels.setdefault(query, {})[doc] = int(grade)
            except ValueError:
                raise DatasetError(f"{path}:{number}: score {grade!r} is not an integer") from None
    if not qrels:
        raise DatasetError(f"{path} holds no judgements")
    return qrels


def read_run(path: Path) -> Run:
    """A TREC run file; a missing or malformed file is a ``DatasetError``."""
    if not path.is_file():
        raise DatasetError(f"no run file at {path}")
    run: Run = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            columns = line.split()
            if not columns:
                continue
            if len(columns) != 6:
                raise DatasetError(f"{path}:{number}: expected 'qid Q0 docid rank score tag'")
            try:
                run.setdefault(columns[0], {})[columns[2]] = float(columns[4])
            except ValueError:
                raise DatasetError(
                    f"{path}:{number}: score {columns[4]!r} is not a number"
                ) from None
    if not run:
        raise DatasetError(f"{path} holds no results")
    return run


def write_run(run: Run, path: Path, tag: str = "crossrank") -> None:
    with open(path, "w", encoding="utf-8") as out:
        for query, scores in run.items():
            ranked = sorted(scores.items(), key=lambda item: -item[1])
            for rank, (doc, score) in enumerate(ranked, 1):
                out.write(f"{query} Q0 {doc} {rank} {score!r} {tag}\n")


def load_dataset(folder: str | Path, split: str = "test") -> Dataset:
    """The corpus, the split's queries and judgements, and the names of its given runs."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"no dataset folder at {folder}")
    corpus_path = corpus_file(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = ", ".join(splits(folder)) or "none"
        raise DatasetError(f"{folder} has no split {split!r} (qrels/{split}.tsv); splits: {found}")
    qrels = read_qrels(qrels_path)
    all_queries = read_queries(folder / "queries.jsonl")
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise DatasetError(
            f"{len(missing)} judged queries of {split!r} are not in queries.jsonl, "
            f"e.g. {missing[0]}"
        )
    runs = sorted(
        p.name[len(split) + 1 : -len(".trec")] for p in (folder / "runs").glob(f"{split}.*.trec")
    )
    return Dataset(
        name=folder.resolve().name,
        path=folder,
        split=split,
        corpus=read_corpus(corpus_path),
        queries={q: all_queries[q] for q in qrels},
        qrels=qrels,
        runs=runs,
    )
