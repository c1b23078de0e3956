"""Admission by work: a budget of tokens admitted at once, and the wait it means.

A request of 1,000 long documents costs hundreds of times what a request of 2 short ones
does, so counting requests alone lets a few big ones fill the queue with minutes of work.
Each request, once tokenized, takes its tokens from the budget until it is answered:

* more tokens than the whole budget: it can never be admitted, a 413 that says the limit;
* more than what is left: a 429, whose Retry-After is how long the model needs, at the
  throughput measured over recent model calls, to free the tokens that are missing;
* fewer, but so many ahead of it that at that throughput it would start only after
  ``max_wait_s``: a 429 at once, rather than a wait past the client's own timeout (a
  token budget tuned on a fast CPU is many minutes of work on one four times slower).

Before any model call has been measured the throughput is a conservative guess from the
model's size (``prior_tokens_per_second``), so a burst at start-up is refused early, not
admitted into minutes of waiting. A request with nothing ahead of it is always admitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from crossrank.server.batcher import BatchStats

# Weight of the newest model call in the throughput estimate: about the last 10 calls.
THROUGHPUT_SMOOTHING = 0.1
MAX_RETRY_AFTER_S = 600
# Floating-point operations per second assumed before any model call is measured: well
# under what the slowest CPU seen here sustains (2 AVX2 cores), so the first estimate errs
# towards refusing. The first measured call replaces it.
CONSERVATIVE_FLOPS = 10e9


def prior_tokens_per_second(model: nn.Module, flops: float = CONSERVATIVE_FLOPS) -> float:
    """A cautious throughput before any is measured: a token costs about two operations
    per weight of the model's matrix products (embedding tables cost a lookup)."""
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return flops / max(1, 2 * weights)


@dataclass(frozen=True)
class Refusal:
    status: int
    error_type: str
    message: str
    limit: int
    retry_after_s: int | None = None


class TokenBudget:
    """Tokens admitted at once; used only on the event loop (no lock), but ``observe`` runs
    on the inference thread and only replaces one float."""

    def __init__(
        self,
        capacity: int,
        max_wait_s: float | None = None,
        prior_tokens_per_second: float | None = None,
    ):
        if capacity < 1:
            raise ValueError(f"the token budget must be at least 1, not {capacity}")
        if max_wait_s is not None and not max_wait_s > 0:
            raise ValueError(f"the longest queue wait must be positive, not {max_wait_s}")
        self.capacity = capacity
        self.max_wait_s = max_wait_s  # None: no limit on the expected wait
        self.admitted = 0
        self.prior_tokens_per_second = prior_tokens_per_second
        self.tokens_per_second: float | None = None  # measured; None before the first call

    def observe(self, stats: BatchStats) -> None:
        """Fold one model call into the throughput estimate (the batcher's on_batch)."""
        if stats.seconds <= 0 or stats.tokens <= 0:
            return
        rate = stats.tokens / stats.seconds
        previous = self.tokens_per_second
        self.tokens_per_second = (
            rate if previous is None else previous + THROUGHPUT_SMOOTHING * (rate - previous)
        )

    @property
    def rate(self) -> float | None:
        """Tokens per second: the measured throughput, else the prior guess."""
        return self.tokens_per_second or self.prior_tokens_per_second

    def expected_wait_s(self) -> float:
        """Seconds before a request admitted now would start: the work ahead of it at the
        throughput (0 with nothing ahead, or with no throughput known at all)."""
        rate = self.rate
        return self.admitted / rate if rate and self.admitted else 0.0

    def refusal(self, tokens: int) -> Refusal | None:
        """Why ``tokens`` more cannot be admitted now, or None (then ``admit`` them)."""
        if tokens > self.capacity:
            return Refusal(
                413,
                "too_many_queue_tokens",
                f"this request needs {tokens} tokens; the server admits at most "
                f"{self.capacity} tokens of work at once, so it can never be admitted: "
                "send fewer or shorter documents",
                self.capacity,
            )
        missing = self.admitted + tokens - self.capacity
        if missing > 0:
            wait = self.seconds_to_free(missing)
            return Refusal(
                429,
                "queue_full",
                f"the server is busy: {self.admitted} tokens of work are admitted and this "
                f"request needs {tokens} more (the limit is {self.capacity}); retry after "
                f"{wait} s",
                self.capacity,
                retry_after_s=wait,
            )
        return self.wait_refusal()

    def wait_refusal(self) -> Refusal | None:
        """A 429 when the work ahead would keep a new request waiting past ``max_wait_s``;
        its Retry-After is when enough of that work will be done."""
        wait = self.expected_wait_s()
        if self.max_wait_s is None or wait <= self.max_wait_s:
            return None
        limit = math.ceil(self.max_wait_s)
        retry = self.seconds_to_free(math.ceil(self.admitted - self.max_wait_s * self.rate))
        return Refusal(
            429,
            "queue_wait",
            f"the server is busy: the {self.admitted} tokens of work ahead of this request "
            f"would keep it waiting about {wait:.0f} s at {self.rate:.0f} tokens/s, longer "
            f"than the server's limit of {self.max_wait_s:g} s; retry after {retry} s",
            limit,
            retry_after_s=retry,
        )

    def seconds_to_free(self, tokens: int) -> int:
        """Whole seconds for the model to get through ``tokens`` at the known rate."""
        rate = self.rate
        if not rate:
            return 1
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(tokens / rate)))

    def admit(self, tokens: int) -> None:
        self.admitted += tokens

    def release(self, tokens: int) -> None:
        self.admitted -= tokens
