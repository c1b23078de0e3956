"""The server's per-request encoding is the engine's encoding when no option is set."""

from __future__ import annotations

import pytest

from crossrank import Reranker
from crossrank.engine.tokenization import PairEncoder, default_max_windows
from crossrank.server.encoding import EncodeOptions, encode_pairs, encode_request

from .conftest import texts

DOCUMENTS = [*texts(20, seed=5), "", "rank " * 600, "model " * 1500]
LONG_QUERY = "neural search " * 200  # over the query cap


@pytest.mark.parametrize("mode", ["chunk", "truncate", "select"])
@pytest.mark.parametrize("query", ["neural search", LONG_QUERY])
def test_no_options_give_exactly_the_engines_features(tiny_checkpoint, mode, query):
    reranker = Reranker.from_pretrained(tiny_checkpoint, device="cpu", long_documents=mode)
    encoded = encode_request(reranker.encoder, query, DOCUMENTS)
    assert encoded.features == reranker.encoder.encode(query, DOCUMENTS)
    assert encoded.query_capped == (query == LONG_QUERY)
    if mode == "truncate":
        assert encoded.truncated == [len(DOCUMENTS) - 2, len(DOCUMENTS) - 1]
    elif mode == "chunk":
        assert encoded.truncated == []  # windows cover every token


def test_select_mode_keeps_the_engines_share_of_a_long_documents_windows(reranker):
    encoder = PairEncoder(reranker.encoder.tokenizer, max_length=24, long_documents="select")
    document = "pad " * 20 * 60 + "volcano"  # 80 overlapping windows: 8 are read
    encoded = encode_request(encoder, "volcano", [document])
    assert encoded.features == encoder.encode("volcano", [document])
    assert len(encoded.features) == default_max_windows(80) == 8 and encoded.truncated == [0]


def test_options_override_the_mode_and_cap_tokens_and_windows(reranker):
    encoder = reranker.encoder
    long = "model " * 1500
    windows = encoder.encode("q", [long])
    assert len(windows) > 2
    truncated = encode_request(encoder, "q", [long], EncodeOptions(long_documents="truncate"))
    assert truncated.features == [windows[0]] and truncated.truncated == [0]
    two = encode_request(encoder, "q", [long, "short"], EncodeOptions(max_chunks_per_doc=2))
    assert two.features[:2] == windows[:2] and two.truncated == [0]
    assert two.tokens == sum(len(f) for f in two.features)
    capped = encode_request(encoder, "q", [long, "a b"], EncodeOptions(max_tokens_per_doc=3))
    assert capped.features == encoder.encode("q", ["model model model", "a b"])
    assert capped.truncated == [0]


def test_max_chunks_per_doc_reads_the_windows_bm25_ranks_best_as_select_does(reranker):
    encoder = reranker.encoder
    planted = "filler " * 1200 + "volcano eruption " * 3 + "filler " * 600
    chosen = encode_request(encoder, "volcano", [planted], EncodeOptions(max_chunks_per_doc=1))
    assert chosen.features == encoder.encode("volcano", [planted], "select", 1)
    assert chosen.truncated == [0]
    (volcano,) = encoder.tokenizer.encode("volcano", add_special_tokens=False).ids
    assert volcano in chosen.features[0].input_ids[3:]  # the planted window, not the first
    assert volcano not in encoder.encode("volcano", [planted])[0].input_ids[3:]


def test_pairs_give_each_document_its_own_querys_features(reranker):
    encoder = reranker.encoder
    queries = ["neural search", LONG_QUERY, "neural search", "a"]
    documents = [DOCUMENTS[0], DOCUMENTS[1], "rank " * 600, ""]
    encoded = encode_pairs(encoder, queries, documents)
    for index, (query, document) in enumerate(zip(queries, documents, strict=True)):
        mine = [f for f in encoded.features if f.document == index]
        alone = encoder.encode(query, [document])
        assert [(f.input_ids, f.token_type_ids) for f in mine] == [
            (f.input_ids, f.token_type_ids) for f in alone
        ]
    assert encoded.query_capped  # the long query's cap is reported
