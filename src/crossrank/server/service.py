"""The service layer: one internal rerank request, its limits, tokenization and the queue.

It knows nothing of HTTP or of any API dialect: the routes in ``app.py`` turn each
dialect's body into a ``RerankCall`` and a ``Ranked`` back into the dialect's reply, and
tell it how to learn that the client left. Below it is only the ``Batcher`` (and through
it the model's ``Reranker.logits``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from crossrank.reranker import Reranker, sigmoid
from crossrank.server.batcher import Batcher, Job, ShuttingDown, glibc_malloc_trim
from crossrank.server.encoding import EncodeOptions, encode_request
from crossrank.server.metrics import ServerMetrics

log = logging.getLogger("crossrank.server")

# Set by the HTTP layer for each request; read wherever a log line names the request.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
RETRY_AFTER_SECONDS = 1
# A query must hold something other than whitespace; the request schemas state the same
# pattern, so the rule is written once. The class is spelled out because "\S" differs
# between Python (which counts the separators U+001C-U+001F and U+0085 as whitespace) and
# the ECMA regexes of JSON Schema (which count U+FEFF); this one means the same in both.
NOT_BLANK_PATTERN = (
    r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
)
NOT_BLANK_TEXT = re.compile(NOT_BLANK_PATTERN)


@dataclass(frozen=True)
class ServerSettings:
    model_name: str
    api_key: str | None = None
    max_documents: int = 1000
    max_request_tokens: int = 1_048_576  # tokens one request may ask the model to read
    # Characters (query and documents), checked before tokenizing: tokenizing costs about
    # 80 bytes of memory and a microsecond of CPU per character, so a 16 MB body would
    # need over a gigabyte in every tokenizer thread before the token limit could refuse
    # it. 4 Mi characters is about a million English tokens, the token limit's size.
    max_request_chars: int = 4 * 1024 * 1024
    max_body_bytes: int = 16 * 1024 * 1024
    max_queue: int = 256  # requests admitted (tokenizing, queued or scoring) at once
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are named

    def __post_init__(self) -> None:
        for name in (
            "max_documents",
            "max_request_tokens",
            "max_request_chars",
            "max_body_bytes",
            "max_queue",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty")

    def __repr__(self) -> str:  # never print the key, even in a traceback
        shown = "set" if self.api_key else None
        return f"ServerSettings(model_name={self.model_name!r}, api_key={shown}, ...)"


class ApiError(Exception):
    """A client error with its status, a stable type, and the field and limit involved."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        field: str | None = None,
        limit: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.field = field
        self.limit = limit
        self.headers = headers


# ---------------------------------------------------------------- the internal request


@dataclass(frozen=True)
class RerankCall:
    """What every dialect asks for, once its own fields are read."""

    query: str
    documents: list[str]
    top_n: int | None = None
    options: EncodeOptions = field(default_factory=EncodeOptions)
    refuse_truncation: bool = False  # TEI truncate=false: a 413 rather than a cut
    documents_field: str = "documents"  # the dialect's name for it, for error messages


@dataclass
class Ranked:
    order: list[int]  # document indices, best first, at most top_n
    scores: list[float]  # sigmoid scores, by document index
    logits: list[float]  # raw scores, by document index
    tokens: int
    warnings: list[str] = field(default_factory=list)


