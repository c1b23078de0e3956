"""Small BEIR folders written on the fly, and slices of the shared benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossrank.evaluation.beir import load_dataset

from .beir_files import write_beir


@pytest.fixture
def toy_dataset(tmp_path) -> Path:
    corpus = {
        "d1": "The cat sat on the mat.",
        "d2": "Dogs are loyal animals that like to play fetch.",
        "d3": "Paris is the capital of France.",
        "d4": "The Eiffel Tower stands in Paris.",
        "d5": "Quantum computers use qubits.",
    }
    queries = {"q1": "where does the cat sit", "q2": "capital of France", "q3": "unused query"}
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2, "d4": 1}}
    run = {"q1": {"d2": 3.0, "d1": 2.0, "d5": 1.0}, "q2": {"d4": 2.0, "d3": 1.0}}
    return write_beir(tmp_path / "toy", corpus, queries, qrels, runs={"bm25": run})


@pytest.fixture(scope="session")
def scifact_slice(data_dir, tmp_path_factory) -> Path:
    """scifact test, first 5 queries, over their judged abstracts plus 15 others."""
    full = load_dataset(data_dir / "scifact", "test")
    qrels = dict(list(full.qrels.items())[:5])
    keep = {d for docs in qrels.values() for d in docs} | set(list(full.corpus)[:15])
    return write_beir(
        tmp_path_factory.mktemp("beir") / "scifact-slice",
        {d: full.corpus[d] for d in full.corpus if d in keep},
        {q: full.queries[q] for q in qrels},
        qrels,
        gz=True,
    )
