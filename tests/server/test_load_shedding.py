"""Admission by expected wait: a request that could not start within --max-queue-wait is
refused at once with 429 and an honest Retry-After, instead of waiting past any client's
timeout; one with nothing ahead of it is always admitted."""

from __future__ import annotations

import asyncio
import copy
import math
import time

import httpx
import pytest

from crossrank.server.admission import TokenBudget, prior_tokens_per_second
from crossrank.server.batcher import BatchStats

from .conftest import metric, running, texts

QUERY = "neural reranking under load"


def measured(budget: TokenBudget, tokens_per_second: float) -> TokenBudget:
    budget.observe(BatchStats(pairs=1, tokens=int(tokens_per_second), requests=1, seconds=1.0))
    return budget


def test_the_expected_wait_is_the_work_ahead_at_the_measured_rate():
    budget = measured(TokenBudget(10**6, max_wait_s=10), tokens_per_second=100)
    budget.admit(500)  # 5 s of work ahead
    assert budget.expected_wait_s() == pytest.approx(5)
    assert budget.refusal(50) is None
    budget.admit(1000)  # 15 s ahead: over the 10 s limit
    refusal = budget.refusal(50)
    assert refusal.status == 429 and refusal.error_type == "queue_wait"
    # 1,500 tokens ahead, 1,000 may be: the queue is short enough after 500 / 100 = 5 s
    assert refusal.retry_after_s == 5 and refusal.limit == 10
    assert "about 15 s" in refusal.message and "retry after 5 s" in refusal.message
    budget.release(1500)
    assert budget.refusal(10**5) is None  # nothing ahead: admitted however big


def test_before_any_measurement_the_prior_guess_decides():
    budget = TokenBudget(10**6, max_wait_s=10, prior_tokens_per_second=50)
    budget.admit(1000)  # 20 s at the prior rate
    assert budget.refusal(1).error_type == "queue_wait"
    measured(budget, tokens_per_second=1000)  # measured: 1 s
    assert budget.refusal(1) is None
    assert TokenBudget(10**6, max_wait_s=None, prior_tokens_per_second=1).refusal(1) is None


def test_the_prior_guess_is_below_what_the_bundled_model_does_here(bundled_reranker):
    """Conservative: the guess from the model's size is under its measured throughput on
    this CPU, at one thread, by a margin that leaves room for a CPU 4x slower."""
    documents = texts(64, seed=3)
    features = bundled_reranker.encoder.encode(QUERY, documents)
    bundled_reranker.logits(features)  # warm-up
    start = time.perf_counter()
    bundled_reranker.logits(features)
    rate = sum(len(f) for f in features) / (time.perf_counter() - start)
    prior = prior_tokens_per_second(bundled_reranker.model)
    assert prior * 4 < rate, (prior, rate)


class Slow:
    """``Reranker.logits`` at a fixed, slow throughput: SECONDS_PER_TOKEN per token."""

    SECONDS_PER_TOKEN = 0.001  # 1,000 tokens/s

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, features):
        time.sleep(self.SECONDS_PER_TOKEN * sum(len(f) for f in features))
        return self.logits(features)


def test_a_burst_gets_answers_or_429s_within_the_wait_limit(reranker):
    slow = copy.copy(reranker)
    slow.logits = Slow(reranker.logits)  # type: ignore[method-assign]
    slow.max_batch_tokens = 512  # short model calls, so a request's own scoring is short
    max_wait = 2.0
    bodies = [
        {"query": f"{QUERY} {i}", "documents": texts(8, seed=i, longest=40)} for i in range(32)
    ]
    with running(slow, max_queue_wait_s=max_wait) as url:
        warm = httpx.post(f"{url}/v1/rerank", json=bodies[0], timeout=30)  # measures the rate
        assert warm.status_code == 200
        own = int(warm.headers["x-compute-tokens"]) * Slow.SECONDS_PER_TOKEN

        async def one(client: httpx.AsyncClient, body: dict) -> tuple[httpx.Response, float]:
            start = time.perf_counter()
            response = await client.post("/v1/rerank", json=body)
            return response, time.perf_counter() - start

        async def burst() -> list[tuple[httpx.Response, float]]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                return await asyncio.gather(*(one(client, b) for b in bodies))

        results = asyncio.run(burst())
        statuses = [r.status_code for r, _ in results]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= 2 and statuses.count(429) >= 2, statuses
        for response, seconds in results:
            # the wait, the request's own scoring (twice, for batching and the estimate's
            # lag), and a second of slack for tokenizing and the event loop on a slow CPU
            assert seconds < max_wait + 2 * own + 1.0, (response.status_code, seconds)
            if response.status_code == 429:
                error = response.json()
                assert error["error_type"] == "queue_wait" and error["limit"] == math.ceil(max_wait)
                assert 1 <= int(response.headers["Retry-After"]) <= 60
        exposition = httpx.get(f"{url}/metrics").text
        refused = 'crossrank_requests_refused_total{model="tiny",reason="queue_wait"}'
        assert metric(exposition, refused) == statuses.count(429)
        rate = metric(exposition, 'crossrank_model_tokens_per_second{model="tiny"}')
        assert 300 < rate < 1100  # the slow model's 1,000 tokens/s, measured
        # Retry-After is honest: once it has passed, the same request is admitted.
        retry = max(int(r.headers["Retry-After"]) for r, _ in results if r.status_code == 429)
        time.sleep(retry)
        assert httpx.post(f"{url}/v1/rerank", json=bodies[-1], timeout=30).status_code == 200
        wait = metric(httpx.get(f"{url}/metrics").text, "crossrank_queue_expected_wait_seconds")
        assert wait == 0  # nothing admitted any more