class Service:
    """Limits, queueing and scoring, independent of any API dialect."""

    def __init__(self, reranker: Reranker, settings: ServerSettings, metrics: ServerMetrics):
        self.reranker = reranker
        self.settings = settings
        self.metrics = metrics
        self.batcher = Batcher(
            reranker.logits,
            max_batch_tokens=reranker.max_batch_tokens,
            on_batch=metrics.observe_batch,
            release_memory=glibc_malloc_trim(),
        )
        metrics.watch(self.batcher)
        self.admitted = 0  # touched only on the event loop, so no lock

    async def rerank(self, call: RerankCall, disconnected: Callable[[], Awaitable[None]]) -> Ranked:
        """Score the call's documents; ``disconnected()`` returns once the client has left
        (its queued inputs are then dropped and ``ClientGone`` raised)."""
        settings = self.settings
        if not NOT_BLANK_TEXT.search(call.query):
            raise ApiError(400, "empty_query", "query is empty or only whitespace", field="query")
        if len(call.documents) > settings.max_documents:
            raise ApiError(
                413,
                "too_many_documents",
                f"{len(call.documents)} {call.documents_field} in one request; "
                f"the limit is {settings.max_documents}",
                field=call.documents_field,
                limit=settings.max_documents,
            )
        chars = len(call.query) + sum(len(d) for d in call.documents)
        if chars > settings.max_request_chars:
            raise ApiError(
                413,
                "too_many_characters",
                f"this request has {chars} characters in its query and "
                f"{call.documents_field}; the limit is {settings.max_request_chars}",
                field=call.documents_field,
                limit=settings.max_request_chars,
            )
        if self.admitted >= settings.max_queue:
            raise ApiError(
                429,
                "queue_full",
                f"the server is busy: {self.admitted} requests are already waiting; retry later",
                limit=settings.max_queue,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.admitted += 1
        self.metrics.in_flight.inc()
        try:
            return await self._rerank(call, disconnected)
        finally:
            self.admitted -= 1
            self.metrics.in_flight.dec()

    async def _rerank(
        self, call: RerankCall, disconnected: Callable[[], Awaitable[None]]
    ) -> Ranked:
        encoder = self.reranker.encoder
        # Tokenizing a thousand documents takes long enough to stall every other client,
        # so it runs in a worker thread (the tokenizer releases the GIL).
        encoded = await asyncio.to_thread(
            encode_request, encoder, call.query, call.documents, call.options
        )
        if encoded.tokens > self.settings.max_request_tokens:
            raise ApiError(
                413,
                "too_many_tokens",
                f"this request needs {encoded.tokens} tokens; the limit is "
                f"{self.settings.max_request_tokens} per request",
                field=call.documents_field,
                limit=self.settings.max_request_tokens,
            )
        if call.refuse_truncation and encoded.query_capped:
            raise ApiError(
                413,
                "input_too_long",
                f"the query has {encoded.query_tokens} tokens; the model reads at most "
                f"{encoder.query_max_length} (send truncate=true to cut it)",
                field="query",
                limit=encoder.query_max_length,
            )
        if call.refuse_truncation and encoded.truncated:
            first = encoded.truncated[0]
            raise ApiError(
                413,
                "input_too_long",
                f"{len(encoded.truncated)} of the {call.documents_field} (the first at index "
                f"{first}) are longer than the model reads with this query "
                f"({encoder.max_length} tokens in all); send truncate=true to cut them",
                field=f"{call.documents_field}.{first}",
                limit=encoder.max_length,
            )
        try:
            job = self.batcher.submit(encoded.features)
        except ShuttingDown:
            raise ApiError(
                503,
                "shutting_down",
                "the server is shutting down",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        logits = await self._wait(job, disconnected)
        pooled = Reranker.pool(logits, encoded.features, len(call.documents))
        raw = [float(x) for x in pooled]
        scores = [sigmoid(x) for x in raw]
        # Reranker.rerank's order: by score, ties in input order; top_n past the end is all.
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: call.top_n]
        warnings = []
        if encoded.query_capped:
            warnings.append(
                f"the query has {encoded.query_tokens} tokens; only the first "
                f"{encoder.query_max_length} were read"
            )
        if encoded.truncated:
            shown = ", ".join(map(str, encoded.truncated[:10]))
            more = ", ..." if len(encoded.truncated) > 10 else ""
            warnings.append(
                f"{len(encoded.truncated)} documents were not read in full (indices {shown}{more})"
            )
        return Ranked(order, scores, raw, encoded.tokens, warnings)

    async def _wait(self, job: Job, disconnected: Callable[[], Awaitable[None]]) -> np.ndarray:
        """The job's logits; if the client goes away first, its queued inputs are dropped."""
        left = asyncio.ensure_future(disconnected())
        try:
            done, _ = await asyncio.wait({job.future, left}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.batcher.cancel(job)
            raise
        finally:
            left.cancel()
        if job.future not in done:
            self.batcher.cancel(job)
            self.metrics.dropped.labels("client_disconnected").inc()
            log.info("request %s: client disconnected; dropped from the queue", REQUEST_ID.get())
            raise ClientGone()
        return job.future.result()


class ClientGone(Exception):
    """Nobody is left to read the response."""
