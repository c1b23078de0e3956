"""The service layer: one internal rerank request, its limits, tokenization and the queue.

It knows nothing of HTTP or of any API dialect: each dialect's module (``jina.py``,
``tei.py``, ...) turns its body into a ``RerankCall`` and a ``Ranked`` back into its reply,
and the route tells the service how to learn that the client left. One ``Service`` serves
one model; below it is only its ``Batcher`` (and through it ``Reranker.logits``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from crossrank.engine.tokenization import InputTooLong
from crossrank.reranker import Reranker
from crossrank.server.admission import TokenBudget, prior_tokens_per_second
from crossrank.server.batcher import Batcher, BatchStats, Job, ShuttingDown, glibc_malloc_trim
from crossrank.server.encoding import Encoded, EncodeOptions, encode_pairs, encode_request
from crossrank.server.metrics import ModelMetrics
from crossrank.server.watchdog import Watchdog

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


DEFAULT_MODEL_NAME = "crossrank-default"


@dataclass(frozen=True)
class ServerSettings:
    model_name: str = DEFAULT_MODEL_NAME  # the name of a lone model given to create_app
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
    # Tokens (model inputs' length, summed) admitted at once, queued or scoring: admission
    # by work, so one request of 1,000 long documents counts for what it costs.
    max_queue_tokens: int = 4 * 1_048_576
    # Seconds a request may be expected to wait for the model before it starts, from the
    # work ahead of it at the measured throughput; past it a 429 at once (admission.py).
    # 30 s is under the timeouts of common clients (LiteLLM's and httpx's 60 s defaults
    # less the request's own scoring). None: no limit.
    max_queue_wait_s: float | None = 30.0
    # Extra names a model answers to: (alias, served name) pairs (``--model NAME,ALIAS=PATH``).
    model_aliases: tuple[tuple[str, str], ...] = ()
    # A lone model answers requests naming any model unless this restores the 404.
    strict_model_names: bool = False
    # Slow senders (guards.py): seconds for a request's headers, then its body, to arrive;
    # open connections per client address. None turns one off.
    header_timeout_s: float | None = 10.0
    body_timeout_s: float | None = 60.0
    max_connections_per_client: int | None = 64
    # The watchdog (watchdog.py): a model call may take call_timeout_s plus
    # call_timeout_per_1k_tokens_s per 1,000 tokens of its batch; past that the server is
    # unhealthy, and hung_exit_grace_s later, if the call has still not returned, the
    # process exits (status 70) for its supervisor to restart it. None turns it off.
    call_timeout_s: float | None = 60.0
    call_timeout_per_1k_tokens_s: float = 10.0
    hung_exit_grace_s: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "max_documents",
            "max_request_tokens",
            "max_request_chars",
            "max_body_bytes",
            "max_queue",
            "max_queue_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty")
        for name in ("header_timeout_s", "body_timeout_s", "call_timeout_s", "max_queue_wait_s"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive (or None for no limit)")
        if self.max_connections_per_client is not None and self.max_connections_per_client < 1:
            raise ValueError("max_connections_per_client must be at least 1 (or None)")

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

    def __reduce__(self) -> tuple:
        # Picklable with every field (Ray Serve returns it from a model replica to the
        # front); Exception's own pickling would call __init__ with the message alone.
        return (ApiError, (self.status, self.error_type, self.message), self.__dict__)


# ---------------------------------------------------------------- the internal request


@dataclass(frozen=True)
class RerankCall:
    """What every dialect asks for, once its own fields are read.

    Per-request options that change how documents become model inputs go in
    ``EncodeOptions``, so a new one (a dialect's field) needs no change here.
    """

    query: str
    documents: list[str]
    top_n: int | None = None
    options: EncodeOptions = field(default_factory=EncodeOptions)
    refuse_truncation: bool = False  # TEI truncate=false: a 413 rather than a cut
    documents_field: str = "documents"  # the dialect's name for it, for error messages
    query_field: str = "query"
    # vLLM's N:N scoring: document i is paired with queries[i] (``query`` is then unused).
    queries: list[str] | None = None


@dataclass
class Ranked:
    order: list[int]  # document indices, best first, at most top_n
    scores: list[float]  # sigmoid scores, by document index
    logits: list[float]  # raw scores, by document index
    tokens: int
    inputs: int  # model inputs: one per document, or per window of a long one
    warnings: list[str] = field(default_factory=list)


class Service:
    """One served model: limits, its queue and scoring, independent of any API dialect."""

    def __init__(
        self, name: str, reranker: Reranker, settings: ServerSettings, metrics: ModelMetrics
    ):
        self.name = name
        self.reranker = reranker
        self.settings = settings
        self.metrics = metrics
        self.watchdog = (
            None
            if settings.call_timeout_s is None
            else Watchdog(
                name,
                timeout_s=settings.call_timeout_s,
                per_1k_tokens_s=settings.call_timeout_per_1k_tokens_s,
                exit_grace_s=settings.hung_exit_grace_s,
            )
        )
        self.budget = TokenBudget(
            settings.max_queue_tokens,
            settings.max_queue_wait_s,
            prior_tokens_per_second(reranker.model),
        )
        self.batcher = Batcher(
            reranker.logits if self.watchdog is None else self.watchdog.watch(reranker.logits),
            max_batch_tokens=reranker.max_batch_tokens,
            on_batch=self._on_batch,
            release_memory=glibc_malloc_trim(),
        )
        metrics.watch(self.batcher, self.budget)
        self.admitted = 0  # touched only on the event loop, so no lock

    @property
    def max_length(self) -> int:
        return self.reranker.max_length

    @property
    def long_documents(self) -> str:
        return self.reranker.encoder.long_documents

    def _on_batch(self, stats: BatchStats) -> None:
        self.metrics.observe_batch(stats)
        self.budget.observe(stats)

    def unhealthy(self, reason: str) -> ApiError:
        """The 503 for requests to a model whose call hung (see watchdog.py)."""
        retry = self.watchdog.retry_after_s() if self.watchdog else RETRY_AFTER_SECONDS
        return ApiError(
            503, "model_unhealthy", reason + "; retry later", headers={"Retry-After": str(retry)}
        )

    @property
    def reads_instruction(self) -> bool:
        """Whether the model has a prompt for an instruction (decoder rerankers)."""
        return self.reranker.encoder.prompt is not None

    async def rerank(self, call: RerankCall, disconnected: Callable[[], Awaitable[None]]) -> Ranked:
        """Score the call's documents; ``disconnected()`` returns once the client has left
        (its queued inputs are then dropped and ``ClientGone`` raised)."""
        settings = self.settings
        if self.watchdog is not None and self.watchdog.reason is not None:
            raise self.unhealthy(self.watchdog.reason)
        queries = [call.query] if call.queries is None else call.queries
        for i, query in enumerate(queries):
            if not NOT_BLANK_TEXT.search(query):
                name = call.query_field if call.queries is None else f"{call.query_field}.{i}"
                raise ApiError(
                    400, "empty_query", f"{name} is empty or only whitespace", field=name
                )
        if len(call.documents) > settings.max_documents:
            raise ApiError(
                413,
                "too_many_documents",
                f"{len(call.documents)} {call.documents_field} in one request; "
                f"the limit is {settings.max_documents}",
                field=call.documents_field,
                limit=settings.max_documents,
            )
        chars = sum(len(q) for q in queries) + sum(len(d) for d in call.documents)
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
            self.metrics.refused("queue_requests")
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
        # Tokenizing a thousand documents takes long enough to stall every other client,
        # so it runs in a worker thread (the tokenizer releases the GIL).
        encoder = self.reranker.encoder
        try:
            if call.queries is None:
                encoded = await asyncio.to_thread(
                    encode_request, encoder, call.query, call.documents, call.options
                )
            else:
                encoded = await asyncio.to_thread(
                    encode_pairs, encoder, call.queries, call.documents, call.options
                )
        except InputTooLong as error:
            raise ApiError(
                413, "input_too_long", str(error), field="instruction", limit=encoder.max_length
            ) from None
        self._refuse_beyond_limits(call, encoded)
        logits = await self._infer(encoded, disconnected)
        pooled = Reranker.pool(logits, encoded.features, len(call.documents))
        raw = [float(x) for x in pooled]
        scores = [self.reranker.activate(x) for x in raw]
        # Reranker.rerank's order: by score, ties in input order; top_n past the end is all.
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: call.top_n]
        warnings = self._truncation_warnings(encoded)
        return Ranked(order, scores, raw, encoded.tokens, len(encoded.features), warnings)

    def _refuse_beyond_limits(self, call: RerankCall, encoded: Encoded) -> None:
        """413 for a request over the token limit or one that may not be truncated; 429/503
        when the token budget of the requests in flight cannot take it now."""
        encoder = self.reranker.encoder
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
        refusal = self.budget.refusal(encoded.tokens)
        if refusal is not None:
            self.metrics.refused(refusal.error_type)
            retry = refusal.retry_after_s
            raise ApiError(
                refusal.status,
                refusal.error_type,
                refusal.message,
                field=call.documents_field if refusal.status == 413 else None,
                limit=refusal.limit,
                headers=None if retry is None else {"Retry-After": str(retry)},
            )

    async def _infer(
        self, encoded: Encoded, disconnected: Callable[[], Awaitable[None]]
    ) -> np.ndarray:
        """The request's logits from the shared batcher, its tokens held in the budget."""
        self.budget.admit(encoded.tokens)
        try:
            try:
                job = self.batcher.submit(encoded.features)
            except ShuttingDown:
                raise ApiError(
                    503,
                    "shutting_down",
                    "the server is shutting down",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                ) from None
            return await self._wait(job, disconnected)
        finally:
            self.budget.release(encoded.tokens)

    def _truncation_warnings(self, encoded: Encoded) -> list[str]:
        encoder = self.reranker.encoder
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
        return warnings

    async def _wait(self, job: Job, disconnected: Callable[[], Awaitable[None]]) -> np.ndarray:
        """The job's logits; if the client goes away first, its queued inputs are dropped."""
        left = asyncio.ensure_future(disconnected())
        waits = {job.future, left}
        hung = None if self.watchdog is None else asyncio.ensure_future(self.watchdog.tripped())
        if hung is not None:
            waits.add(hung)
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.batcher.cancel(job)
            raise
        finally:
            left.cancel()
            if hung is not None:
                hung.cancel()
        if hung is not None and hung in done and job.future not in done:
            self.batcher.cancel(job)
            raise self.unhealthy(hung.result())
        if job.future not in done:
            self.batcher.cancel(job)
            self.metrics.dropped("client_disconnected")
            log.info("request %s: client disconnected; dropped from the queue", REQUEST_ID.get())
            raise ClientGone()
        return job.future.result()


class ClientGone(Exception):
    """Nobody is left to read the response."""
