"""``crossrank batch --long-documents select --max-windows M``: the option reaches the
model replicas, which then score exactly what ``Reranker.score`` scores in select mode."""

from __future__ import annotations

import pyarrow as pa
import pytest

from crossrank import Reranker
from crossrank.batch import PairScorer
from crossrank.cli import main

QUERY = "where did the heron nest"
DOCUMENTS = [
    " ".join(f"line {i}: the {['heron', 'crow', 'wren'][i % 3]} nested here." for i in range(60)),
    "a heron nest by the lake",
]


def test_pair_scorer_passes_select_and_max_windows_to_the_reranker():
    scorer = PairScorer(long_documents="select", max_windows=1, max_length=48, raw=True)
    table = pa.table({"query": [QUERY, QUERY], "text": DOCUMENTS})
    scores = scorer(table).column("score").to_pylist()
    reference = Reranker(max_length=48)
    assert scores == reference.score(
        QUERY, DOCUMENTS, raw=True, long_documents="select", max_windows=1
    )
    chunk = reference.score(QUERY, DOCUMENTS, raw=True, long_documents="chunk")
    assert scores[0] != chunk[0]  # one window of many: not the chunk score


def test_batch_cli_refuses_max_windows_below_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["batch", str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "o.parquet"),
              "--long-documents", "select", "--max-windows", "0"])  # fmt: skip
    assert "--max-windows" in capsys.readouterr().err
