"""Training data from BEIR-format folders: queries, corpus, graded qrels and candidate lists.

A training *group* is one query with a list of candidate documents, each carrying a graded
label (or ``None`` when unjudged) and, optionally, a teacher score. Candidates come from the
set's own run file (``runs/<split>.bm25.trec``) or, when it has none, from BM25 over the
corpus (``bm25s``), which gives hard negatives rather than random ones.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Never train on these: they are the evaluation splits of the shared data.
TEST_SPLITS = {"test"}


@dataclass
class Candidate:
    doc_id: str
    label: int | None = None  # graded relevance; None = not judged
    teacher: float | None = None  # teacher logit, for distillation


@dataclass
class Group:
    query_id: str
    query: str
    candidates: list[Candidate] = field(default_factory=list)
    source: str = ""  # the data folder it came from


@dataclass
class BeirSet:
    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query -> doc -> grade
    run: dict[str, list[str]]  # query -> candidate docs, best first


def read_jsonl(path: Path) -> Iterator[dict]:
    if not path.exists() and path.with_suffix(path.suffix + ".gz").exists():
        path = path.with_suffix(path.suffix + ".gz")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def document_text(record: dict) -> str:
    """Title and text, as BEIR rerankers read them."""
    title, text = record.get("title") or "", record.get("text") or ""
    return f"{title} {text}".strip() if title else text


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    return dict(qrels)


def read_run(path: Path) -> dict[str, list[str]]:
    """A TREC run as query -> documents, best first (by score, as TREC tools do)."""
    scored = read_run_scores(path)
    return {q: sorted(docs, key=lambda d: -docs[d]) for q, docs in scored.items()}


def read_run_scores(path: Path) -> dict[str, dict[str, float]]:
    """A TREC run (plain, or gzipped as ``.gz``) as query -> document -> score."""
    run: dict[str, dict[str, float]] = defaultdict(dict)
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5:
                run[parts[0]][parts[2]] = float(parts[4])
    return dict(run)


def teacher_run(folder: str | Path, name: str, split: str) -> Path | None:
    """``FOLDER/<set>.<split>.trec``, or the same gzipped (how a cache is committed)."""
    for suffix in (".trec", ".trec.gz"):
        if (path := Path(folder) / f"{name}.{split}{suffix}").exists():
            return path
    return None


def write_run(run: dict[str, dict[str, float]], path: Path, tag: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for query_id, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: -kv[1])
            for rank, (doc_id, score) in enumerate(ranked, 1):
                f.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def split_spec(spec: str, default_split: str = "train") -> tuple[str, str, str]:
    """``DIR[:split][@number]`` -> (dir, split, number as text, "" when absent).

    The one syntax of every data option; what the number means (a depth, a sampling
    weight, a relevance grade) is the caller's.
    """
    spec, _, number = spec.partition("@")
    folder, _, split = spec.partition(":")
    return folder, split or default_split, number


def parse_depth_spec(
    spec: str, default_split: str = "train", default_depth: int = 100
) -> tuple[str, str, int]:
    """``DIR[:split][@depth]`` -> (dir, split, depth)."""
    folder, split, depth = split_spec(spec, default_split)
    return folder, split, int(depth or default_depth)


def load_beir(
    folder: str | Path, split: str, depth: int = 100, allow_test: bool = False
) -> BeirSet:
    """Read one split of a BEIR folder; candidates from its run file or mined with BM25."""
    folder = Path(folder)
    if split in TEST_SPLITS and not allow_test:
        raise ValueError(f"refusing to train on the {split!r} split of {folder}")
    corpus = {r["_id"]: document_text(r) for r in read_jsonl(folder / "corpus.jsonl")}
    all_queries = {r["_id"]: r["text"] for r in read_jsonl(folder / "queries.jsonl")}
    qrels_file = folder / "qrels" / f"{split}.tsv"
    qrels = read_qrels(qrels_file) if qrels_file.exists() else {}
    if run_file := given_run(folder, split):
        run = {q: docs[:depth] for q, docs in read_run(run_file).items()}
    elif qrels:
        run = bm25_candidates(corpus, {q: all_queries[q] for q in qrels}, depth)
    else:
        raise FileNotFoundError(f"{folder} has neither runs/{split}.*.trec nor qrels/{split}.tsv")
    query_ids = set(run) | set(qrels)
    queries = {q: all_queries[q] for q in query_ids if q in all_queries}
    return BeirSet(folder.name, corpus, queries, qrels, run)


def given_run(folder: Path, split: str) -> Path | None:
    """The set's own candidate list: ``runs/<split>.bm25.trec``, else its one other run.

    Sets whose candidates are not BM25's name their run after its source (SQuAD's
    ``train.article.trec``: every paragraph of the article; MedQuAD's ``train.focus.trec``).
    """
    bm25 = folder / "runs" / f"{split}.bm25.trec"
    if bm25.exists():
        return bm25
    others = sorted((folder / "runs").glob(f"{split}.*.trec"))
    return others[0] if len(others) == 1 else None


def bm25_candidates(
    corpus: dict[str, str], queries: dict[str, str], depth: int
) -> dict[str, list[str]]:
    """Top-``depth`` BM25 documents per query: the hard negatives a first stage would return."""
    import bm25s

    doc_ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([corpus[d] for d in doc_ids], stopwords="en", show_progress=False),
        show_progress=False,
    )
    query_ids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in query_ids], stopwords="en", show_progress=False)
    results, _ = retriever.retrieve(tokens, k=min(depth, len(doc_ids)), show_progress=False)
    return {
        q: [doc_ids[i] for i in row] for q, row in zip(query_ids, results.tolist(), strict=True)
    }


def make_groups(
    data: BeirSet,
    teacher: dict[str, dict[str, float]] | None = None,
    judged_only: bool = False,
) -> list[Group]:
    """One group per query: candidates (and judged documents with text), labels, teacher scores.

    ``judged_only`` keeps only judged candidates, for sets whose unjudged candidates
    would otherwise be read as negatives with no teacher to score them.
    """
    groups = []
    for query_id, query in sorted(data.queries.items()):
        judged = data.qrels.get(query_id, {})
        doc_ids = list(data.run.get(query_id, []))
        # judged documents outside the candidate list are still training signal
        doc_ids += [d for d in judged if d not in set(doc_ids) and d in data.corpus]
        scores = (teacher or {}).get(query_id, {})
        if teacher is not None and not judged:
            # an unlabelled query teaches only through the candidates its teacher scored
            doc_ids = [d for d in doc_ids if d in scores]
        candidates = [
            Candidate(d, judged.get(d), scores.get(d))
            for d in doc_ids
            if d in data.corpus and (not judged_only or d in judged)
        ]
        if candidates:
            groups.append(Group(query_id, query, candidates, data.name))
    return groups


def sample_list(
    group: Group, size: int, rng: random.Random, min_positive: int = 1
) -> list[Candidate] | None:
    """A list for the listwise loss: one positive (by grade, highest first) and ``size - 1`` others.

    With teacher scores every candidate can be used (the teacher labels them); without,
    negatives are the judged-lower or unjudged candidates, unjudged ones drawn from the
    (hard) candidate list. Returns None if the group has no usable positive.
    """
    labelled = [c for c in group.candidates if c.label is not None and c.label >= min_positive]
    has_teacher = all(c.teacher is not None for c in group.candidates)
    if labelled:
        # prefer higher grades: pick a grade level first so rare grade-3 passages are seen
        top = max(c.label for c in labelled)
        weights = [2.0 ** (c.label - top) for c in labelled]
        positive = rng.choices(labelled, weights=weights)[0]
        others = [
            c
            for c in group.candidates
            if c is not positive and (c.label is None or c.label < positive.label)
        ]
    elif has_teacher:
        positive = max(group.candidates, key=lambda c: c.teacher)
        others = [c for c in group.candidates if c is not positive]
    else:
        return None
    if not others:
        return None
    negatives = rng.sample(others, min(size - 1, len(others)))
    return [positive, *negatives]
