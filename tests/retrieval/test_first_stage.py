from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrank.retrieval.bm25 import BM25, bm25_run
from crossrank.retrieval.dense import encode_corpus, top_k
from crossrank.retrieval.embeddings import Embedder
from crossrank.retrieval.fusion import fuse_runs, rrf

CORPUS = {
    "a": "The quick brown fox jumps over the lazy dog.",
    "b": "Foxes are small omnivorous mammals.",
    "c": "Stock markets fell sharply on Monday.",
}


def test_bm25_ranks_matching_documents_and_drops_the_rest():
    run = bm25_run(CORPUS, {"q": "fox mammals"}, k=10)
    assert list(run["q"]) == ["b", "a"]  # "c" shares no term: left out, not ranked last
    assert run["q"]["b"] > run["q"]["a"] > 0


def test_bm25_stems_plurals():
    run = bm25_run(CORPUS, {"q": "markets"}, k=10)
    assert list(run["q"]) == ["c"]
    assert "c" in bm25_run(CORPUS, {"q": "market"}, k=10)["q"]


def test_bm25_needs_documents():
    with pytest.raises(ValueError, match="empty corpus"):
        BM25([])


def test_rrf_sums_reciprocal_ranks():
    fused = rrf([["x", "y"], ["y", "z"]], k=60)
    assert fused["y"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["x"] == pytest.approx(1 / 61)
    assert max(fused, key=fused.get) == "y"  # found by both lists
    runs = [{"q": {"x": 9.0, "y": 5.0}}, {"q": {"y": 0.9, "z": 0.1}}]
    assert list(fuse_runs(runs, depth=2)["q"]) == ["y", "x"]


def test_dense_top_k_is_exact():
    rng = np.random.default_rng(0)
    queries, docs = rng.normal(size=(5, 8)).astype("f4"), rng.normal(size=(50, 8)).astype("f4")
    positions, scores = top_k(queries, docs, k=7, block=2)
    expected = np.argsort(-(queries @ docs.T), axis=1)[:, :7]
    assert (positions == expected).all()
    assert np.allclose(scores, np.take_along_axis(queries @ docs.T, expected, 1), atol=1e-5)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_embeddings_match_the_sentence_transformers_recipe(embedder):
    """transformers BertModel + mean pooling + L2 norm at 256 tokens, as in ST's config."""
    from transformers import AutoModel, AutoTokenizer

    texts = ["hello world", "A cat. " * 200, "Ünïcode — text", "x"]  # the 2nd is truncated
    tokenizer = AutoTokenizer.from_pretrained(str(embedder.path))
    model = AutoModel.from_pretrained(str(embedder.path)).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    ours = embedder.encode(texts)
    assert ours.shape == (4, 384)
    assert np.abs(ours - reference.numpy()).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_embedder_input_checks(embedder):
    assert embedder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of texts"):
        embedder.encode("a single string")


def test_corpus_embeddings_are_cached_on_disk(embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    texts = list(CORPUS.values())
    first = encode_corpus(embedder, texts)
    assert len(list((tmp_path / "crossrank" / "embeddings").glob("*.npy"))) == 1
    monkeypatch.setattr(embedder, "encode", lambda *a, **k: pytest.fail("not cached"))
    assert np.array_equal(encode_corpus(embedder, texts), first)
    with pytest.raises(pytest.fail.Exception):  # another corpus is another entry
        encode_corpus(embedder, texts[:2])
