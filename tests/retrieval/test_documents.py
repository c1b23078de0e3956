from __future__ import annotations

import itertools
import json

import pytest

from crossrank.engine.hub import all_minilm_l6_v2_path
from crossrank.engine.tokenization import load_tokenizer
from crossrank.pipeline import snippet
from crossrank.retrieval.chunking import Chunker
from crossrank.retrieval.documents import read_documents


def test_reads_a_folder_of_text_and_markdown(tmp_path):
    (tmp_path / "a.md").write_text("# Alpha title\n\nbody a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("body b")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    documents = read_documents(tmp_path)
    assert [(d.id, d.title) for d in documents] == [("a.md", "Alpha title"), ("sub/b.txt", "b")]


def test_reads_jsonl_and_keeps_extra_fields_as_metadata(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": 1, "title": "T", "text": "x", "url": "u"}, {"_id": "2", "text": "y"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    first, second = read_documents(path)
    assert (first.id, first.title, first.metadata) == ("1", "T", {"url": "u"})
    assert (second.id, second.title) == ("2", "")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a"}'], "expected an object with 'id' and 'text'"),
        (['{"text": "a"}'], "has no 'id'"),
        (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], "appears twice"),
        (["not json"], "not valid JSON"),
        ([""], "holds no documents"),
    ],
)
def test_bad_jsonl_is_reported(tmp_path, lines, message):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=message):
        read_documents(path)


def test_missing_or_unusable_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_documents(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"no \.txt or \.md"):
        read_documents(tmp_path)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match=r"folder of \.txt/\.md files or a \.jsonl"):
        read_documents(tmp_path / "x.csv")


@pytest.fixture(scope="module")
def chunker():
    return Chunker(load_tokenizer(all_minilm_l6_v2_path()), max_tokens=30, overlap=8)


def test_chunks_fit_cover_the_text_overlap_and_keep_words_whole(chunker):
    text = " ".join(f"token{i} unbelievably-long-compound" for i in range(60))
    chunks = chunker(text)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        assert len(chunker.tokenizer.encode(chunk.text, add_special_tokens=False)) <= 30
        assert chunk.start == 0 or text[chunk.start - 1] == " "  # starts at a word
        assert chunk.end == len(text) or text[chunk.end] == " "  # ends at a word
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for left, right in itertools.pairwise(chunks):
        assert right.start < left.end  # neighbours overlap: no passage is lost at a cut


def test_short_and_empty_texts(chunker):
    assert [c.text for c in chunker("just this")] == ["just this"]
    assert chunker("") == [] and chunker("  \n ") == []
    with pytest.raises(ValueError, match="overlap"):
        Chunker(chunker.tokenizer, max_tokens=10, overlap=10)


def test_snippet_centres_on_a_query_word():
    text = "filler words here. " * 40 + "The answer is photosynthesis in leaves. " + "more. " * 40
    cut = snippet(text, "what is photosynthesis", width=120)
    assert "photosynthesis" in cut and cut.startswith("…") and cut.endswith("…")
    assert len(cut) <= 130
    assert snippet("short text", "q") == "short text"
