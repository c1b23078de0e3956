from __future__ import annotations

import pytest

from crossrank.evaluation.beir import DatasetError, load_dataset, read_run, write_run

from .beir_files import write_beir


def test_loads_corpus_judged_queries_qrels_and_runs(toy_dataset):
    dataset = load_dataset(toy_dataset, "test")
    assert dataset.name == "toy"
    assert len(dataset.corpus) == 5
    assert set(dataset.queries) == {"q1", "q2"}  # q3 is not judged in this split
    assert dataset.qrels["q2"] == {"d3": 2, "d4": 1}
    assert dataset.runs == ["bm25"]
    assert read_run(dataset.run_path("bm25"))["q1"] == {"d2": 3.0, "d1": 2.0, "d5": 1.0}


def test_gzip_corpus_and_titles(tmp_path):
    folder = write_beir(tmp_path / "gz", {"a": "text a"}, {"q": "x"}, {"q": {"a": 1}}, gz=True)
    assert load_dataset(folder).corpus == {"a": "text a"}


def test_missing_split_names_the_splits_there(toy_dataset):
    with pytest.raises(DatasetError, match=r"no split 'dev'.*splits: test"):
        load_dataset(toy_dataset, "dev")


@pytest.mark.parametrize(
    ("remove", "message"),
    [("corpus.jsonl", "no corpus.jsonl"), ("queries.jsonl", "no queries.jsonl")],
)
def test_missing_files_are_named(toy_dataset, remove, message):
    (toy_dataset / remove).unlink()
    with pytest.raises(DatasetError, match=message):
        load_dataset(toy_dataset)


def test_empty_corpus_and_bad_lines_are_reported(toy_dataset):
    (toy_dataset / "corpus.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="holds no documents"):
        load_dataset(toy_dataset)
    (toy_dataset / "corpus.jsonl").write_text('{"_id": "a", "text": "ok"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"corpus.jsonl:2: not valid JSON"):
        load_dataset(toy_dataset)


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match="no dataset folder"):
        load_dataset(tmp_path / "nope")


def test_run_round_trip(tmp_path):
    run = {"q1": {"a": 0.5, "b": 1.5}, "q2": {"c": -1.0}}
    write_run(run, tmp_path / "x.trec")
    assert read_run(tmp_path / "x.trec") == run
    lines = (tmp_path / "x.trec").read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", "b", "1"]  # best first, ranks from 1
