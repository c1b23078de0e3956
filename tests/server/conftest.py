"""Real servers on free loopback ports, serving tiny random checkpoints."""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from conftest import make_checkpoint
from crossrank import Reranker
from crossrank.server import ServerSettings, create_app
from crossrank.server.guards import guarded_protocol

# Haystack (whose rankers test_clients.py points at the server) reports usage to its
# makers unless told not to; tests reach no one.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

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
def running(
    models: Reranker | Mapping[str, Reranker], guarded: bool = False, **settings
) -> Iterator[ServerUrl]:
    """Start the app with uvicorn in a thread on a loopback port; yield its base URL.
    A lone reranker is served as "tiny"; a mapping serves each under its name. ``guarded``
    serves it as ``crossrank serve`` does: with the header deadline and connection cap."""
    settings.setdefault("model_name", "tiny")
    server_settings = ServerSettings(**settings)
    app = create_app(models, server_settings)
    # Bind first and hand uvicorn the socket: no window for another process to take the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # Accepted connections inherit this; without it, uvloop leaves Nagle on for a socket
    # it was handed, and every response waits ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = sock.getsockname()[1]
    options = {}
    if guarded:
        options["http"] = guarded_protocol(
            server_settings.header_timeout_s, server_settings.max_connections_per_client
        )
        options["backlog"] = 1024  # hundreds of slow senders connect at once
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", **options)
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


@pytest.fixture(scope="session")
def other_reranker(tmp_path_factory) -> Reranker:
    """Another tiny random model (another seed), to serve beside the first."""
    folder = make_checkpoint(tmp_path_factory.mktemp("tiny-other"), seed=1)
    return Reranker.from_pretrained(folder, device="cpu")


@pytest.fixture(scope="session")
def bundled_reranker() -> Reranker:
    """The model shipped in the package (a real one: its scores mean something)."""
    return Reranker.from_pretrained(device="cpu")


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
    """The sum of a metric's samples in a Prometheus exposition; ``name`` may carry labels
    (``'x_bucket{le="1.0"}'``) that each sample must have, among any others."""
    from prometheus_client.parser import text_string_to_metric_families

    def samples(exposition: str):
        return [s for f in text_string_to_metric_families(exposition) for s in f.samples]

    (wanted,) = samples(f"{name} 0\n")  # the name and labels asked for, parsed alike
    return sum(
        sample.value
        for sample in samples(text)
        if sample.name == wanted.name and wanted.labels.items() <= sample.labels.items()
    )
