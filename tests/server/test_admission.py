"""Admission by work (a token budget beside the request count), and OPTIONS under the key."""

from __future__ import annotations

import concurrent.futures
import copy
import math
import threading
import time

import httpx
import pytest

from crossrank.server.admission import MAX_RETRY_AFTER_S, TokenBudget
from crossrank.server.batcher import BatchStats
from server.conftest import running, texts

QUERY = "neural reranking"
KEY = "s3cret-key"


def stats(tokens: int, seconds: float) -> BatchStats:
    return BatchStats(pairs=1, tokens=tokens, requests=1, seconds=seconds)


def test_the_wait_is_the_missing_tokens_at_the_measured_throughput():
    budget = TokenBudget(6000)
    assert budget.refusal(6000) is None
    budget.admit(5000)
    unmeasured = budget.refusal(3000)
    assert unmeasured.status == 429 and unmeasured.retry_after_s == 1  # nothing measured yet
    budget.observe(stats(1000, 1.0))  # 1,000 tokens/s
    refusal = budget.refusal(3000)
    assert refusal.status == 429 and refusal.limit == 6000
    assert refusal.retry_after_s == 2  # 2,000 tokens missing
    assert "retry after 2 s" in refusal.message
    budget.observe(stats(3000, 1.0))  # a moving average: 1,000 + 0.1 * (3,000 - 1,000)
    assert budget.tokens_per_second == pytest.approx(1200)
    budget.tokens_per_second = 1.0  # 5,000 tokens missing would take 5,000 s
    assert budget.refusal(6000).retry_after_s == MAX_RETRY_AFTER_S  # capped
    budget.release(5000)
    assert budget.refusal(3000) is None


def test_more_tokens_than_the_whole_budget_is_a_413_that_says_the_limit():
    refusal = TokenBudget(100).refusal(101)
    assert refusal.status == 413 and refusal.error_type == "too_many_queue_tokens"
    assert "at most 100 tokens" in refusal.message and refusal.retry_after_s is None


class Hold:
    """Stands in for ``Reranker.logits``; holds model calls while ``release`` is clear."""

    def __init__(self, logits):
        self.logits = logits
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, features):
        self.entered.set()
        if not self.release.wait(30):
            raise TimeoutError("the test never released the model")
        return self.logits(features)


def test_admission_counts_tokens_413_alone_429_with_retry_after(reranker):
    body = {"query": QUERY, "documents": texts(40, seed=5)}
    small = {"query": QUERY, "documents": texts(2, seed=6, longest=5)}
    with running(reranker) as url:
        tokens = int(httpx.post(f"{url}/v1/rerank", json=body).headers["x-compute-tokens"])
        few = int(httpx.post(f"{url}/v1/rerank", json=small).headers["x-compute-tokens"])
    held = copy.copy(reranker)
    hold = Hold(reranker.logits)
    held.logits = hold  # type: ignore[method-assign]
    # Room for one big request and a small one, not for two big ones; 5 requests at most.
    capacity = tokens + tokens // 2
    with running(held, max_queue_tokens=capacity, max_queue=5) as url:
        service = url.app.state.service
        too_big = {"query": QUERY, "documents": texts(40, seed=5) * 2}
        refused = httpx.post(f"{url}/v1/rerank", json=too_big)
        assert refused.status_code == 413 and "Retry-After" not in refused.headers
        error = refused.json()
        assert error["error_type"] == "too_many_queue_tokens" and error["limit"] == capacity
        assert f"at most {capacity} tokens" in error["message"]
        for _ in range(3):  # measure the throughput
            assert httpx.post(f"{url}/v1/rerank", json=body).status_code == 200
        rate = service.budget.tokens_per_second
        assert rate is not None and rate > 0

        hold.release.clear()
        hold.entered.clear()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/rerank", json=body, timeout=30)
            try:
                assert hold.entered.wait(10)
                assert service.budget.admitted == tokens
                busy = httpx.post(f"{url}/v2/rerank", json=body)
                assert busy.status_code == 429
                expected = max(1, math.ceil((2 * tokens - capacity) / rate))
                assert int(busy.headers["Retry-After"]) == expected
                assert busy.json()["error_type"] == "queue_full"
                assert busy.json()["limit"] == capacity
                # A small request still fits beside the big one: admission is by work.
                beside = pool.submit(httpx.post, f"{url}/v1/rerank", json=small, timeout=30)
                deadline = time.monotonic() + 10
                while service.budget.admitted != tokens + few:
                    assert not beside.done(), beside.result().text
                    assert time.monotonic() < deadline, service.budget.admitted
                    time.sleep(0.01)
            finally:
                hold.release.set()
            assert first.result(30).status_code == 200
            assert beside.result(30).status_code == 200
        assert service.budget.admitted == 0
        assert httpx.post(f"{url}/v2/rerank", json=body).status_code == 200


def test_options_needs_the_key_unless_it_is_a_cors_preflight_with_cors_on(reranker):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with running(reranker, api_key=KEY) as url:
        for headers in ({}, preflight):  # CORS off: a preflight is just another OPTIONS
            response = httpx.options(f"{url}/v1/rerank", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error_type"] == "unauthorized"
        keyed = httpx.options(f"{url}/v1/rerank", headers={"Authorization": f"Bearer {KEY}"})
        assert keyed.status_code == 405
    with running(reranker, api_key=KEY, cors_origins=("https://app.example",)) as url:
        allowed = httpx.options(f"{url}/v1/rerank", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert httpx.options(f"{url}/v1/rerank").status_code == 401  # not a preflight
