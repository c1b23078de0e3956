"""Retrieve-then-rerank over your own documents.

    pipeline = Pipeline.open("my-store", model="path/to/reranker")
    pipeline.index(read_documents("docs/"))
    for hit in pipeline.search("how do I rotate the keys?", top_k=5):
        print(hit.score, hit.doc_id, hit.snippet)

The first stage (``Store.search``) fuses vector and BM25 results over chunks; the
cross-encoder then reads each candidate chunk with the query and orders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.reranker import Reranker
from crossrank.retrieval.documents import Document
from crossrank.retrieval.store import Candidate, IndexStats, Store


@dataclass
class SearchResult:
    doc_id: str
    title: str
    score: float  # the reranker's relevance in [0, 1] (fused RRF score without a reranker)
    snippet: str
    text: str  # the whole matching chunk
    chunk: int
    start: int  # character span of the chunk in the document
    end: int
    first_stage_rank: int
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def snippet(text: str, query: str, width: int = 240) -> str:
    """About ``width`` characters of ``text`` around the first query word it contains."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    words = [w for w in re.findall(r"\w+", query.lower()) if len(w) > 3]
    lowered = text.lower()
    hits = [lowered.find(w) for w in words if w in lowered]
    start = max(0, min(hits) - width // 4) if hits else 0
    start = text.rfind(" ", 0, start) + 1 if start else 0  # do not cut a word
    end = min(len(text), start + width)
    if end < len(text):
        end = max(text.rfind(" ", start, end), start + width // 2)
    return ("… " if start else "") + text[start:end] + (" …" if end < len(text) else "")


class Pipeline:
    def __init__(self, store: Store, reranker: Reranker | None):
        """``reranker=None`` returns the first stage's order (no second stage)."""
        self.store = store
        self.reranker = reranker

    @classmethod
    def open(
        cls,
        store: str | Path,
        model: str | Path | None = None,
        rerank: bool = True,
        device: str | None = None,
        long_documents: str | None = None,
        create: bool = False,
    ) -> Pipeline:
        """The store at ``store`` and a reranker (default: the package's default model)."""
        opened = Store(store, create=create)
        reranker = (
            Reranker.from_pretrained(model, device=device, long_documents=long_documents)
            if rerank
            else None
        )
        return cls(opened, reranker)

    def index(self, documents: list[Document], prune: bool = False) -> IndexStats:
        return self.store.index(documents, prune=prune)

    def search(
        self, query: str, top_k: int = 10, candidates: int = 100, per_document: bool = True
    ) -> list[SearchResult]:
        """The ``top_k`` best chunks for ``query`` (with ``per_document``: one per document)."""
        if top_k < 1 or candidates < 1:
            raise ValueError("top_k and candidates must be at least 1")
        found = self.store.search(query, max(candidates, top_k))
        if self.reranker is not None and found:
            contents = [f"{c.title}\n{c.text}" if c.title else c.text for c in found]
            logits = self.reranker.score(query, contents, raw=True)
            scores = [self.reranker.activate(x) for x in logits]
            # order by logit: sigmoids of confident models saturate at 1.0 and would tie
            order = sorted(range(len(found)), key=lambda i: -logits[i])
        else:
            scores = [c.fused_score for c in found]
            order = list(range(len(found)))
        results, seen = [], set()
        for i in order:
            candidate = found[i]
            if per_document and candidate.doc_id in seen:
                continue
            seen.add(candidate.doc_id)
            results.append(self.result(candidate, scores[i], i + 1, query))
            if len(results) == top_k:
                break
        return results

    @staticmethod
    def result(candidate: Candidate, score: float, rank: int, query: str) -> SearchResult:
        return SearchResult(
            doc_id=candidate.doc_id,
            title=candidate.title,
            score=score,
            snippet=snippet(candidate.text, query),
            text=candidate.text,
            chunk=candidate.chunk,
            start=candidate.start,
            end=candidate.end,
            first_stage_rank=rank,
            metadata=candidate.metadata,
        )
