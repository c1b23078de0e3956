"""`crossrank batch` on a local 2-CPU Ray instance: every DL19 pair once, with the scores
of Reranker.score; the Parquet and JSONL inputs; bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from crossrank import Reranker
from crossrank.batch import COLUMNS, PairScorer, read_pairs, score_dataset
from crossrank.batch.cli import check_cpus
from crossrank.cli import main
from crossrank.evaluation.beir import DatasetError, read_corpus, read_queries, read_run


def dl19_run(data_dir):
    folder = data_dir / "trec-dl19"
    return folder / "runs" / "test.bm25.trec", folder


def reference_scores(model, run, queries, corpus) -> dict[tuple[str, str], float]:
    """What Reranker.score gives each pair, a query's candidates scored together."""
    reranker = Reranker(model)
    expected = {}
    for qid, docs in run.items():
        scores = reranker.score(queries[qid], [corpus[d] for d in docs])
        expected.update({(qid, d): s for d, s in zip(docs, scores, strict=True)})
    return expected


def scores_by_pair(table: pa.Table) -> dict[tuple[str, str], float]:
    rows = zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "score")), strict=True)
    scores = {}
    for qid, doc, score in rows:
        assert (qid, doc) not in scores, f"pair {(qid, doc)} scored twice"
        scores[(qid, doc)] = score
    return scores


@pytest.mark.slow
def test_batch_scores_every_dl19_pair_once_as_reranker_score(
    local_ray, data_dir, tiny_checkpoint, tmp_path
):
    run_path, folder = dl19_run(data_dir)
    out, trec = tmp_path / "scores.parquet", tmp_path / "scores.trec"
    main(
        [
            *("batch", str(run_path), "--out", str(out), "--trec", str(trec)),
            *("--model", str(tiny_checkpoint), "--replicas", "2", "--batch-rows", "500"),
        ]
    )
    run = read_run(run_path)
    table = pq.read_table(out)
    assert table.num_rows == sum(map(len, run.values())) == 4300
    got = scores_by_pair(table)
    expected = reference_scores(
        tiny_checkpoint,
        run,
        read_queries(folder / "queries.jsonl"),
        read_corpus(folder / "corpus.jsonl"),
    )
    assert got.keys() == expected.keys()
    differing = [pair for pair in expected if got[pair] != expected[pair]]
    assert not differing, f"{len(differing)} scores differ, e.g. {differing[0]}"
    # the TREC run holds the same scores, ranked
    written = read_run(trec)
    assert {(q, d): s for q, docs in written.items() for d, s in docs.items()} == expected
    first = trec.read_text().splitlines()[0].split()
    assert first[3] == "1" and float(first[4]) == max(written[first[0]].values())


def test_parquet_and_jsonl_pairs_keep_their_extra_columns(local_ray, tiny_checkpoint, tmp_path):
    rows = [
        {
            "query_id": "q1",
            "query": "capital of France",
            "doc_id": "d1",
            "text": "Paris.",
            "label": 1,
        },
        {
            "query_id": "q1",
            "query": "capital of France",
            "doc_id": "d2",
            "text": "Cats.",
            "label": 0,
        },
        {"query_id": "q2", "query": "pets", "doc_id": "d2", "text": "Cats.", "label": 1},
    ]
    parquet, jsonl = tmp_path / "pairs.parquet", tmp_path / "pairs.jsonl"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reranker = Reranker(tiny_checkpoint)
    expected = {
        ("q1", "d1"): reranker.score("capital of France", ["Paris.", "Cats."])[0],
        ("q1", "d2"): reranker.score("capital of France", ["Paris.", "Cats."])[1],
        ("q2", "d2"): reranker.score("pets", ["Cats."])[0],
    }
    for source in (parquet, jsonl):
        out = tmp_path / f"{source.suffix[1:]}.parquet"
        main(["batch", str(source), "--out", str(out), "--model", str(tiny_checkpoint)])
        table = pq.read_table(out)
        assert sorted(table.column_names) == ["doc_id", "label", "query_id", "score"]
        assert scores_by_pair(table) == expected
        assert not (tmp_path / f"{out.name}.partial").exists()


