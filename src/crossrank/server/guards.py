"""Guards against slow and greedy clients: read deadlines and a connection cap per address.

uvicorn has no deadline for a request to arrive: ``timeout_keep_alive`` covers only the idle
wait between requests and is reset by every byte received, so a client sending one byte
every few seconds holds its connection for as long as it likes (uvicorn issue #157, "Further
timeouts", still open for --timeout-request-start / --timeout-request-complete). Its
``limit_concurrency`` is one cap for all clients together, which a single greedy address
fills for everyone. So both are written here, as small extensions of uvicorn's own h11
protocol rather than a server of our own:

* the header deadline, in ``guarded_protocol``: ASGI middleware cannot see a request whose
  headers have not all arrived, so it has to live in the protocol;
* the body deadline, in ``body_deadline``: the ``FrontDoor`` reads every body through it and
  answers 408 when it runs out;
* the cap on open connections per client address, in ``guarded_protocol``.

``crossrank serve`` thus always speaks HTTP/1.1 through h11, even where httptools is
installed (uvicorn's faster parser); a model call costs far more than parsing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter

import h11
from starlette.types import Message, Receive
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("crossrank.server")

# Written straight to the socket: the request never got far enough for h11 or the app.
HEADER_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)
TOO_MANY_CONNECTIONS_RESPONSE = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


def raw_response(template: bytes, error_type: str, message: str) -> bytes:
    fields = {"error": message, "message": message, "detail": message, "error_type": error_type}
    body = json.dumps(fields).encode()
    return template % (len(body), body)


class BodyTimeout(Exception):
    """The request body did not arrive before its deadline."""


def body_deadline(receive: Receive, seconds: float | None) -> Receive:
    """``receive``, raising ``BodyTimeout`` once ``seconds`` have passed since this call
    (a deadline for the whole body, not per chunk: one byte a second would meet any
    per-chunk timeout). None means no deadline."""
    if seconds is None:
        return receive
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def receive_by_deadline() -> Message:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise BodyTimeout()
        try:
            return await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            raise BodyTimeout() from None

    return receive_by_deadline


def guarded_protocol(
    header_timeout: float | None, max_connections_per_client: int | None
) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline and a per-address connection cap,
    for ``uvicorn.Config(http=...)``. None turns either off."""
    open_connections: Counter[str] = Counter()  # shared by the server's connections

    class GuardedH11Protocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None
        counted: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else "-"
            open_connections[address] += 1
            self.counted = address
            cap = max_connections_per_client
            if cap is not None and open_connections[address] > cap:
                log.warning("%s: over %d open connections; refused one", address, cap)
                message = f"over {cap} open connections from this address; close some first"
                self.refuse(TOO_MANY_CONNECTIONS_RESPONSE, "too_many_connections", message)
                return
            self.arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm_header_timer()
            if self.counted is not None:
                open_connections[self.counted] -= 1
                if open_connections[self.counted] <= 0:
                    del open_connections[self.counted]  # the Counter must not grow forever
                self.counted = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # IDLE: this request's headers are not all here yet. The first byte of a
            # request on a kept-alive connection starts its deadline again.
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self.header_timer is None:
                    self.arm_header_timer()
            else:
                self.disarm_header_timer()

        def on_response_complete(self) -> None:
            self.disarm_header_timer()  # uvicorn's keep-alive timeout covers the idle wait
            super().on_response_complete()

        def arm_header_timer(self) -> None:
            if header_timeout is not None:
                self.header_timer = self.loop.call_later(header_timeout, self.headers_late)

        def disarm_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_late(self) -> None:
            self.header_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return
            message = f"the request headers did not arrive within {header_timeout:g} s"
            self.refuse(HEADER_TIMEOUT_RESPONSE, "header_timeout", message)

        def refuse(self, template: bytes, error_type: str, message: str) -> None:
            self.transport.write(raw_response(template, error_type, message))
            self.transport.close()

    return GuardedH11Protocol
