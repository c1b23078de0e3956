from __future__ import annotations

import numpy as np
import pytest

from crossrank.evaluation.beir import DatasetError
from crossrank.evaluation.rerank import BiEncoder, rerank_run
from crossrank.retrieval.embeddings import Embedder


class ReverseAlphabet:
    """Scores documents by reverse alphabetical order of their text."""

    def score_pairs(self, pairs):
        return [-ord(doc[0]) for _, doc in pairs]


def test_top_k_is_rescored_and_the_tail_keeps_its_order_below():
    corpus = {"a": "a", "b": "b", "c": "c", "d": "d"}
    run = {"q": {"d": 4.0, "c": 3.0, "b": 2.0, "a": 1.0}}
    reranked = rerank_run(run, {"q": "query"}, corpus, ReverseAlphabet(), top_k=2)
    order = sorted(reranked["q"], key=lambda doc: -reranked["q"][doc])
    assert order == ["c", "d", "b", "a"]


def test_a_candidate_without_text_is_an_error():
    with pytest.raises(DatasetError, match="no text in the corpus"):
        rerank_run({"q": {"x": 1.0}}, {"q": "query"}, {}, ReverseAlphabet(), top_k=5)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_biencoder_scores_are_cosine_similarities(embedder):
    scorer = BiEncoder(embedder)
    pairs = [("capital of France", "Paris is the capital of France."), ("cats", "Stock prices.")]
    vectors = embedder.encode(["capital of France", "Paris is the capital of France."])
    scores = scorer.score_pairs(pairs)
    assert scores[0] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)
    assert scores[0] > scores[1]


def test_chunking_finds_the_answer_past_the_first_window(embedder):
    filler = "The committee discussed the budget of the regional transport office. " * 40
    document = filler + "Paris is the capital of France, with its Eiffel Tower."
    assert len(embedder.tokenize([document])[0]) == embedder.max_length  # truncated
    pair = [("What is the capital of France?", document)]
    truncated = BiEncoder(embedder, "truncate").score_pairs(pair)[0]
    chunked = BiEncoder(embedder, "chunk").score_pairs(pair)[0]
    windows = embedder.windows(document)
    assert len(windows) > 1 and all(len(w) <= embedder.max_length for w in windows)
    assert chunked > truncated + 0.1
    assert np.isfinite(chunked)
