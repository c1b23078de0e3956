"""Real servers on free loopback ports, serving the tiny random checkpoint."""

from __future__ import annotations

import contextlib
import copy
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from crossrank import Reranker
from crossrank.server import ServerSettings, create_app

WORDS = [
    "search", "rank", "model", "query", "document", "token", "neural", "dense", "sparse",
    "vector", "index", "retrieval", "passage", "answer", "question", "relevance", "score",
    "cross", "encoder", "bert", "attention", "layer", "batch",
]  # fmt: skip


def texts(count: int, seed: int = 0, longest: int = 60) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, longest))) for _ in range(count)]


class ServerUrl(str):
    """A running server's base URL, with its app (to look at its queue) as ``.app``."""

    app: FastAPI


@contextlib.contextmanager
def running(reranker: Reranker, **settings) -> Iterator[ServerUrl]:
    """Start the app with uvicorn in a thread on a loopback port; yield its base URL."""
    settings.setdefault("model_name", "tiny")
    app = create_app(reranker, ServerSettings(**settings))
    # Bind first and hand uvicorn the socket: no window for another process to take the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # Accepted connections inherit this; without it, uvloop leaves Nagle on for a socket
    # it was handed, and every response waits ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        url = ServerUrl(f"http://127.0.0.1:{port}")
        url.app = app
        yield url
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


class Gate:
    """Stands in for ``Reranker.logits`` and holds the inference thread until opened."""

    def __init__(self, reranker: Reranker):
        self.logits = reranker.logits
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []  # inputs per model call

    def __call__(self, features):
        self.calls.append(len(features))
        self.entered.set()
        if not self.opened.wait(30):
            raise TimeoutError("the test never opened the gate")
        return self.logits(features)


def gated(reranker: Reranker) -> tuple[Reranker, Gate]:
    """A copy of the reranker whose model calls wait at a gate."""
    gate = Gate(reranker)
    copy_ = copy.copy(reranker)
    copy_.logits = gate  # type: ignore[method-assign]
    return copy_, gate


@pytest.fixture(scope="session")
def reranker(tiny_checkpoint: Path) -> Reranker:
    return Reranker.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def server(reranker: Reranker) -> Iterator[ServerUrl]:
    with running(reranker) as url:
        yield url


def wait_until_healthy(process: subprocess.Popen, url: str, timeout: float = 60) -> None:
    """Wait for a ``crossrank serve`` subprocess to answer /health."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total
