"""The HTTP app: it only wires routes to the dialect modules over the served models.

Layers, outermost first, each knowing only the next (as in text-embeddings-inference):

* ``FrontDoor`` (``frontdoor.py``): request ids, access log, metrics, API key, body size.
* routes (here): a dialect module's schema (``jina``, ``cohere_v2``, ``tei``,
  ``rerank_compat``, ``infinity``, ``vllm_score``), turned by that module into a
  ``RerankCall`` and back.
* ``ServedModels`` (``models.py``): the request's ``model`` picks a ``Service``.
* ``Service.rerank`` (``service.py``): limits, tokenization in a thread, the model's
  queue, client disconnects.
* ``Batcher`` (``batcher.py``): one inference thread per model, packing inputs of many
  requests per model call, over ``Reranker.logits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from importlib.resources import files
from types import ModuleType
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, Response
from pydantic import Discriminator, Tag
from starlette.exceptions import HTTPException as StarletteHTTPException

from crossrank import __version__
from crossrank.reranker import Reranker
from crossrank.server import cohere_v2, infinity, jina, rerank_compat, tei, vllm_score
from crossrank.server.frontdoor import FrontDoor, error_response
from crossrank.server.metrics import CONTENT_TYPE, ServerMetrics
from crossrank.server.models import ServedModels
from crossrank.server.schemas import (
    IGNORED_HEADER,
    ErrorBody,
    Health,
    ModelCard,
    ModelList,
    TolerantRequest,
    shown_names,
)
from crossrank.server.service import ApiError, ClientGone, ServerSettings

__all__ = ["ApiError", "ServerSettings", "build_app", "create_app"]

log = logging.getLogger("crossrank.server")

RERANK_BODY_ERROR = "rerank_body"
# Pydantic's errors when the body is not an object at all.
NOT_AN_OBJECT = {"missing", "model_attributes_type", "model_type", "dict_type"}
NOT_UNICODE = "not valid Unicode text (a lone surrogate)"
RERANK_BODIES = {"tei", "cohere_style"}


def rerank_body_kind(body: Any) -> str | None:
    """Which /rerank body this is: TEI's sends ``texts``, the Cohere style ``documents``."""
    if isinstance(body, Mapping) and ("texts" in body) != ("documents" in body):
        return "tei" if "texts" in body else "cohere_style"
    return None


RerankBody = Annotated[
    Annotated[tei.TeiRerankRequest, Tag("tei")]
    | Annotated[rerank_compat.CompatRerankRequest, Tag("cohere_style")],
    Discriminator(
        rerank_body_kind,
        custom_error_type=RERANK_BODY_ERROR,
        custom_error_message=(
            "the body needs either `texts` (TEI's rerank) or `documents` (the Cohere-style "
            "rerank of vLLM, Infinity and Together), not both"
        ),
    ),
]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in [
        (400, "The query is empty."),
        (404, "The model named is not served here."),
        (413, "The body, the documents or their tokens are over a limit."),
        (422, "A field is missing, of the wrong type or out of range."),
        (429, "The queue is full; retry after the Retry-After header's seconds."),
        (503, "The server is shutting down, or a model call hung (see /health)."),
    ]
}
RERANK_HEADERS = {
    IGNORED_HEADER: {
        "description": "Fields sent that crossrank accepted but did not use (only if any).",
        "schema": {"type": "string"},
    },
    "x-compute-tokens": {
        "description": "Tokens the model read (TEI's header).",
        "schema": {"type": "string"},
    },
}


async def wait_for_disconnect(request: Request) -> None:
    # The body has been read, so the next message the server sends is the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


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
        if location and location[0] in RERANK_BODIES:
            location = location[1:]  # the /rerank body's tag: "tei.texts.0" is "texts.0"
        if location and UNION_MEMBER.fullmatch(location[-1]):
            location = location[:-1]
        if len(location) > 1 and UNION_MEMBER.fullmatch(location[-2]):
            del location[-2]  # a field inside a union member: documents.0.dict[str,str].text
        name = ".".join(location) or "body"
        message = NOT_UNICODE if error.get("type") == "string_unicode" else error.get("msg")
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


def create_app(
    models: Reranker | Mapping[str, Reranker], settings: ServerSettings | None = None
) -> FastAPI:
    """The rerank server for one model (named ``settings.model_name``) or several, by name
    (the first is the default)."""
    settings = settings or ServerSettings()
    if isinstance(models, Reranker):
        models = {settings.model_name: models}
    metrics = ServerMetrics()
    return build_app(ServedModels(models, settings, metrics), settings, metrics)


