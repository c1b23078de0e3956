"""A Qwen3 decoder reranker served beside a cross-encoder: the ``instruction`` field reaches
its prompt on every rerank dialect, and a cross-encoder reports it ignored."""

from __future__ import annotations

import json

import httpx
import pytest

from crossrank import Reranker

from .conftest import running

QUERY = "what do cross-encoders read?"
DOCUMENTS = ["A cross-encoder reads the query and the document together.", "bananas", "no"]
INSTRUCTION = "Judge whether the passage is about fruit"
BODIES = {  # path -> its documents field: every rerank dialect
    "/v1/rerank": "documents",
    "/v2/rerank": "documents",
    "/rerank": "texts",
    "/infinity/rerank": "documents",
}


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory) -> Reranker:
    from conftest import make_qwen3_checkpoint

    folder = tmp_path_factory.mktemp("qwen3")
    make_qwen3_checkpoint(folder)
    return Reranker(folder, device="cpu")


def scores_of(reply, path: str) -> dict[int, float]:
    rows = reply if path == "/rerank" else reply["results"]
    return {r["index"]: r.get("relevance_score", r.get("score")) for r in rows}


@pytest.mark.parametrize("path", BODIES)
def test_instruction_reaches_the_decoders_prompt(qwen3, reranker, path):
    with running({"qwen3": qwen3, "bert": reranker}) as url:
        body = {"model": "qwen3", "query": QUERY, BODIES[path]: DOCUMENTS}
        plain = httpx.post(f"{url}{path}", json=body, timeout=30)
        instructed = httpx.post(f"{url}{path}", json={**body, "instruction": INSTRUCTION})
    assert plain.status_code == instructed.status_code == 200, instructed.text
    assert "x-crossrank-ignored-fields" not in instructed.headers
    expected = qwen3.score(QUERY, DOCUMENTS, instruction=INSTRUCTION)
    got = scores_of(instructed.json(), path)
    assert [got[i] for i in range(3)] == pytest.approx(expected, abs=1e-6)
    assert scores_of(plain.json(), path) != got  # the default instruction differs


def test_a_cross_encoder_reports_the_instruction_ignored(qwen3, reranker):
    with running({"qwen3": qwen3, "bert": reranker}) as url:
        body = {"model": "bert", "query": QUERY, "documents": DOCUMENTS}
        reply = httpx.post(f"{url}/v1/rerank", json={**body, "instruction": INSTRUCTION})
    assert reply.status_code == 200
    assert "instruction" in reply.headers["x-crossrank-ignored-fields"]
    expected = reranker.score(QUERY, DOCUMENTS)
    assert [scores_of(reply.json(), "/v1/rerank")[i] for i in range(3)] == expected


def test_an_instruction_that_leaves_no_room_is_a_413(qwen3):
    with running(qwen3) as url:
        body = {"query": QUERY, "documents": DOCUMENTS, "instruction": "judge " * 9000}
        reply = httpx.post(f"{url}/v1/rerank", json=body, timeout=30)
    assert reply.status_code == 413, reply.text
    assert reply.json()["error_type"] == "input_too_long"
    assert reply.json()["field"] == "instruction"


def test_cli_passes_the_instruction(qwen3, tmp_path):
    from test_cli import crossrank

    documents = tmp_path / "documents.txt"
    documents.write_text("\n".join(DOCUMENTS) + "\n")
    args = ("rerank", "-m", str(qwen3.path), "-q", QUERY, str(documents))
    result = crossrank(*args, "--instruction", INSTRUCTION)
    assert result.returncode == 0, result.stderr
    printed = {r["index"]: r["relevance_score"] for r in json.loads(result.stdout)}
    expected = qwen3.score(QUERY, DOCUMENTS, instruction=INSTRUCTION)
    assert [printed[i] for i in range(3)] == pytest.approx(expected, abs=1e-6)
