"""A persistent first-stage index in LanceDB: chunks, metadata, vectors and full text.

One LanceDB table holds a row per chunk (text, character span, the document's title
and metadata, its embedding) with LanceDB's native full-text (BM25) index on the
chunk's title + text. A sidecar ``crossrank.json`` records the embedding model and
chunking settings, so a store is never queried with vectors from another model.

Re-indexing is an upsert keyed by document id: unchanged documents (same content
hash) are skipped, changed ones have their chunks replaced, nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
from lancedb.index import FTS
from tqdm.auto import tqdm

from crossrank.retrieval.chunking import Chunker
from crossrank.retrieval.documents import Document
from crossrank.retrieval.embeddings import Embedder
from crossrank.retrieval.fusion import ranked, rrf

log = logging.getLogger(__name__)

TABLE = "chunks"
SETTINGS_FILE = "crossrank.json"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"  # the recorded name of the bundled embedding model


@dataclass
class Candidate:
    """A chunk found by the first stage."""

    id: str
    doc_id: str
    chunk: int
    title: str
    text: str
    start: int
    end: int
    metadata: dict[str, Any]
    fused_score: float  # reciprocal-rank fusion of the vector and BM25 ranks
    vector_rank: int | None  # 1-based; None when the chunk was not in that list
    bm25_rank: int | None


@dataclass
class IndexStats:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    empty: int = 0  # documents without text: nothing to search, not stored
    chunks: int = 0  # chunks written in this run

    def __str__(self) -> str:
        empty = f", {self.empty} empty skipped" if self.empty else ""
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.removed} removed{empty} ({self.chunks} chunks embedded)"
        )


def content_hash(document: Document) -> str:
    payload = json.dumps([document.title, document.text, document.metadata], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


class Store:
    def __init__(
        self,
        path: str | Path,
        embedder: Embedder | None = None,
        chunk_tokens: int = 200,
        overlap: int = 40,
        create: bool = True,
    ):
        """Open (``create=False``: only open) the store at ``path``.

        Settings are fixed by the first indexing: a later ``chunk_tokens``/``overlap``
        is ignored in favour of those recorded in the store.
        """
        self.path = Path(path).expanduser()
        settings_file = self.path / SETTINGS_FILE
        if settings_file.is_file():
            self.settings = json.loads(settings_file.read_text())
        elif create:
            self.settings = {"embedder": None, "chunk_tokens": chunk_tokens, "overlap": overlap}
        else:
            raise FileNotFoundError(
                f"no crossrank store at {self.path}; create one with: crossrank index DOCS "
                f"--store {self.path}"
            )
        if embedder is None:
            recorded = self.settings.get("embedder") or DEFAULT_EMBEDDER
            embedder = Embedder(None if recorded == DEFAULT_EMBEDDER else recorded)
        self.embedder = embedder
        name = self.embedder_name()
        if self.settings["embedder"] not in (None, name):
            raise ValueError(
                f"the store at {self.path} was built with embeddings of "
                f"{self.settings['embedder']!r}, not {name!r}; index into a new store"
            )
        self.chunker = Chunker(
            self.embedder.tokenizer, self.settings["chunk_tokens"], self.settings["overlap"]
        )
        self.db = lancedb.connect(self.path)
        self.table = self.db.open_table(TABLE) if TABLE in self.db.list_tables().tables else None

    def embedder_name(self) -> str:
        from crossrank.engine.hub import all_minilm_l6_v2_path

        default = self.embedder.path.resolve() == all_minilm_l6_v2_path().resolve()
        return DEFAULT_EMBEDDER if default else str(self.embedder.path)

    def schema(self) -> pa.Schema:
        return pa.schema(
            [
                ("id", pa.string()),  # "<doc_id>#<chunk>"
                ("doc_id", pa.string()),
                ("chunk", pa.int32()),
                ("title", pa.string()),
                ("text", pa.string()),  # the chunk as it appears in the document
                ("content", pa.string()),  # title + chunk: what is embedded and BM25-indexed
                ("start", pa.int32()),
                ("end", pa.int32()),
                ("metadata", pa.string()),  # JSON
                ("doc_hash", pa.string()),
                ("vector", pa.list_(pa.float32(), self.embedder.dimension)),
            ]
        )

    def __len__(self) -> int:
        return 0 if self.table is None else self.table.count_rows()

    def document_hashes(self) -> dict[str, str]:
        if self.table is None or not len(self):
            return {}
        rows = self.table.search().select(["doc_id", "doc_hash"]).limit(len(self)).to_arrow()
        return dict(zip(rows["doc_id"].to_pylist(), rows["doc_hash"].to_pylist(), strict=True))

    def rows(self, document: Document, digest: str) -> list[dict[str, Any]]:
        rows = []
        for number, chunk in enumerate(self.chunker(document.text)):
            content = f"{document.title}\n{chunk.text}" if document.title else chunk.text
            rows.append(
                {
                    "id": f"{document.id}#{number}",
                    "doc_id": document.id,
                    "chunk": number,
                    "title": document.title,
                    "text": chunk.text,
                    "content": content,
                    "start": chunk.start,
                    "end": chunk.end,
                    "metadata": json.dumps(document.metadata, ensure_ascii=False),
                    "doc_hash": digest,
                }
            )
        return rows

    def index(
        self,
        documents: Sequence[Document],
        prune: bool = False,
        batch_documents: int = 256,
        progress: bool = False,
    ) -> IndexStats:
        """Add new documents, replace changed ones; with ``prune``, drop the ones not given."""
        stats = IndexStats()
        known = self.document_hashes()
        todo, emptied = [], []
        for document in documents:
            if not document.text.strip():
                stats.empty += 1
                if document.id in known:  # it had text before: its old chunks must go
                    emptied.append(document.id)
                continue
            digest = content_hash(document)
            if known.get(document.id) == digest:
                stats.unchanged += 1
                continue
            todo.append((document, digest))
            if document.id in known:
                stats.updated += 1
            else:
                stats.added += 1
        bar = tqdm(total=len(todo), desc="indexing", unit="doc", disable=not progress)
        for start in range(0, len(todo), batch_documents):
            batch = todo[start : start + batch_documents]
            rows = [row for document, digest in batch for row in self.rows(document, digest)]
            vectors = self.embedder.encode([row["content"] for row in rows])
            for row, vector in zip(rows, vectors, strict=True):
                row["vector"] = vector
            self.write(rows, [document.id for document, _ in batch])
            stats.chunks += len(rows)
            bar.update(len(batch))
        bar.close()
        stale = emptied
        if prune:
            given = {document.id for document in documents}
            stale += [doc_id for doc_id in known if doc_id not in given]
        for start in range(0, len(stale), 500):
            self.table.delete(f"doc_id IN ({sql_list(stale[start : start + 500])})")
        stats.removed = len(stale)
        if stats.added or stats.updated or stats.removed:
            self.refresh_text_index()
        self.save_settings()
        return stats

    def write(self, rows: list[dict[str, Any]], doc_ids: list[str]) -> None:
        data = pa.Table.from_pylist(rows, schema=self.schema())
        if self.table is None:
            self.table = self.db.create_table(TABLE, data=data, schema=self.schema())
            return
        # Upsert by chunk id; chunks of these documents that no longer exist (the new
        # version has fewer chunks) are deleted in the same commit.
        (
            self.table.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(f"doc_id IN ({sql_list(doc_ids)})")
            .execute(data)
        )

    def refresh_text_index(self) -> None:
        # Rebuilt after each indexing run: LanceDB does not add new rows to an FTS index
        # until it is optimised, and a rebuild keeps BM25 statistics exact.
        self.table.create_index(
            "content", config=FTS(language="English", stem=True, remove_stop_words=True)
        )

    def save_settings(self) -> None:
        self.settings["embedder"] = self.embedder_name()
        self.settings["dimension"] = self.embedder.dimension
        (self.path / SETTINGS_FILE).write_text(json.dumps(self.settings, indent=2) + "\n")

    def search(self, query: str, candidates: int = 100) -> list[Candidate]:
        """Hybrid first stage: vector and BM25 top-``candidates``, fused with RRF."""
        if not query.strip():
            raise ValueError("query is empty")
        if self.table is None or not len(self):
            raise ValueError(f"the store at {self.path} is empty: index documents first")
        columns = ["id", "doc_id", "chunk", "title", "text", "start", "end", "metadata"]
        vector = self.embedder.encode([query])[0]
        by_vector = (
            self.table.search(vector, vector_column_name="vector")
            .distance_type("cosine")
            .select([*columns, "_distance"])  # naming the score column avoids a warning
            .limit(candidates)
            .to_list()
        )
        by_text = (
            self.table.search(query, query_type="fts", fts_columns="content")
            .select([*columns, "_score"])
            .limit(candidates)
            .to_list()
        )
        rows = {row["id"]: row for row in by_vector + by_text}
        vector_ids = [row["id"] for row in by_vector]
        text_ids = [row["id"] for row in by_text]
        fused = rrf([vector_ids, text_ids])
        out = []
        for chunk_id in ranked(fused)[:candidates]:
            row = rows[chunk_id]
            out.append(
                Candidate(
                    id=chunk_id,
                    doc_id=row["doc_id"],
                    chunk=row["chunk"],
                    title=row["title"],
                    text=row["text"],
                    start=row["start"],
                    end=row["end"],
                    metadata=json.loads(row["metadata"]),
                    fused_score=fused[chunk_id],
                    vector_rank=rank_of(chunk_id, vector_ids),
                    bm25_rank=rank_of(chunk_id, text_ids),
                )
            )
        return out


def rank_of(item: str, ranking: list[str]) -> int | None:
    return ranking.index(item) + 1 if item in ranking else None
