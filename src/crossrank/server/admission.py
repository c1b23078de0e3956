"""Admission by work: a budget of tokens admitted at once, beside the count of requests.

A request of 1,000 long documents costs hundreds of times what a request of 2 short ones
does, so counting requests alone lets a few big ones fill the queue with minutes of work.
Each request, once tokenized, takes its tokens from the budget until it is answered:

* more tokens than the whole budget: it can never be admitted, a 413 that says the limit;
* more than what is left: a 429, whose Retry-After is how long the model needs, at the
  throughput measured over recent model calls, to free the tokens that are missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from crossrank.server.batcher import BatchStats

# Weight of the newest model call in the throughput estimate: about the last 10 calls.
THROUGHPUT_SMOOTHING = 0.1
MAX_RETRY_AFTER_S = 600


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

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"the token budget must be at least 1, not {capacity}")
        self.capacity = capacity
        self.admitted = 0
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
        return None

    def seconds_to_free(self, tokens: int) -> int:
        """Whole seconds for the model to get through ``tokens`` at the measured rate."""
        if not self.tokens_per_second:
            return 1
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(tokens / self.tokens_per_second)))

    def admit(self, tokens: int) -> None:
        self.admitted += tokens

    def release(self, tokens: int) -> None:
        self.admitted -= tokens
