"""Properties of the server's request encoding and scoring, for any query and documents.

The query is never dropped, every document gets exactly one score, scores do not depend
on the order of the documents, and a document's windows cover all of it (or the request
says it was cut).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrank import Reranker
from crossrank.server.encoding import EncodeOptions, encode_request
from server.conftest import WORDS

SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
# Words the tokenizer knows, and any text at all (control characters, emoji, blanks).
word_text = st.lists(st.sampled_from(WORDS), max_size=900).map(" ".join)
any_text = st.text(max_size=300)
documents = st.lists(st.one_of(word_text, any_text), max_size=8)
queries = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=200).map(" ".join), any_text
)
options = st.builds(
    EncodeOptions,
    long_documents=st.sampled_from([None, "chunk", "truncate"]),
    max_tokens_per_doc=st.none() | st.integers(1, 1000),
    max_chunks_per_doc=st.none() | st.integers(1, 4),
)


def document_part(ids: list[int], query_length: int) -> list[int]:
    """The document tokens of a BERT pair input: [CLS] query [SEP] document [SEP]."""
    return ids[2 + query_length : -1]


@SETTINGS
@given(query=queries, documents=documents, options=options)
def test_the_query_leads_every_input_and_every_document_is_present(
    reranker, query, documents, options
):
    encoder = reranker.encoder
    tokenizer = encoder.tokenizer
    query_ids = tokenizer.encode(query, add_special_tokens=False).ids[: encoder.query_max_length]
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    encoded = encode_request(encoder, query, documents, options)
    for feature in encoded.features:
        ids = list(feature.input_ids)
        assert len(ids) <= encoder.max_length
        # The query, capped but never dropped or cut for the document's sake.
        assert ids[: 2 + len(query_ids)] == [cls, *query_ids, sep] and ids[-1] == sep
    # Inputs in document order, and every document has at least one.
    assert [f.document for f in encoded.features] == sorted(f.document for f in encoded.features)
    assert {f.document for f in encoded.features} == set(range(len(documents)))
    assert encoded.query_capped == (
        len(tokenizer.encode(query, add_special_tokens=False)) > encoder.query_max_length
    )


@SETTINGS
@given(query=queries, documents=documents, options=options)
def test_windows_cover_each_document_unless_it_is_reported_cut(reranker, query, documents, options):
    encoder = reranker.encoder
    tokenizer = encoder.tokenizer
    query_length = min(
        len(tokenizer.encode(query, add_special_tokens=False)), encoder.query_max_length
    )
    encoded = encode_request(encoder, query, documents, options)
    for index, document in enumerate(documents):
        ids = tokenizer.encode(document, add_special_tokens=False).ids
        windows = [
            document_part(list(f.input_ids), query_length)
            for f in encoded.features
            if f.document == index
        ]
        # Each window is a run of the document's tokens, starting where the last one began
        # or later, and no later than where it ended: no gap between windows.
        covered = 0
        start = 0
        for window in windows:
            assert window or not ids  # an empty window only for an empty document
            found = next(
                (s for s in range(start, covered + 1) if ids[s : s + len(window)] == window), None
            )
            assert found is not None, "a window is not the next run of the document's tokens"
            start, covered = found, max(covered, found + len(window))
        if index in encoded.truncated:
            assert covered < len(ids)
        else:
            assert covered == len(ids), "a document was not read in full and not reported"


@settings(SETTINGS, max_examples=30)  # each example runs the model twice
@given(
    query=queries,
    documents=st.lists(st.one_of(word_text, any_text), min_size=1, max_size=6),
    data=st.data(),
)
def test_one_score_per_document_whatever_their_order(reranker, query, documents, data):
    def scores(texts: list[str]) -> np.ndarray:
        # What the service does: encode, score every input, pool windows per document.
        encoded = encode_request(reranker.encoder, query, texts)
        logits = reranker.logits(encoded.features)
        return Reranker.pool(logits, encoded.features, len(texts))

    order = data.draw(st.permutations(range(len(documents))))
    straight = scores(documents)
    shuffled = scores([documents[i] for i in order])
    assert len(straight) == len(documents) and np.isfinite(straight).all()
    # Equal up to float32 rounding: batch composition changes the order of the model's sums.
    np.testing.assert_allclose(shuffled, straight[order], atol=1e-5)
