"""The LoCo-style suite, the depth sweep and select mode in ``crossrank eval``."""

from __future__ import annotations

import json
import random

import pytest

from crossrank.cli import main
from crossrank.evaluation.harness import evaluate_reranking
from crossrank.evaluation.suite import depth_sweep, parse_set, run_suite

from .beir_files import write_beir

TOPICS = ["volcano", "glacier", "harbour", "orchard", "comet", "desert", "violin", "canal"]


def long_document(topic: int, generator: random.Random) -> str:
    """Filler sentences with the topic's sentence somewhere in the middle."""
    filler = [f"item {generator.randrange(1000)} was filed under routine notes." for _ in range(12)]
    filler.insert(generator.randrange(3, 10), f"The report is about the {TOPICS[topic]}.")
    return " ".join(filler)


@pytest.fixture(scope="module")
def sets_dir(tmp_path_factory):
    generator = random.Random(1)
    root = tmp_path_factory.mktemp("loco")
    corpus = {f"d{i}": long_document(i, generator) for i in range(len(TOPICS))}
    queries = {f"q{i}": f"which report is about the {topic}" for i, topic in enumerate(TOPICS)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(TOPICS))}
    write_beir(root / "longset", corpus, queries, qrels)
    short = {f"d{i}": f"A note about the {topic}." for i, topic in enumerate(TOPICS)}
    write_beir(root / "scitldr", short, queries, qrels)
    return root


def systems(result):
    return {s.label: s for s in result.systems}


def test_suite_compares_every_mode_over_the_same_candidates(sets_dir):
    [long, short] = run_suite(
        sets_dir, sets=("longset", "scitldr:test:4"), top_k=4, max_length=32, max_windows=(1,)
    )
    assert (long.queries, short.queries) == (8, 4)
    rows = systems(long)
    assert list(rows) == [
        "bm25",
        "bi-encoder truncate",
        "bi-encoder chunk",
        "cross-encoder truncate",
        "cross-encoder chunk",
        "cross-encoder select (m=1)",
    ]
    chunk, select = rows["cross-encoder chunk"], rows["cross-encoder select (m=1)"]
    truncate = rows["cross-encoder truncate"]
    # one window per document for truncate and select m=1: the same token count
    assert select.tokens == truncate.tokens
    assert chunk.tokens > 3 * select.tokens
    assert all(s.seconds is not None and s.cpu_seconds is not None for s in long.systems[1:])
    # short documents fit one window: every cross-encoder mode reads the same
    short_rows = systems(short)
    assert len({short_rows[f"cross-encoder {m}"].tokens for m in ("truncate", "chunk")}) == 1
    assert short_rows["cross-encoder chunk"].ndcg10 == short_rows["cross-encoder truncate"].ndcg10


def test_suite_select_with_every_window_equals_chunk(sets_dir):
    [result] = run_suite(
        sets_dir, sets=("longset",), top_k=3, max_length=32, max_windows=(1000,), biencoder=False
    )
    rows = systems(result)
    chunk, select = rows["cross-encoder chunk"], rows["cross-encoder select (m=1000)"]
    assert (select.ndcg10, select.tokens) == (chunk.ndcg10, chunk.tokens)


def test_depth_sweep_equals_reranking_each_depth_afresh(sets_dir):
    _, first_stage, rows = depth_sweep(
        sets_dir / "longset", [1, 3, 5], max_length=32, long_documents="select", max_windows=2
    )
    assert [r.depth for r in rows] == [1, 3, 5]
    assert [r.pairs for r in rows] == [8, 24, 40]
    assert rows[0].seconds <= rows[1].seconds <= rows[2].seconds
    assert rows[0].cpu_seconds <= rows[1].cpu_seconds <= rows[2].cpu_seconds
    assert rows[0].tokens < rows[1].tokens < rows[2].tokens
    row = rows[1]  # depth 3: scored as depth 1's pairs plus ranks 2-3
    report = evaluate_reranking(
        sets_dir / "longset", top_k=3, max_length=32, long_documents=["select"], max_windows=2
    )
    assert row.ndcg10 == pytest.approx(report.reranked["select"]["nDCG@10"], abs=1e-9)
    assert report.costs["select"]["tokens"] == row.tokens
    assert first_stage == pytest.approx(report.first_stage["nDCG@10"])


def test_eval_cli_suite_depths_and_select(sets_dir, tmp_path, capsys):
    plot, out = tmp_path / "suite.png", tmp_path / "suite.json"
    main(
        ["eval", str(sets_dir), "--suite", "loco", "--sets", "longset", "scitldr", "--top-k",
         "3", "--max-length", "32", "--max-windows", "2,3", "--no-biencoder", "--plot",
         str(plot), "--json", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "cross-encoder select (m=2)" in printed and "select (m=3)" in printed
    assert "avg long" in printed
    assert "cross-encoder tokens read" in printed
    assert plot.stat().st_size > 10_000
    assert [r["name"] for r in json.loads(out.read_text())] == ["longset", "scitldr"]

    plot = tmp_path / "depths.png"
    main(["eval", str(sets_dir / "longset"), "--depths", "2,4", "--max-length", "32",
          "--plot", str(plot)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "depth" in printed and plot.stat().st_size > 10_000

    main(["eval", str(sets_dir / "longset"), "--top-k", "3", "--max-length", "32",
          "--long-documents", "chunk,select", "--max-windows", "1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "reranked (select)" in printed and "rerank (select)" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--long-documents", "chunk", "--max-windows", "2"], "applies to --long-documents"),
        (["--depths", "10,x"], "--depths takes numbers"),
        (["--long-documents", "window"], "unknown mode"),
    ],
)
def test_user_errors(sets_dir, args, message, capsys):
    with pytest.raises(SystemExit) as error:
        main(["eval", str(sets_dir / "longset"), *args])
    assert message in str(error.value) + capsys.readouterr().err


def test_parse_set():
    assert parse_set("qmsum", None) == ("qmsum", "test", None)
    assert parse_set("qmsum:val:5", 9) == ("qmsum", "val", 5)
    assert parse_set("ectsum::", 3) == ("ectsum", "test", 3)
    with pytest.raises(ValueError, match="NAME"):
        parse_set("a:b:c:d", None)
