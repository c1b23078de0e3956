"""Dense first stage: exact (brute-force) cosine search over unit vectors.

Exact search is what benchmark numbers need, and for the corpora evaluated here
(thousands to a few hundred thousand documents) a matrix product is fast enough.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from crossrank.retrieval.embeddings import Embedder
from crossrank.retrieval.fusion import Run


def top_k(query_vectors: np.ndarray, doc_vectors: np.ndarray, k: int, block: int = 256):
    """(positions, scores) of the ``k`` highest dot products per query, best first."""
    k = min(k, len(doc_vectors))
    docs = torch.from_numpy(doc_vectors)
    positions, scores = [], []
    for start in range(0, len(query_vectors), block):  # bounded memory for many queries
        sims = torch.from_numpy(query_vectors[start : start + block]) @ docs.T
        values, indices = sims.topk(k, dim=1)
        positions.append(indices.numpy())
        scores.append(values.numpy())
    return np.concatenate(positions), np.concatenate(scores)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "crossrank" / "embeddings"


def encode_corpus(
    embedder: Embedder, texts: list[str], cache: bool = True, progress: bool = False
) -> np.ndarray:
    """Embeddings of a corpus, kept on disk under the cache directory.

    Embedding a benchmark corpus on a CPU takes minutes, and dense, hybrid and repeated
    evaluations all need the same vectors. The key covers the model files and settings
    and every text, so any change gives a new entry.
    """
    key = hashlib.sha256()
    key.update(f"{embedder.path.resolve()}|{embedder.max_length}|".encode())
    for name in ("config.json", "model.safetensors"):
        file = embedder.path / name
        if file.is_file():
            stat = file.stat()
            key.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}|".encode())
    for text in texts:
        key.update(text.encode("utf-8", "surrogatepass") + b"\0")
    path = cache_dir() / f"{key.hexdigest()[:32]}.npy"
    if cache and path.is_file():
        return np.load(path)
    vectors = embedder.encode(texts, progress, "embedding corpus")
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(temporary, vectors)
        temporary.replace(path)  # atomic: a parallel run never reads half a file
    return vectors


def dense_run(
    corpus: dict[str, str],
    queries: dict[str, str],
    k: int,
    embedder: Embedder | None = None,
    progress: bool = False,
    cache: bool = True,
) -> Run:
    embedder = embedder or Embedder()
    doc_ids, query_ids = list(corpus), list(queries)
    doc_vectors = encode_corpus(embedder, [corpus[d] for d in doc_ids], cache, progress)
    query_vectors = embedder.encode([queries[q] for q in query_ids], progress, "embedding queries")
    positions, scores = top_k(query_vectors, doc_vectors, k)
    return {
        query: {doc_ids[p]: float(s) for p, s in zip(row, row_scores, strict=True)}
        for query, row, row_scores in zip(query_ids, positions, scores, strict=True)
    }
