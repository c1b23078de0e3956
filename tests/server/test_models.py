"""Several models in one server: each request reaches the model it names, concurrently,
each model with its own queue, inference thread and metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from crossrank import Reranker

from .conftest import metric, running, texts

QUERY = "how do vaccines train the immune system"


@pytest.fixture(scope="module")
def bundled(bundled_reranker) -> Reranker:
    return bundled_reranker


@pytest.fixture(scope="module")
def two_models(bundled, other_reranker):
    with running({"bundled": bundled, "other": other_reranker}) as url:
        yield url


def test_models_are_listed_and_the_first_is_the_default(two_models):
    cards = httpx.get(f"{two_models}/v1/models").json()["data"]
    assert [c["id"] for c in cards] == ["bundled", "other"]
    health = httpx.get(f"{two_models}/health").json()
    assert health == {"status": "ok", "model": "bundled", "models": ["bundled", "other"]}
    reply = httpx.post(f"{two_models}/v1/rerank", json={"query": QUERY, "documents": ["a"]})
    assert reply.json()["model"] == "bundled"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/rerank", {"query": QUERY, "documents": ["a"]}),
        ("/v2/rerank", {"query": QUERY, "documents": ["a"]}),
        ("/rerank", {"query": QUERY, "texts": ["a"]}),
        ("/rerank", {"query": QUERY, "documents": ["a"]}),
        ("/score", {"text_1": QUERY, "text_2": ["a"]}),
    ],
)
def test_an_unknown_model_is_a_404_listing_the_served_ones(two_models, path, body):
    response = httpx.post(f"{two_models}{path}", json={**body, "model": "rerank-v3.5"})
    assert response.status_code == 404, response.text
    error = response.json()
    assert error["error_type"] == "model_not_found" and error["field"] == "model"
    assert "'rerank-v3.5'" in error["message"] and "'bundled', 'other'" in error["message"]


def test_concurrent_requests_each_reach_the_model_they_name(two_models, bundled, other_reranker):
    own = {"bundled": bundled, "other": other_reranker, None: bundled}
    names = ["bundled", "other", None] * 8
    requests = [
        (name, {"query": f"{QUERY} {i}", "documents": texts(5 + i % 4, seed=i)})
        for i, name in enumerate(names)
    ]
    served = two_models.app.state.served
    before = httpx.get(f"{two_models}/metrics").text

    async def post_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=two_models, timeout=120) as client:
            calls = [
                client.post("/v2/rerank", json=body if name is None else {**body, "model": name})
                for name, body in requests
            ]
            replies = await asyncio.gather(*calls)
        assert all(r.status_code == 200 for r in replies)
        return [r.json() for r in replies]

    replies = asyncio.run(post_all())
    for (name, body), reply in zip(requests, replies, strict=True):
        want = own[name].rerank(body["query"], body["documents"])
        got = reply["results"]
        assert [r["index"] for r in got] == [r.index for r in want], name
        assert [r["relevance_score"] for r in got] == pytest.approx(
            [r.relevance_score for r in want], abs=1e-4
        )
    # Each model has its own queue and inference thread, and its own labelled series.
    assert served.services["bundled"].batcher is not served.services["other"].batcher
    after = httpx.get(f"{two_models}/metrics").text
    for name in ("bundled", "other"):
        pairs = sum(len(body["documents"]) for n, body in requests if own[n] is own[name])
        label = f'{{model="{name}"}}'
        scored = metric(after, f"crossrank_pairs_scored_total{label}") - metric(
            before, f"crossrank_pairs_scored_total{label}"
        )
        assert scored == pairs, name
