"""The LanceDB store and the two-stage pipeline on a handful of documents."""

from __future__ import annotations

import json

import pytest

from crossrank.cli import main
from crossrank.pipeline import Pipeline
from crossrank.reranker import Reranker
from crossrank.retrieval.documents import Document
from crossrank.retrieval.embeddings import Embedder
from crossrank.retrieval.store import Store

LONG = "The committee reviewed the regional transport budget in detail. " * 30
DOCUMENTS = [
    Document("cats", "Cats are small carnivorous mammals that sleep most of the day.", "Cats"),
    Document("paris", "The Eiffel Tower is a wrought-iron lattice tower in Paris.", "Paris"),
    Document("rust", LONG + "Rust is a programming language focused on memory safety.", "Rust"),
    Document("zx", "Order number ZX-48213 shipped on Tuesday.", "", {"source": "crm"}),
]


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def store(tmp_path, embedder):
    store = Store(tmp_path / "store", embedder, chunk_tokens=64, overlap=16)
    store.index(DOCUMENTS)
    return store


def chunk_ids(store):
    rows = store.table.search().select(["id"]).limit(1000).to_arrow()
    return sorted(rows["id"].to_pylist())


def test_index_chunks_long_documents_and_finds_by_meaning_and_by_term(store):
    ids = chunk_ids(store)
    assert sum(i.startswith("rust#") for i in ids) > 3  # the long document is chunked
    assert len(ids) == len(store)
    by_meaning = store.search("which language is memory safe?", candidates=5)
    assert by_meaning[0].doc_id == "rust"
    assert "memory safety" in by_meaning[0].text
    by_term = store.search("ZX-48213", candidates=5)  # a rare code: BM25 ranks it first
    assert by_term[0].doc_id == "zx" and by_term[0].bm25_rank == 1
    assert by_term[0].metadata == {"source": "crm"}
    top = by_meaning[0]
    assert top.text == DOCUMENTS[2].text[top.start : top.end]


def test_reindexing_updates_instead_of_duplicating(store, tmp_path, embedder):
    before = chunk_ids(store)
    stats = store.index(DOCUMENTS)
    assert (stats.added, stats.updated, stats.unchanged, stats.chunks) == (0, 0, 4, 0)
    assert chunk_ids(store) == before
    # a shorter new version: its extra old chunks must disappear, nothing else changes
    changed = [*DOCUMENTS[:2], Document("rust", "Rust has a borrow checker.", "Rust"), DOCUMENTS[3]]
    stats = Store(tmp_path / "store", embedder).index(changed)
    assert (stats.added, stats.updated, stats.unchanged) == (0, 1, 3)
    after = chunk_ids(Store(tmp_path / "store", embedder, create=False))
    assert [i for i in after if i.startswith("rust#")] == ["rust#0"]
    assert [i for i in after if not i.startswith("rust#")] == [
        i for i in before if not i.startswith("rust#")
    ]
    assert store.search("borrow checker", 3)[0].doc_id == "rust"  # text index refreshed
    stats = store.index(DOCUMENTS[:1], prune=True)
    assert stats.removed == 3 and {c.doc_id for c in store.search("tower", 10)} == {"cats"}


def test_store_errors(tmp_path, embedder, store):
    with pytest.raises(FileNotFoundError, match="no crossrank store"):
        Store(tmp_path / "missing", embedder, create=False)
    with pytest.raises(ValueError, match="query is empty"):
        store.search("  ")
    with pytest.raises(ValueError, match="is empty: index documents first"):
        Store(tmp_path / "new", embedder).search("anything")


def test_store_refuses_another_embedding_model(store, tiny_checkpoint):
    other = Embedder(tiny_checkpoint)
    with pytest.raises(ValueError, match="built with embeddings of 'all-MiniLM-L6-v2'"):
        Store(store.path, other)


def test_pipeline_reranks_and_returns_one_result_per_document(store, tiny_checkpoint):
    pipeline = Pipeline(store, Reranker.from_pretrained(tiny_checkpoint))
    results = pipeline.search("memory safe language", top_k=3, candidates=20)
    assert len(results) == 3
    assert len({r.doc_id for r in results}) == 3
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    chunks = pipeline.search("memory safe language", top_k=5, candidates=20, per_document=False)
    assert len(chunks) == 5
    # the tiny random reranker does reorder: its order differs from the first stage's
    first_stage = Pipeline(store, None).search("memory safe language", 5, 20, per_document=False)
    assert [r.first_stage_rank for r in first_stage] == [1, 2, 3, 4, 5]
    assert [r.first_stage_rank for r in chunks] != [1, 2, 3, 4, 5]


def test_index_and_search_commands(tmp_path, tiny_checkpoint, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(vars(d) | {"metadata": None}) for d in DOCUMENTS))
    store = str(tmp_path / "cli-store")
    main(["index", str(docs), "--store", store])
    main(["index", str(docs), "--store", store])
    printed = capsys.readouterr().out.splitlines()
    assert "4 added" in printed[0] and "4 unchanged" in printed[1]
    main(["search", "Eiffel tower", "--store", store, "--model", str(tiny_checkpoint), "--json"])
    results = json.loads(capsys.readouterr().out)
    assert {r["doc_id"] for r in results} == {"cats", "paris", "rust", "zx"}
    main(["search", "Eiffel tower", "--store", store, "--no-rerank", "-k", "1"])
    assert "paris" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no crossrank store"):
        main(["search", "x", "--store", str(tmp_path / "none"), "--no-rerank"])


def test_empty_documents_are_skipped_and_emptying_one_removes_it(store):
    stats = store.index([Document("blank", "  \n")])
    assert (stats.added, stats.empty) == (0, 1)
    stats = store.index([Document("paris", "")])
    assert (stats.removed, stats.empty) == (1, 1)
    assert "paris" not in {c.doc_id for c in store.search("Eiffel tower", 20)}
