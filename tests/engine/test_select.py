"""Windows and select-then-score: the windows match the tokenizer's own overflow, select
mode reads exactly the BM25-best windows, and with enough windows it equals chunk mode."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from crossrank import Reranker
from crossrank.engine.hub import all_minilm_l6_v2_path
from crossrank.engine.tokenization import (
    BM25_B,
    BM25_K1,
    PairEncoder,
    default_max_windows,
    load_tokenizer,
    rank_windows,
    window_starts,
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(all_minilm_l6_v2_path())


@pytest.fixture(scope="module")
def reranker():
    return Reranker(max_length=48, long_documents="chunk", device="cpu")


def reference_features(encoder: PairEncoder, query: str, document: str, mode: str):
    """The pre-select implementation: Encoding.truncate(stride) and post_process per window."""
    tokenizer = encoder.tokenizer
    query_encoding = encoder.encode_query(query)
    budget = encoder.max_length - encoder.num_special - len(query_encoding)
    encoding = tokenizer.encode(document, add_special_tokens=False)
    if len(encoding) <= budget:
        windows = [encoding]
    elif mode == "truncate":
        encoding.truncate(budget)
        windows = [encoding]
    else:
        encoding.truncate(budget, stride=encoder.window_overlap(budget))
        windows = [encoding, *encoding.overflowing]
    pairs = [tokenizer.post_process(query_encoding, w) for w in windows]
    return [(p.ids, p.type_ids) for p in pairs]


def test_window_starts_match_the_tokenizers_overflow(tokenizer):
    ids_source = tokenizer.encode(" ".join(f"w{i}" for i in range(60)), add_special_tokens=False)
    for length in range(1, 60, 7):
        for budget in (3, 8, 13, 40):
            for overlap in range(budget):
                encoding = tokenizer.encode(
                    tokenizer.decode(ids_source.ids[:length]), add_special_tokens=False
                )
                ids = encoding.ids
                encoding.truncate(budget, stride=overlap)
                expected = [encoding.ids] + [o.ids for o in encoding.overflowing]
                got = [ids[s : s + budget] for s in window_starts(len(ids), budget, overlap)]
                assert got == expected, (length, budget, overlap)


@pytest.mark.parametrize("mode", ["truncate", "chunk"])
def test_truncate_and_chunk_inputs_are_unchanged(tokenizer, mode):
    encoder = PairEncoder(tokenizer, max_length=40, long_documents=mode, overlap=5)
    documents = ["short one", "a much longer document " * 30, "x " * 37, "y " * 200]
    features = encoder.encode("which document is long", documents)
    expected = [
        pair
        for document in documents
        for pair in reference_features(encoder, "which document is long", document, mode)
    ]
    assert [(f.input_ids, f.token_type_ids) for f in features] == expected


def test_select_with_enough_windows_equals_chunk(tokenizer, reranker):
    document = " ".join(f"sentence {i} about topic {i % 7}." for i in range(80))
    query = "topic 3"
    chunk = reranker.encoder.encode(query, [document, "tiny"], long_documents="chunk")
    windows = sum(f.document == 0 for f in chunk)
    assert windows > 3
    select = reranker.encoder.encode(
        query, [document, "tiny"], long_documents="select", max_windows=windows
    )
    assert select == chunk
    chunk_scores = reranker.score(query, [document, "tiny"], raw=True, long_documents="chunk")
    select_scores = reranker.score(
        query, [document, "tiny"], raw=True, long_documents="select", max_windows=windows + 5
    )
    assert select_scores == chunk_scores


def test_select_reads_the_bm25_best_windows(tokenizer):
    encoder = PairEncoder(tokenizer, max_length=24, long_documents="select", overlap=0)
    budget = 24 - 3 - 1  # query "zebra" is one token
    filler = ["pad"] * budget
    windows = [list(filler) for _ in range(6)]
    windows[4][3] = "zebra"  # one mention
    windows[1][2:5] = ["zebra"] * 3  # three mentions: the best window
    document = " ".join(word for window in windows for word in window)
    assert len(encoder.tokenizer.encode(document, add_special_tokens=False)) == 6 * budget
    one = encoder.encode("zebra", [document], max_windows=1)
    two = encoder.encode("zebra", [document], max_windows=2)
    assert [f.input_ids[3:-1].count(encoder.tokenizer.token_to_id("zebra")) for f in one] == [3]
    # the two best, kept in document order: window 1 (three mentions), then window 4 (one)
    assert [f.input_ids[3:-1].count(encoder.tokenizer.token_to_id("zebra")) for f in two] == [
        3,
        1,
    ]
    assert all(len(f) == 24 for f in two)  # token counts: m full windows, nothing else


def test_select_reads_a_tenth_of_a_long_documents_windows_by_default(tokenizer):
    assert [default_max_windows(n) for n in (1, 30, 31, 100)] == [3, 3, 4, 10]
    encoder = PairEncoder(tokenizer, max_length=24, long_documents="select", overlap=0)
    budget = 24 - 3 - 1  # query "zebra" is one token
    for windows, kept in ((45, 5), (12, 3)):
        document = " ".join(["pad"] * budget * windows)
        assert len(encoder.encode("zebra", [document])) == kept
        assert len(encoder.encode("zebra", [document], max_windows=2)) == 2


def bm25_reference(query_ids, windows):
    """BM25 of each window, written out term by term (Lucene idf, k1/b as crossrank's)."""
    average = sum(len(w) for w in windows) / len(windows)
    scores = []
    for window in windows:
        score = 0.0
        for term in query_ids:  # a repeated query term counts once per repeat
            tf = window.count(term)
            df = sum(term in w for w in windows)
            idf = math.log(1 + (len(windows) - df + 0.5) / (df + 0.5))
            norm = BM25_K1 * (1 - BM25_B + BM25_B * len(window) / average)
            score += idf * tf * (BM25_K1 + 1) / (tf + norm)
        scores.append(score)
    return scores


def test_rank_windows_is_bm25_over_the_windows():
    generator = random.Random(0)
    for _ in range(30):
        ids = np.array([generator.randrange(12) for _ in range(generator.randrange(20, 90))])
        budget, overlap = generator.randrange(5, 15), generator.randrange(0, 4)
        query = [generator.randrange(12) for _ in range(generator.randrange(1, 5))]
        starts = window_starts(len(ids), budget, overlap)
        windows = [ids[s : s + budget].tolist() for s in starts]
        expected = bm25_reference(query, windows)
        order = rank_windows(query, ids, budget, overlap)
        assert sorted(order.tolist()) == list(range(len(windows)))
        got = [expected[i] for i in order]
        assert got == sorted(expected, reverse=True)  # best first
        for a, b in itertools.pairwise(order):  # ties keep document order
            if math.isclose(expected[a], expected[b]):
                assert a < b


def test_select_scores_are_the_best_chosen_window(reranker):
    document = " ".join(f"line {i}: the {['cat', 'dog', 'bird'][i % 3]} sat." for i in range(60))
    query = "where did the dog sit"
    windows = reranker.encoder.encode(query, [document], long_documents="chunk")
    logits = reranker.logits(windows)
    chosen = reranker.encoder.encode(query, [document], long_documents="select", max_windows=2)
    assert len(chosen) == 2 and all(c in windows for c in chosen)
    [score] = reranker.score(query, [document], raw=True, long_documents="select", max_windows=2)
    assert score == pytest.approx(max(logits[windows.index(c)] for c in chosen), abs=1e-5)
    assert score <= max(logits) + 1e-5


def test_select_per_call_and_at_construction_agree(reranker):
    documents = ["alpha beta " * 60, "gamma delta " * 50, "short"]
    built = Reranker(max_length=48, long_documents="select", max_windows=2, device="cpu")
    assert built.score("beta", documents) == reranker.score(
        "beta", documents, long_documents="select", max_windows=2
    )
    pairs = [("beta", d) for d in documents] + [("gamma", documents[1])]
    assert built.score_pairs(pairs)[:3] == built.score("beta", documents)


def test_max_windows_errors(tokenizer, reranker):
    with pytest.raises(ValueError, match="max_windows must be"):
        reranker.rerank("q", ["d"], long_documents="select", max_windows=0)
    with pytest.raises(ValueError, match="applies to long_documents='select'"):
        reranker.rerank("q", ["d"], max_windows=2)  # this reranker chunks by default
    with pytest.raises(ValueError, match="applies to long_documents='select'"):
        PairEncoder(tokenizer, max_length=64, long_documents="chunk", max_windows=2)
    with pytest.raises(ValueError, match="long_documents must be one of"):
        reranker.rerank("q", ["d"], long_documents="windows")


def test_each_distinct_document_is_tokenised_once(tokenizer, monkeypatch):
    encoder = PairEncoder(tokenizer, max_length=64, long_documents="select")
    seen = []
    original = encoder.tokenizer.encode_batch

    class Counting:
        def __getattr__(self, name):
            return getattr(original.__self__, name)

        def encode_batch(self, texts, **options):
            seen.extend(texts)
            return original(texts, **options)

    monkeypatch.setattr(encoder, "tokenizer", Counting())
    encoder.encode("q one", ["doc a " * 50, "doc b", "doc a " * 50])
    encoder.encode("q two", ["doc b", "doc c"])
    assert sorted(seen) == sorted(["doc a " * 50, "doc b", "doc c"])


def test_rerank_cli_select_mode(tmp_path, capsys):
    import json

    from crossrank.cli import main

    documents = tmp_path / "documents.txt"
    text = " ".join(f"row {i} holds the {['key', 'lock', 'door'][i % 3]}." for i in range(50))
    documents.write_text(f"{text}\nthe lock and the key\n")
    main(["rerank", str(documents), "-q", "which row holds the door", "--max-length", "48",
          "--long-documents", "select", "--max-windows", "1"])  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    expected = Reranker(max_length=48, long_documents="select", max_windows=1).rerank(
        "which row holds the door", [text, "the lock and the key"]
    )
    assert [(r["index"], r["relevance_score"]) for r in printed] == [
        (r.index, r.relevance_score) for r in expected
    ]
    with pytest.raises(SystemExit, match="max_windows applies"):
        main(["rerank", str(documents), "-q", "q", "--max-windows", "2"])