def test_score_dataset_composes_with_a_users_pipeline(local_ray, tiny_checkpoint):
    import ray.data

    pairs = ray.data.from_items(
        [
            {"query_id": "q", "query": "pets", "doc_id": str(i), "text": f"pet number {i}"}
            for i in range(20)
        ]
    )
    scored = score_dataset(pairs, tiny_checkpoint, keep_text=True, raw=True).filter(
        lambda row: row["score"] > -1e9
    )
    rows = sorted(scored.take_all(), key=lambda row: int(row["doc_id"]))
    assert [r["doc_id"] for r in rows] == [str(i) for i in range(20)]
    logits = Reranker(tiny_checkpoint).score("pets", [r["text"] for r in rows], raw=True)
    assert [r["score"] for r in rows] == logits


def test_missing_columns_and_documents_are_named(local_ray, tiny_checkpoint, tmp_path):
    pq.write_table(
        pa.table({"query_id": ["q"], "doc_id": ["d"], "text": ["t"]}), tmp_path / "p.parquet"
    )
    # an error in the data fails the job with its message (Ray does not retry it)
    with pytest.raises(Exception, match=r"pairs need the columns \['query'\]"):
        score_dataset(read_pairs(tmp_path / "p.parquet"), tiny_checkpoint).take_all()
    folder = tmp_path / "beir"
    (folder / "runs").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (folder / "runs" / "test.x.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d9 2 1.0 x\n")
    with pytest.raises(DatasetError, match=r"1 documents .* e\.g\. d9"):
        read_pairs(folder / "runs" / "test.x.trec")
    with pytest.raises(SystemExit, match="no such file"):
        main(["batch", str(tmp_path / "nothing.parquet"), "--out", str(tmp_path / "o.parquet")])
    with pytest.raises(SystemExit, match=r"--out must name a \.parquet file"):
        main(["batch", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "o.csv")])
    assert set(COLUMNS) == {"query_id", "query", "doc_id", "text"}


def test_a_pool_that_takes_every_cpu_is_refused_when_tasks_must_read():
    with pytest.raises(ValueError, match="none would be left to read the input"):
        check_cpus(cluster_cpus=2, replica_cpus=2, is_trec=False)
    check_cpus(cluster_cpus=2, replica_cpus=2, is_trec=True)  # the driver reads a run
    check_cpus(cluster_cpus=2, replica_cpus=1.5, is_trec=False)


def recording_scorer(calls: Path) -> type[PairScorer]:
    """A PairScorer that notes which process scored each batch (pickled by value)."""

    class Recording(PairScorer):
        def __call__(self, batch):
            with open(calls, "a") as f:
                f.write(f"{os.getpid()} {batch.num_rows}\n")
            return super().__call__(batch)

    return Recording


def test_one_parquet_file_is_spread_over_the_replicas(local_ray, tiny_checkpoint, tmp_path):
    rows = [
        {
            "query_id": f"q{i // 50}",
            "query": f"query {i // 50}",
            "doc_id": f"d{i}",
            "text": f"doc {i}",
        }
        for i in range(2000)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    calls = tmp_path / "calls"
    scored = score_dataset(
        read_pairs(tmp_path / "pairs.parquet"),
        tiny_checkpoint,
        replicas=2,
        batch_rows=200,
        num_cpus=0.5,  # two replicas in one of the two CPUs: the other reads the file
        scorer=recording_scorer(calls),
    )
    assert len(scores_by_pair(pa.concat_tables(ray.get(scored.to_arrow_refs())))) == 2000
    made = [line.split() for line in calls.read_text().splitlines()]
    assert len({pid for pid, _ in made}) == 2, "one replica did all the work"
    assert max(int(n) for _, n in made) <= 200
