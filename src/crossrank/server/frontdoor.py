"""The outermost HTTP layer: request ids, the access log, metrics, the API key, body size.

Also the one error body every layer answers with.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import Sequence

from fastapi.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossrank.server.guards import BodyTimeout, body_deadline
from crossrank.server.metrics import ServerMetrics
from crossrank.server.schemas import ErrorBody
from crossrank.server.service import REQUEST_ID, ServerSettings

log = logging.getLogger("crossrank.server")
access_log = logging.getLogger("crossrank.server.access")

# A client may pass its own X-Request-ID to correlate logs; anything else is replaced,
# so a header cannot inject text into log lines.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
QUIET_ROUTES = {"/health", "/metrics"}  # logged at debug level
# Open without the API key: the probe, and the playground page (static, no data; the
# page itself sends the key it is given with each call).
OPEN_ROUTES = {"/health", "/"}


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
        error=message,
        message=message,
        detail=message,
        error_type=error_type,
        field=field,
        limit=limit,
        request_id=REQUEST_ID.get(),
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


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
        if self.key is None:
            return None
        # A browser's CORS preflight carries no credentials, so it must pass without the
        # key, but only when CORS is on; any other OPTIONS is checked like any method.
        preflight = b"origin" in headers and b"access-control-request-method" in headers
        if scope["method"] == "OPTIONS" and preflight and self.settings.cors_origins:
            return None
        if scope["path"] in OPEN_ROUTES and scope["method"] in ("GET", "HEAD"):
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
        receive = body_deadline(receive, self.settings.body_timeout_s)
        while True:
            try:
                message = await receive()
            except BodyTimeout:
                return error_response(
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {self.settings.body_timeout_s:g} s",
                    headers={"Connection": "close"},  # the rest of the body may still come
                )
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