def build_app(served: ServedModels, settings: ServerSettings, metrics: ServerMetrics) -> FastAPI:
    """The app over models already served: here, or elsewhere (Ray Serve's front
    deployment serves models that its model replicas hold, see ray_serve.py)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.start()
        for service in served.services.values():
            log.info(
                "serving %s (max_length %d, %s long documents)",
                service.name,
                service.max_length,
                service.long_documents,
            )
        log.info("API key %s", "required" if settings.api_key else "not set")
        yield
        # The HTTP server has already waited for in-flight requests; finish the queues.
        await asyncio.to_thread(served.stop)

    app = FastAPI(
        title="crossrank",
        version=__version__,
        description=(
            "Cross-encoder reranking with the Jina, Cohere (v1, v2), text-embeddings-inference, "
            "vLLM, Infinity and Together rerank APIs. Models: " + ", ".join(served.names) + "."
        ),
        lifespan=lifespan,
    )
    app.state.served = served
    app.state.service = served.default  # the default model's service
    app.state.metrics = metrics
    add_error_handlers(app)
    add_rerank_routes(app, served)
    add_service_routes(app, served, metrics)
    customize_openapi(app, settings, served)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=[IGNORED_HEADER, "x-compute-tokens", "X-Request-ID"],
        )
    # Added last, so outermost: it sees (and counts, and logs) every response.
    app.add_middleware(FrontDoor, settings=settings, metrics=metrics, routes=app.routes)
    return app


def add_error_handlers(app: FastAPI) -> None:
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
        not_object = any(e.get("type") in NOT_AN_OBJECT for e in errors)
        if name == "body" and kind is None and not_object:
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


def add_rerank_routes(app: FastAPI, served: ServedModels) -> None:
    async def answer(
        dialect: ModuleType, body: TolerantRequest, request: Request, response: Response
    ) -> Any:
        """Any dialect: pick the model, score the dialect's call, reply in its shape."""
        chosen = served.choose(body.model)  # type: ignore[attr-defined]
        service = chosen.service
        ranked = await service.rerank(dialect.to_call(body), lambda: wait_for_disconnect(request))
        ignored = body.ignored_fields()
        if getattr(body, "instruction", None) is not None and not service.reads_instruction:
            ignored.append("instruction")  # a cross-encoder has no prompt to put it in
        if chosen.unserved_name is not None:  # the lone model answered another name
            ignored = ["model", *ignored]
            ranked.warnings.append(chosen.warning())
        if ignored:
            response.headers[IGNORED_HEADER] = shown_names(ignored)
        response.headers["x-compute-tokens"] = str(ranked.tokens)
        return dialect.reply(body, ranked, service.name, ignored)

    def route(path: str, response_model: Any, summary: str) -> Any:
        return app.post(
            path,
            response_model=response_model,
            response_model_exclude_none=True,
            responses={200: {"headers": RERANK_HEADERS}, **ERRORS},
            tags=["rerank"],
            summary=summary,
        )

    @route("/v1/rerank", jina.JinaRerankResponse, "Jina rerank (also Cohere v1)")
    async def jina_rerank(body: jina.JinaRerankRequest, request: Request, response: Response):
        return await answer(jina, body, request, response)

    @route("/v2/rerank", cohere_v2.CohereV2RerankResponse, "Cohere v2 rerank")
    async def cohere_v2_rerank(
        body: cohere_v2.CohereV2RerankRequest, request: Request, response: Response
    ):
        return await answer(cohere_v2, body, request, response)

    @route(
        "/rerank",
        list[tei.TeiRank] | rerank_compat.CompatRerankResponse,
        "TEI rerank (texts), or the vLLM/Infinity/Together rerank (documents)",
    )
    async def rerank(body: RerankBody, request: Request, response: Response):
        dialect = tei if isinstance(body, tei.TeiRerankRequest) else rerank_compat
        return await answer(dialect, body, request, response)

    for path in infinity.PATHS:

        @route(path, infinity.InfinityRerankResponse, "Infinity rerank (its reply's shape)")
        async def infinity_rerank(
            body: infinity.InfinityRerankRequest, request: Request, response: Response
        ):
            return await answer(infinity, body, request, response)

    for path in ("/score", "/v1/score"):

        @route(path, vllm_score.ScoreResponse, "vLLM score")
        async def score(body: vllm_score.ScoreRequest, request: Request, response: Response):
            return await answer(vllm_score, body, request, response)


def add_service_routes(app: FastAPI, served: ServedModels, metrics: ServerMetrics) -> None:
    page = (files("crossrank.server") / "playground.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(
        "/health",
        response_model=Health,
        tags=["service"],
        responses={503: {"model": ErrorBody, "description": "A model call hung (the reason)."}},
    )
    async def health() -> Any:
        for service in served.services.values():
            if service.watchdog is not None and service.watchdog.reason is not None:
                return error_response(
                    503,
                    "model_unhealthy",
                    service.watchdog.reason,
                    headers={"Retry-After": str(service.watchdog.retry_after_s())},
                )
        return Health(status="ok", model=served.default.name, models=served.names)

    @app.get("/v1/models", response_model=ModelList, tags=["service"])
    async def models() -> ModelList:
        cards = [
            ModelCard(
                id=service.name,
                aliases=[alias for alias, name in served.aliases.items() if name == service.name],
                max_length=service.max_length,
                long_documents=service.long_documents,
            )
            for service in served.services.values()
        ]
        return ModelList(data=cards)

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus metrics"}},
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def customize_openapi(app: FastAPI, settings: ServerSettings, served: ServedModels) -> None:
    """Put this server's settings in its schema: the model names it answers to (any, for
    a lone model without strict names), the document limit and the bearer key."""
    names = [*served.names, *served.aliases]
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        models = schema["components"]["schemas"]
        for model, documents in [
            ("JinaRerankRequest", "documents"),
            ("CohereV2RerankRequest", "documents"),
            ("TeiRerankRequest", "texts"),
            ("CompatRerankRequest", "documents"),
            ("InfinityRerankRequest", "documents"),
            ("ScoreRequest", None),
        ]:
            properties = models[model]["properties"]
            if not served.answers_any_name:
                properties["model"]["anyOf"] = [{"enum": names}, {"type": "null"}]
            if documents:
                properties[documents]["maxItems"] = settings.max_documents
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
