"""`crossrank batch` input mistakes: one clear line each, before Ray starts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossrank.batch.inputs import resolve_input
from crossrank.cli import main


@pytest.fixture
def batch_error(tmp_path, monkeypatch):
    """Run `crossrank batch INPUT`; the one-line error it stops with, before Ray starts."""
    import ray

    def start_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the input was checked")

    # as if no Ray were running (another test may have left one), and starting one fails
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", start_ray)

    def run(input_path: Path | str) -> str:
        with pytest.raises(SystemExit) as stop:
            main(["batch", str(input_path), "--out", str(tmp_path / "scores.parquet")])
        message = str(stop.value)
        assert "\n" not in message and "Traceback" not in message
        return message

    return run


@pytest.fixture
def beir_folder(tmp_path) -> Path:
    folder = tmp_path / "set"
    (folder / "runs").mkdir(parents=True)
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what"}) + "\n")
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "that"}) + "\n")
    return folder


def test_a_beir_folder_with_one_run_is_read_as_that_run(data_dir):
    run = data_dir / "trec-dl19" / "runs" / "test.bm25.trec"
    assert resolve_input(str(data_dir / "trec-dl19")) == str(run)


def test_a_missing_path_is_one_line_saying_what_input_may_be(tmp_path, batch_error):
    message = batch_error(tmp_path / "nowhere")
    assert "no such file or folder" in message and "INPUT may be a BEIR folder" in message


def test_a_beir_folder_without_a_run_is_refused_up_front(beir_folder, batch_error):
    message = batch_error(beir_folder)
    assert "BEIR folder without a run (runs/*.trec)" in message


def test_a_beir_folder_with_several_runs_names_them(beir_folder, batch_error):
    for name in ("test.bm25.trec", "test.dense.trec"):
        (beir_folder / "runs" / name).write_text("q1 Q0 d1 1 1.0 x\n")
    message = batch_error(beir_folder)
    assert "holds 2 runs" in message and "test.dense.trec" in message


def test_a_run_whose_folder_has_no_corpus_says_pass_beir(beir_folder, batch_error):
    (beir_folder / "runs" / "test.bm25.trec").write_text("q1 Q0 d1 1 1.0 x\n")
    (beir_folder / "corpus.jsonl").unlink()
    message = batch_error(beir_folder / "runs" / "test.bm25.trec")
    assert "no corpus.jsonl" in message and "--beir" in message


def test_pairs_without_the_needed_columns_name_what_they_have(beir_folder, tmp_path, batch_error):
    # the natural first try: the corpus file itself, whose rows are documents, not pairs
    message = batch_error(beir_folder / "corpus.jsonl")
    assert "lacks the column(s) query" in message and "(it has: _id, text)" in message
    table = pa.table({"query_id": ["q"], "query": ["what"], "doc": ["that"]})
    pq.write_table(table, tmp_path / "pairs.parquet")
    assert "lacks the column(s) text" in batch_error(tmp_path / "pairs.parquet")


def test_empty_inputs_are_refused(tmp_path, batch_error):
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "holds no pairs" in batch_error(tmp_path / "empty.jsonl")
    pq.write_table(pa.table({"query": pa.array([], pa.string())}), tmp_path / "e.parquet")
    assert "holds no pairs" in batch_error(tmp_path / "e.parquet")
    (tmp_path / "folder").mkdir()
    assert "holds no .parquet or .jsonl files" in batch_error(tmp_path / "folder")
    shutil.copy(tmp_path / "empty.jsonl", tmp_path / "folder" / "x.txt")
    assert "holds no .parquet or .jsonl files" in batch_error(tmp_path / "folder")


def test_an_unreadable_jsonl_is_one_line(tmp_path, batch_error):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert "cannot be read" in batch_error(tmp_path / "bad.jsonl")
