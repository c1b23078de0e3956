from __future__ import annotations

import itertools
import logging

import pytest

from crossrank.engine.hub import all_minilm_l6_v2_path
from crossrank.engine.tokenization import PairEncoder, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(all_minilm_l6_v2_path())


def split_pair(tokenizer, features):
    """(query tokens, document tokens) of a [CLS] q [SEP] d [SEP] input."""
    tokens = [tokenizer.id_to_token(i) for i in features.input_ids]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    middle = tokens.index("[SEP]")
    return tokens[1:middle], tokens[middle + 1 : -1]


def test_pair_uses_the_checkpoints_template_and_token_types(tokenizer):
    encoder = PairEncoder(tokenizer, max_length=64)
    [features] = encoder.encode("what is alibi", ["attention with linear biases"])
    query, document = split_pair(tokenizer, features)
    assert query == ["what", "is", "ali", "##bi"]
    assert document == ["attention", "with", "linear", "bias", "##es"]
    assert features.token_type_ids == [0] * 6 + [1] * 6


def test_the_bundled_128_token_truncation_and_padding_are_not_applied(tokenizer):
    encoder = PairEncoder(tokenizer, max_length=512)
    [features] = encoder.encode("q", ["word " * 300])
    assert len(features) == 304  # [CLS] q [SEP] 300 words [SEP], no padding


def test_long_query_is_capped_and_the_document_keeps_the_rest(tokenizer, caplog):
    encoder = PairEncoder(tokenizer, max_length=64)  # query cap: a quarter = 16 tokens
    # at WARNING whatever an earlier test set (crossrank train quiets this logger)
    with caplog.at_level(logging.WARNING, logger="crossrank.engine.tokenization"):
        [features] = encoder.encode("query " * 100, ["document " * 100])
    query, document = split_pair(tokenizer, features)
    assert len(features) == 64
    assert query == ["query"] * 16
    assert document == ["document"] * (64 - 3 - 16)
    assert "capped" in caplog.text


def test_short_query_leaves_more_room_for_the_document(tokenizer):
    encoder = PairEncoder(tokenizer, max_length=64, query_max_length=20)
    [features] = encoder.encode("short", ["document " * 100])
    query, document = split_pair(tokenizer, features)
    assert query == ["short"] and len(document) == 64 - 3 - 1


def test_chunk_windows_overlap_and_cover_the_whole_document(tokenizer):
    encoder = PairEncoder(tokenizer, max_length=32, long_documents="chunk", overlap=4)
    words = [f"w{i}" for i in range(100)]  # each word is 2+ tokens; use ids to compare
    document = " ".join(words)
    whole = encoder.tokenizer.encode(document, add_special_tokens=False).ids
    features = encoder.encode("q", [document, "short one"])
    windows = [f for f in features if f.document == 0]
    assert [f.document for f in features[len(windows) :]] == [1]
    budget = 32 - 3 - 1
    pieces = [f.input_ids[3:-1] for f in windows]
    assert all(len(p) <= budget for p in pieces)
    rebuilt = list(pieces[0])
    for previous, piece in itertools.pairwise(pieces):
        assert piece[:4] == previous[-4:]  # consecutive windows share the overlap
        rebuilt += piece[4:]
    assert rebuilt == whole


def test_query_cap_must_leave_room_for_a_document(tokenizer):
    with pytest.raises(ValueError, match="no room"):
        PairEncoder(tokenizer, max_length=16, query_max_length=13)
    with pytest.raises(ValueError, match="long_documents"):
        PairEncoder(tokenizer, max_length=64, long_documents="split")
