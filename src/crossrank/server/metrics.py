"""Prometheus metrics, in a registry of the app's own (two apps in one process stay apart).

HTTP requests are counted by route; everything about queues and model calls carries a
``model`` label, as each served model has its own queue and inference thread.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from crossrank.server.admission import TokenBudget
from crossrank.server.batcher import Batcher, BatchStats

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Pairs and tokens per inference step: powers of two up to well past any sane budget.
SIZE_BUCKETS = tuple(2.0**k for k in range(0, 21))
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "crossrank_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "crossrank_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_requests = Gauge(
            "crossrank_queue_requests",
            "requests with inputs waiting for the model",
            ["model"],
            registry=r,
        )
        self.queue_pairs = Gauge(
            "crossrank_queue_pairs",
            "model inputs (pairs or windows) waiting",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "crossrank_requests_in_flight",
            "rerank requests admitted and not yet answered (what --max-queue bounds)",
            ["model"],
            registry=r,
        )
        self.batch_pairs = Histogram(
            "crossrank_batch_pairs",
            "model inputs per inference step",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "crossrank_batch_tokens",
            "tokens (without padding) per inference step",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "crossrank_batch_requests",
            "distinct requests per inference step",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "crossrank_batch_duration_seconds",
            "model time per inference step",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_scored = Counter(
            "crossrank_tokens_scored", "tokens read by the model", ["model"], registry=r
        )
        self.pairs_scored = Counter(
            "crossrank_pairs_scored", "model inputs scored", ["model"], registry=r
        )
        self.dropped = Counter(
            "crossrank_requests_dropped",
            "requests dropped before they were answered, by reason",
            ["model", "reason"],
            registry=r,
        )

        self.expected_wait = Gauge(
            "crossrank_queue_expected_wait_seconds",
            "seconds a request admitted now would wait for the model (what --max-queue-wait "
            "bounds): the tokens admitted at the throughput",
            ["model"],
            registry=r,
        )
        self.throughput = Gauge(
            "crossrank_model_tokens_per_second",
            "the model's throughput admission assumes: measured, else the prior guess",
            ["model"],
            registry=r,
        )
        self.refusals = Counter(
            "crossrank_requests_refused",
            "rerank requests refused by admission, by reason: queue_requests (--max-queue), "
            "queue_full (--max-queue-tokens), queue_wait (--max-queue-wait), "
            "too_many_queue_tokens (413: over the whole token budget)",
            ["model", "reason"],
            registry=r,
        )

    def for_model(self, name: str) -> ModelMetrics:
        return ModelMetrics(self, name)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One served model's series (its ``model`` label set once, here)."""

    def __init__(self, metrics: ServerMetrics, name: str):
        self.metrics = metrics
        self.name = name
        self.in_flight = metrics.in_flight.labels(name)
        self.in_flight.set(0)  # shown from the start, not from the first request

    def watch(self, batcher: Batcher, budget: TokenBudget) -> None:
        """Read queue depth and the expected wait when scraped, not on every change."""
        m, name = self.metrics, self.name
        m.queue_requests.labels(name).set_function(lambda: batcher.queued_requests)
        m.queue_pairs.labels(name).set_function(lambda: batcher.queued_pairs)
        m.expected_wait.labels(name).set_function(budget.expected_wait_s)
        m.throughput.labels(name).set_function(lambda: budget.rate or 0.0)

    def observe_batch(self, stats: BatchStats) -> None:
        """Called by the inference thread after each step (prometheus_client is thread-safe)."""
        m, name = self.metrics, self.name
        m.batch_pairs.labels(name).observe(stats.pairs)
        m.batch_tokens.labels(name).observe(stats.tokens)
        m.batch_requests.labels(name).observe(stats.requests)
        m.batch_seconds.labels(name).observe(stats.seconds)
        m.tokens_scored.labels(name).inc(stats.tokens)
        m.pairs_scored.labels(name).inc(stats.pairs)

    def dropped(self, reason: str) -> None:
        self.metrics.dropped.labels(self.name, reason).inc()

    def refused(self, reason: str) -> None:
        self.metrics.refusals.labels(self.name, reason).inc()
