from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crossrank import Reranker

QUERY = "cross-encoder reranking"


def crossrank(*args, stdin=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "crossrank.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_help_lists_the_commands():
    result = crossrank("--help")
    assert result.returncode == 0
    assert "rerank" in result.stdout


def test_rerank_a_text_file_prints_ranked_json(tmp_path, tiny_checkpoint):
    documents = ["first document", "a cross-encoder reranks", "third one"]
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(documents) + "\n")
    result = crossrank(
        "rerank", "--model", str(tiny_checkpoint), "--query", QUERY, str(path), "--top-n", "2"
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = Reranker.from_pretrained(tiny_checkpoint).rerank(QUERY, documents, top_n=2)
    assert [r["index"] for r in printed] == [r.index for r in expected]
    assert [r["document"] for r in printed] == [r.document for r in expected]


def test_rerank_runs_in_the_requested_number_format(tmp_path, tiny_checkpoint):
    documents = ["first document", "a cross-encoder reranks", "third one"]
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(documents))
    args = ("rerank", "-m", str(tiny_checkpoint), "-q", QUERY, str(path), "--threads", "1")
    result = crossrank(*args, "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    expected = Reranker.from_pretrained(tiny_checkpoint, dtype="bfloat16").score(QUERY, documents)
    printed = {r["index"]: r["relevance_score"] for r in json.loads(result.stdout)}
    assert [printed[i] for i in range(3)] == pytest.approx(expected, abs=1e-6)
    refused = crossrank(*args, "--dtype", "int4")
    assert refused.returncode == 2 and "invalid choice: 'int4'" in refused.stderr


def test_rerank_reads_jsonl_and_stdin(tmp_path, tiny_checkpoint):
    records = [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    from_file = crossrank("rerank", "-m", str(tiny_checkpoint), "-q", QUERY, str(path))
    from_stdin = crossrank(
        "rerank", "-m", str(tiny_checkpoint), "-q", QUERY, "-", stdin=path.read_text()
    )
    assert from_file.returncode == 0 and from_stdin.returncode == 0, (
        from_file.stderr + from_stdin.stderr
    )
    assert json.loads(from_file.stdout) == json.loads(from_stdin.stdout)
    assert sorted(r["document"] for r in json.loads(from_file.stdout)) == ["alpha", "beta"]


def test_bad_jsonl_line_is_reported_with_its_number(tmp_path, tiny_checkpoint):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "ok"}\n{"title": "no text"}\n')
    result = crossrank("rerank", "-m", str(tiny_checkpoint), "-q", QUERY, str(path))
    assert result.returncode != 0
    assert "docs.jsonl:2" in result.stderr and "'text'" in result.stderr


def test_uncached_hub_id_offline_fails_with_one_clear_message(tmp_path, tiny_checkpoint):
    documents = tmp_path / "docs.txt"
    documents.write_text("a\n")
    result = crossrank(
        "rerank",
        "-m",
        "jinaai/jina-reranker-v1-turbo-en",
        "-q",
        QUERY,
        str(documents),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "'jinaai/jina-reranker-v1-turbo-en'" in result.stderr
    assert "local checkpoint folder" in result.stderr


def test_missing_local_folder_is_not_sent_to_the_hub(tmp_path):
    documents = tmp_path / "docs.txt"
    documents.write_text("a\n")
    result = crossrank("rerank", "-m", str(tmp_path / "nope"), "-q", QUERY, str(documents))
    assert result.returncode != 0
    assert "no checkpoint folder" in result.stderr
