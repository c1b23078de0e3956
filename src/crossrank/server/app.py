"""The HTTP layer: three API dialects as thin adapters over one internal rerank request.

Layers, outermost first, each knowing only the next (as in text-embeddings-inference):

* ``FrontDoor`` (ASGI middleware, here): request ids, access log, metrics, API key, body size.
* routes (FastAPI, here): each dialect's schema, turned into a ``RerankCall`` and back.
* ``Service.rerank`` (``service.py``): limits, tokenization in a thread, the queue,
  client disconnects.
* ``Batcher`` (``batcher.py``): one inference thread packing inputs of many requests per
  model call, over ``Reranker.logits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossrank import __version__
from crossrank.reranker import Reranker
from crossrank.server.encoding import EncodeOptions
from crossrank.server.metrics import CONTENT_TYPE, ServerMetrics
from crossrank.server.schemas import (
    ApiVersion,
    CohereV2RerankRequest,
    CohereV2RerankResponse,
    CohereV2Result,
    ErrorBody,
    Health,
    JinaRerankRequest,
    JinaRerankResponse,
    JinaResult,
    Meta,
    MetaTokens,
    ModelCard,
    ModelList,
    TeiRank,
    TeiRerankRequest,
    Usage,
)
from crossrank.server.service import (
    REQUEST_ID,
    ApiError,
    ClientGone,
    Ranked,
    RerankCall,
    ServerSettings,
    Service,
)

__all__ = ["ApiError", "ServerSettings", "create_app"]

log = logging.getLogger("crossrank.server")
access_log = logging.getLogger("crossrank.server.access")

# A client may pass its own X-Request-ID to correlate logs; anything else is replaced,
# so a header cannot inject text into log lines.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
QUIET_ROUTES = {"/health", "/metrics"}  # logged at debug level


def error_response(
    status: int,
    error_type: str,
    message: str,
    *,
    field: str | None = None,
    limit: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(
        error=message, error_type=error_type, field=field, limit=limit, request_id=REQUEST_ID.get()
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


async def wait_for_disconnect(request: Request) -> None:
    # The body has been read, so the next message the server sends is the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# ---------------------------------------------------------------- the front door


class FrontDoor:
    """Outermost ASGI layer: request id, access log, metrics, API key and body size.

    Written as plain ASGI rather than ``BaseHTTPMiddleware`` so that the client's
    disconnect still reaches the route (the queue drops requests nobody waits for).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ServerSettings,
        metrics: ServerMetrics,
        routes: Sequence[BaseRoute],
    ):
        self.app = app
        self.settings = settings
        self.metrics = metrics
        # Compared as SHA-256 digests, so that the comparison's time reveals neither the
        # key's content (compare_digest) nor its length (digests are all 32 bytes).
        self.key = hashlib.sha256(settings.api_key.encode()).digest() if settings.api_key else None
        # Metric labels are the app's route paths, never raw paths: a scanner hitting
        # random URLs must not create a time series per URL.
        self.paths = {getattr(route, "path", "") for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if CLIENT_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 499  # unless a response starts: the client went away first

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            rejection = self.check(scope, headers)
            if rejection is not None:
                await rejection(scope, receive, send_with_id)
                return
            body = await self.read_body(scope, headers, receive)
            if isinstance(body, Disconnected):
                return  # the client left mid-body: nobody to answer (logged as 499)
            if isinstance(body, Response):
                await body(scope, receive, send_with_id)
                return
            await self.app(scope, replay(body, receive), send_with_id)
        except Exception:
            # A bug, not the client's fault. Answered here rather than by Starlette's outer
            # error layer so that the 500 carries the request id, in the body and the log.
            log.exception("request %s failed", request_id)
            if status != 499:
                raise  # the response had started: nothing more can be sent
            failure = error_response(
                500, "internal_error", "internal server error; see the server log"
            )
            await failure(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            route = path if path in self.paths else "other"
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            client = scope.get("client") or ("-", 0)
            # Never the headers: they carry the API key. An unknown path is escaped and
            # cut short, so a request cannot forge log lines.
            shown = route if route != "other" else ascii(path[:200])
            # Probes and scrapes every few seconds would drown the requests that matter.
            level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
            access_log.log(
                level,
                '%s "%s %s" %d %.1fms id=%s',
                client[0],
                scope["method"],
                shown,
                status,
                seconds * 1000,
                request_id,
            )
            REQUEST_ID.reset(token)

    def check(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        if self.key is None or scope["path"] == "/health" or scope["method"] == "OPTIONS":
            return None
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        # compare_digest takes as long for a near miss as for a wild guess.
        digest = hashlib.sha256(given.strip()).digest()
        if scheme.lower() == b"bearer" and hmac.compare_digest(digest, self.key):
            return None
        return error_response(
            401,
            "unauthorized",
            "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def read_body(
        self, scope: Scope, headers: dict[bytes, bytes], receive: Receive
    ) -> bytes | Response | Disconnected | None:
        """The whole body, a 413 as soon as it is known to be over the limit, or
        ``DISCONNECTED``; None for a method without a body."""
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return None
        limit = self.settings.max_body_bytes
        too_large = error_response(
            413,
            "body_too_large",
            f"the request body is over the limit of {limit} bytes",
            limit=limit,
        )
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return too_large
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return DISCONNECTED
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class Disconnected:
    """``read_body``'s answer when the client left before the body was complete."""


DISCONNECTED = Disconnected()


def replay(body: bytes | None, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever the client sends next."""
    if body is None:
        return receive
    sent = False

    async def receive_again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


# ---------------------------------------------------------------- the app


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in [
        (400, "The query is empty."),
        (413, "The body, the documents or their tokens are over a limit."),
        (422, "A field is missing, of the wrong type, out of range or unknown."),
        (429, "The queue is full; retry after the Retry-After header's seconds."),
        (503, "The server is shutting down."),
    ]
}


def document_text(document: str | dict[str, str], index: int, rank_fields: list[str] | None) -> str:
    """The text to score for a Jina/Cohere v1 document."""
    if isinstance(document, str):
        return document
    fields = rank_fields or ["text"]
    for name in fields:
        if name not in document:
            hint = "" if rank_fields else " (or name the fields to rank on in rank_fields)"
            raise ApiError(
                422,
                "missing_field",
                f"document {index} has no {name!r} field{hint}",
                field=f"documents.{index}.{name}",
            )
    if len(fields) == 1:
        return document[fields[0]]
    # Several fields: one "name: value" line each, in rank_fields order (Cohere's format).
    return "\n".join(f"{name}: {document[name]}" for name in fields)


# Pydantic names the union member that failed in the error location ("documents.1.str");
# the client's field is the location without it.
UNION_MEMBER = re.compile(r"str|int|bool|function-\w+\[.*\]|dict\[.*\]|list\[.*\]")


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """A readable message, one clause per field, and the dotted name of the first field."""
    by_field: dict[str, list[str]] = {}
    for error in errors:
        location = [str(x) for x in error.get("loc", ())]
        if location and location[0] == "body":
            location = location[1:]
        if location and UNION_MEMBER.fullmatch(location[-1]):
            location = location[:-1]
        if len(location) > 1 and UNION_MEMBER.fullmatch(location[-2]):
            del location[-2]  # a field inside a union member: documents.0.dict[str,str].text
        name = ".".join(location) or "body"
        message = "unknown field" if error.get("type") == "extra_forbidden" else error.get("msg")
        messages = by_field.setdefault(name, [])
        if message not in messages:
            messages.append(message or "invalid")
    # A union reports every member's error: "documents.0: should be a string" beside
    # "documents.0.note: not valid Unicode". The deeper one says what is really wrong.
    for name in list(by_field):
        if any(other.startswith(name + ".") for other in by_field):
            del by_field[name]
    text = "; ".join(f"{name}: {' or '.join(ms)}" for name, ms in by_field.items())
    return text, next(iter(by_field), None)


def create_app(reranker: Reranker, settings: ServerSettings) -> FastAPI:
    """The rerank server for one loaded model."""
    metrics = ServerMetrics()
    service = Service(reranker, settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        log.info(
            "serving %s (max_length %d, %s long documents), API key %s",
            settings.model_name,
            reranker.max_length,
            reranker.encoder.long_documents,
            "required" if settings.api_key else "not set",
        )
        yield
        # The HTTP server has already waited for in-flight requests; finish the queue.
        await asyncio.to_thread(service.batcher.stop)

    app = FastAPI(
        title="crossrank",
        version=__version__,
        description=(
            "Cross-encoder reranking with Jina, Cohere (v1, v2) and text-embeddings-inference "
            f"rerank APIs. Model: {settings.model_name}."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return error_response(
            error.status,
            error.error_type,
            error.message,
            field=error.field,
            limit=error.limit,
            headers=error.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        errors = error.errors()
        message, name = validation_message(errors)
        kind = "invalid_json" if any(e.get("type") == "json_invalid" for e in errors) else None
        if name == "body" and kind is None:
            message = "the body must be a JSON object (Content-Type: application/json); " + message
        return error_response(422, kind or "validation_error", message, field=name)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 400:
            # FastAPI's own 400, raised when the body cannot be decoded at all (bytes that
            # are not UTF-8); the routes never raise HTTPException. The same 422 as any
            # other body that is not JSON, as documented.
            return error_response(
                422, "invalid_json", "the body is not JSON text (UTF-8)", field="body"
            )
        kinds = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            error.status_code,
            kinds.get(error.status_code, "http_error"),
            str(error.detail),
            headers=error.headers,
        )

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it; it marks the log and metrics

    def meta(version: str, ranked: Ranked) -> Meta:
        return Meta(
            api_version=ApiVersion(version=version),
            tokens=MetaTokens(input_tokens=ranked.tokens),
            warnings=ranked.warnings or None,
        )

    @app.post(
        "/v1/rerank",
        response_model=JinaRerankResponse,
        response_model_exclude_none=True,
        responses=ERRORS,
        tags=["rerank"],
        summary="Jina rerank (also Cohere v1)",
    )
    async def jina_rerank(body: JinaRerankRequest, request: Request) -> Any:
        texts = [document_text(d, i, body.rank_fields) for i, d in enumerate(body.documents)]
        call = RerankCall(
            body.query,
            texts,
            body.top_n,
            EncodeOptions(
                max_tokens_per_doc=body.max_tokens_per_doc,
                max_chunks_per_doc=body.max_chunks_per_doc,
            ),
        )
        ranked = await service.rerank(call, lambda: wait_for_disconnect(request))
        results = [
            JinaResult(
                index=i,
                relevance_score=ranked.scores[i],
                document=(as_object(body.documents[i]) if body.return_documents else None),
            )
            for i in ranked.order
        ]
        return JinaRerankResponse(
            id=REQUEST_ID.get(),
            model=settings.model_name,
            usage=Usage(total_tokens=ranked.tokens),
            results=results,
            meta=meta("1", ranked),
        )

    @app.post(
        "/v2/rerank",
        response_model=CohereV2RerankResponse,
        response_model_exclude_none=True,
        responses=ERRORS,
        tags=["rerank"],
        summary="Cohere v2 rerank",
    )
    async def cohere_v2_rerank(body: CohereV2RerankRequest, request: Request) -> Any:
        call = RerankCall(
            body.query,
            body.documents,
            body.top_n,
            EncodeOptions(max_tokens_per_doc=body.max_tokens_per_doc),
        )
        ranked = await service.rerank(call, lambda: wait_for_disconnect(request))
        return CohereV2RerankResponse(
            id=REQUEST_ID.get(),
            results=[
                CohereV2Result(index=i, relevance_score=ranked.scores[i]) for i in ranked.order
            ],
            meta=meta("2", ranked),
        )

    @app.post(
        "/rerank",
        response_model=list[TeiRank],
        response_model_exclude_none=True,
        responses=ERRORS,
        tags=["rerank"],
        summary="text-embeddings-inference rerank",
    )
    async def tei_rerank(body: TeiRerankRequest, request: Request) -> Any:
        call = RerankCall(
            body.query,
            body.texts,
            options=EncodeOptions(long_documents="truncate" if body.truncate else None),
            refuse_truncation=body.truncate is False,
            documents_field="texts",
        )
        ranked = await service.rerank(call, lambda: wait_for_disconnect(request))
        values = ranked.logits if body.raw_scores else ranked.scores
        # Sorted by the score returned, which for raw scores can break sigmoid's ties.
        order = sorted(ranked.order, key=lambda i: -values[i])
        return [
            TeiRank(index=i, score=values[i], text=body.texts[i] if body.return_text else None)
            for i in order
        ]

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        return Health(status="ok", model=settings.model_name)

    @app.get("/v1/models", response_model=ModelList, tags=["service"])
    async def models() -> ModelList:
        card = ModelCard(
            id=settings.model_name,
            max_length=reranker.max_length,
            long_documents=reranker.encoder.long_documents,
        )
        return ModelList(data=[card])

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus metrics"}},
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    customize_openapi(app, settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )
    # Added last, so outermost: it sees (and counts, and logs) every response.
    app.add_middleware(FrontDoor, settings=settings, metrics=metrics, routes=app.routes)
    return app


def as_object(document: str | dict[str, str]) -> dict[str, str]:
    return {"text": document} if isinstance(document, str) else document


def customize_openapi(app: FastAPI, settings: ServerSettings) -> None:
    """Put this server's settings in its schema: the document limit and the bearer key."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        models = schema["components"]["schemas"]
        for model, name in [
            ("JinaRerankRequest", "documents"),
            ("CohereV2RerankRequest", "documents"),
            ("TeiRerankRequest", "texts"),
        ]:
            models[model]["properties"][name]["maxItems"] = settings.max_documents
        if settings.api_key:
            add_bearer_auth(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_bearer_auth(schema: dict[str, Any]) -> None:
    """Declare the bearer key (the FrontDoor enforces it) on every route but /health."""
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    unauthorized = {
        "description": "Missing or wrong API key.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for path, operations in schema["paths"].items():
        if path == "/health":
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation["responses"]["401"] = unauthorized
