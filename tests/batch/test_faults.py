"""A model replica killed mid-job: the job completes with every pair exactly once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pyarrow.dataset as pds
import pytest

from crossrank.batch import PairScorer, read_pairs, score_dataset
from crossrank.evaluation.beir import read_corpus, read_queries, read_run

from .test_batch import reference_scores, scores_by_pair


def scorer_that_dies_once(marks: Path, after_calls: int) -> type[PairScorer]:
    """A PairScorer that records each model load and call, and whose first replica to reach
    ``after_calls`` calls kills its own process (SIGKILL, as the OOM killer would) while
    holding a batch. Defined in a function so that Ray pickles it by value."""

    class DiesOnce(PairScorer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = 0
            with open(marks / "loads", "a") as f:
                f.write(f"{os.getpid()}\n")

        def __call__(self, batch):
            self.calls += 1
            with open(marks / "calls", "a") as f:
                f.write(f"{os.getpid()}\n")
            if self.calls == after_calls:
                try:  # O_EXCL: only one replica, once, ever gets to kill itself
                    marker = os.open(marks / "killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(marker, str(os.getpid()).encode())
                    os.close(marker)
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    return DiesOnce


@pytest.mark.slow
def test_a_killed_replica_loses_and_repeats_no_pair(local_ray, data_dir, tiny_checkpoint, tmp_path):
    folder = data_dir / "trec-dl19"
    run_path = folder / "runs" / "test.bm25.trec"
    marks = tmp_path / "marks"
    marks.mkdir()
    pairs = read_pairs(run_path, block_rows=100)  # 43 blocks of one query each
    scored = score_dataset(
        pairs,
        tiny_checkpoint,
        replicas=2,
        batch_rows=None,
        scorer=scorer_that_dies_once(marks, after_calls=5),
    )
    scored.write_parquet(str(tmp_path / "out"))

    killed = int((marks / "killed").read_text())
    assert not psutil.pid_exists(killed), "the replica that killed itself is still alive"
    calls = (marks / "calls").read_text().split()
    loads = (marks / "loads").read_text().split()
    assert killed in map(int, loads) and calls.count(str(killed)) == 5
    # Two replicas, one restarted: three model loads for 44 calls (43 blocks, one twice).
    assert len(loads) == 3 and len(calls) == 44

    table = pds.dataset(tmp_path / "out", format="parquet").to_table()
    run = read_run(run_path)
    assert table.num_rows == 4300
    got = scores_by_pair(table)  # fails on a pair written twice
    expected = reference_scores(
        tiny_checkpoint,
        run,
        read_queries(folder / "queries.jsonl"),
        read_corpus(folder / "corpus.jsonl"),
    )
    assert got == expected
