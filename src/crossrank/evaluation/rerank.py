"""Second stage of an evaluation: rescore each query's top-k first-stage documents.

A scorer is anything with ``score_pairs([(query, doc), ...]) -> list[float]``: a
cross-encoder ``Reranker`` or the ``BiEncoder`` baseline below (cosine similarity of
all-MiniLM-L6-v2 embeddings, the usual "no cross-encoder" reference point).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from crossrank.engine.tokenization import MIN_SELECTED_WINDOWS, SELECTED_SHARE, LongDocuments
from crossrank.evaluation.beir import DatasetError, Run
from crossrank.retrieval.embeddings import Embedder

# how select mode's default m (``default_max_windows``) is written in tables and plots
DEFAULT_WINDOWS_LABEL = f"{SELECTED_SHARE:.0%}, min {MIN_SELECTED_WINDOWS}"


class Scorer(Protocol):
    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


class CrossEncoder:
    """A ``Reranker`` scoring with raw logits: sigmoids saturate to 1.0 and would tie.

    ``long_documents``/``max_windows`` default to the reranker's own. ``tokens`` counts
    the tokens the model read (every window's input, padding excluded): the cost that
    separates the long-document modes.
    """

    def __init__(
        self,
        reranker,
        long_documents: LongDocuments | None = None,
        max_windows: int | None = None,
    ):
        self.reranker = reranker
        self.long_documents = long_documents or reranker.encoder.long_documents
        self.max_windows = None  # in select mode, None: a share of each document's windows
        if self.long_documents == "select":
            self.max_windows = max_windows or reranker.encoder.max_windows
        self.tokens = 0

    @property
    def label(self) -> str:
        if self.long_documents == "select":
            return f"select (m={self.windows})"
        return self.long_documents

    @property
    def windows(self) -> str:
        """Select mode's m as tables and plots write it."""
        return str(self.max_windows or DEFAULT_WINDOWS_LABEL)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        features = self.reranker.pair_features(pairs, self.long_documents, self.max_windows)
        self.tokens += sum(len(f) for f in features)
        logits = self.reranker.pool(self.reranker.logits(features), features, len(pairs))
        return [float(x) for x in logits]


class BiEncoder:
    """Cosine similarity of query and document embeddings.

    With ``long_documents="chunk"`` a document longer than the embedder's window is
    split into overlapping windows and scored by its best window (max-pooling, as the
    cross-encoder does); with ``"truncate"`` only its first window counts.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        long_documents: LongDocuments = "truncate",
        progress: bool = False,
    ):
        if long_documents not in ("truncate", "chunk"):
            raise ValueError(
                f"long_documents must be 'truncate' or 'chunk', not {long_documents!r}"
            )
        self.embedder = embedder or Embedder()
        self.long_documents = long_documents
        self.label = long_documents
        self.progress = progress  # a bar for the (slow) embedding of many long documents
        self.cache: dict[str, np.ndarray] = {}  # text -> (windows, dim): lists share docs

    def vectors(self, texts: Sequence[str], query: bool) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if not new:
            return
        if query or self.long_documents == "truncate":
            for text, vector in zip(new, self.embedder.encode(new), strict=True):
                self.cache[text] = vector[None]
            return
        windows = [self.embedder.windows(t) for t in new]
        flat = [w for ws in windows for w in ws]
        flat = self.embedder.encode_ids(
            flat, self.progress and len(flat) > 256, "embedding windows"
        )
        start = 0
        for text, ws in zip(new, windows, strict=True):
            self.cache[text] = flat[start : start + len(ws)]
            start += len(ws)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.vectors([q for q, _ in pairs], query=True)
        self.vectors([d for _, d in pairs], query=False)
        return [float((self.cache[d] @ self.cache[q][0]).max()) for q, d in pairs]


def top_docs(scores: dict[str, float], k: int | None = None) -> list[str]:
    return sorted(scores, key=lambda doc: -scores[doc])[:k]


def rerank_run(
    run: Run,
    queries: dict[str, str],
    corpus: dict[str, str],
    scorer: Scorer,
    top_k: int,
    block: int = 256,
    progress: bool = False,
) -> Run:
    """Rescore the top ``top_k`` documents of each query; the rest keep their order below.

    Keeping the tail makes deep metrics (R@100) comparable when ``top_k`` is small.
    Pairs of many queries are scored together in blocks (the engine sorts each block by
    length), which is much faster than one call per query.
    """
    pairs, slots = [], []
    for query, scores in run.items():
        for doc in top_docs(scores, top_k):
            if doc not in corpus:
                raise DatasetError(
                    f"the first stage returned document {doc!r} (query {query!r}), which has "
                    "no text in the corpus"
                )
            pairs.append((queries[query], corpus[doc]))
            slots.append((query, doc))
    new_scores = score_in_blocks(pairs, scorer, block, progress)
    return rescored_run(run, dict(zip(slots, new_scores, strict=True)), top_k)


def score_in_blocks(
    pairs: Sequence[tuple[str, str]], scorer: Scorer, block: int = 256, progress: bool = False
) -> list[float]:
    scores: list[float] = []
    with tqdm(total=len(pairs), desc="reranking", unit="pair", disable=not progress) as bar:
        for start in range(0, len(pairs), block):
            scores.extend(scorer.score_pairs(pairs[start : start + block]))
            bar.update(len(pairs[start : start + block]))
    return scores


def rescored_run(run: Run, scores: dict[tuple[str, str], float], top_k: int) -> Run:
    """Each query's top ``top_k`` by their new ``scores``, then the rest in first-stage order."""
    reranked: Run = {}
    for query, first_stage in run.items():
        ranked = top_docs(first_stage)
        reranked[query] = {doc: scores[query, doc] for doc in ranked[:top_k]}
        floor = min(reranked[query].values(), default=0.0)
        for position, doc in enumerate(ranked[top_k:], 1):
            reranked[query][doc] = floor - position
    return reranked
