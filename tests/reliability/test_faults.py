"""Faults: clients that hang up, a model that throws, SIGTERM under load, oversized work.

Each test checks that the fault costs only the requests it touches: no queue slot leaks,
the inference thread keeps going, and the next request is answered.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from crossrank.server import service as service_module
from server.conftest import gated, metric, running, texts, wait_until_healthy

QUERY = "neural reranking"


def wait_until(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def idle(url) -> bool:
    service = url.app.state.service
    return service.admitted == 0 and service.batcher.queued_requests == 0


def hang_up(port: int, body: bytes, send: int, pause: float) -> None:
    """Send the headers and the first ``send`` bytes of the body, wait, and close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            f"POST /v2/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:send])
        time.sleep(pause)
        # RST rather than FIN: the harshest way for a client to vanish.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def test_clients_hanging_up_at_any_point_leak_no_queue_slot(reranker):
    rng = random.Random(7)
    with running(reranker, max_queue=4) as url:
        port = int(url.rsplit(":", 1)[1])
        body = httpx.Request(
            "POST", url, json={"query": QUERY, "documents": texts(40, seed=1, longest=200)}
        ).content
        # Mid-headers-done-body, mid-tokenizing, queued, mid-scoring: cut at random points,
        # 24 clients at once (6 times the queue), so some meet a full queue too.
        cuts = [(rng.randint(0, len(body)), rng.choice([0, 0.01, 0.05, 0.2])) for _ in range(24)]
        cuts += [(len(body), p) for p in (0, 0.001, 0.01, 0.05, 0.1, 0.3)]
        threads = [threading.Thread(target=hang_up, args=(port, body, *cut)) for cut in cuts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        wait_until(lambda: idle(url))
        metrics = httpx.get(f"{url}/metrics").text
        assert metric(metrics, "crossrank_requests_in_flight") == 0
        # A client that hangs up is a 499 (or a 429 from the full queue), never a 500.
        assert 'status="500"' not in metrics and 'status="499"' in metrics

        # Every slot is free again: max_queue requests at once are all admitted.
        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                replies = await asyncio.gather(
                    *(
                        client.post("/v2/rerank", json={"query": QUERY, "documents": ["a", "b"]})
                        for _ in range(4)
                    )
                )
            return [r.status_code for r in replies]

        assert asyncio.run(burst()) == [200] * 4


def test_a_client_that_leaves_while_its_batch_is_scored_frees_its_slot(reranker):
    slow, gate = gated(reranker)
    with running(slow, max_queue=1) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["a"]}, timeout=0.5)
        assert gate.entered.is_set()  # it left while its inputs were inside the model
        gate.opened.set()
        wait_until(lambda: idle(url))
        ok = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["b"]}, timeout=30)
        assert ok.status_code == 200  # the one slot is free and the worker unwedged


class FailSecondCall:
    """Reranker.logits that holds its first call at a gate and raises on its second."""

    def __init__(self, logits):
        self.logits = logits
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, features):
        self.calls.append(len(features))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.opened.wait(30)
        if len(self.calls) == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.logits(features)


def test_an_inference_error_fails_only_its_batch(reranker, caplog):
    caplog.set_level(logging.INFO)
    features = reranker.encoder.encode(QUERY, ["alpha"])
    faulty = copy.copy(reranker)
    # Room for two one-document requests per model call, not three.
    faulty.max_batch_tokens = 2 * len(features[0]) + 1
    faulty.logits = FailSecondCall(reranker.logits)  # type: ignore[method-assign]
    with running(faulty) as url:
        replies: dict[str, httpx.Response] = {}

        def post(name: str) -> None:
            body = {"query": QUERY, "documents": ["alpha"]}
            replies[name] = httpx.post(f"{url}/v2/rerank", json=body, timeout=60)

        threads = {name: threading.Thread(target=post, args=(name,)) for name in "ABCD"}
        threads["A"].start()
        assert faulty.logits.entered.wait(20)  # A is inside the model (call 1)
        batcher = url.app.state.service.batcher
        for queued, name in enumerate("BCD", start=1):  # B, C, D queue in this order
            threads[name].start()
            wait_until(lambda n=queued: batcher.queued_requests == n)
        faulty.logits.opened.set()
        for thread in threads.values():
            thread.join(60)
        assert faulty.logits.calls == [1, 2, 1]  # A; B and C together (fails); D
        assert replies["A"].status_code == replies["D"].status_code == 200
        for name in "BC":
            body = replies[name].json()
            assert replies[name].status_code == 500 and body["error_type"] == "internal_error"
            assert body["request_id"] == replies[name].headers["x-request-id"]
            assert "CUDA" not in body["error"]  # details stay in the log...
            assert body["request_id"] in caplog.text  # ...under the request id
        assert "illegal memory access" in caplog.text
        after = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["b"]})
        assert after.status_code == 200
        assert idle(url)


def test_a_tokenizer_error_is_a_500_and_the_next_request_succeeds(reranker, monkeypatch):
    real = service_module.encode_request

    def broken(*args, **kwargs):
        raise MemoryError("tokenizer ran out of memory")

    with running(reranker) as url:
        monkeypatch.setattr(service_module, "encode_request", broken)
        response = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["a"]})
        assert response.status_code == 500 and response.json()["request_id"]
        monkeypatch.setattr(service_module, "encode_request", real)
        ok = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["a"]})
        assert ok.status_code == 200 and idle(url)


def test_an_out_of_memory_sized_request_is_refused_before_tokenizing(reranker, monkeypatch):
    tokenized: list[int] = []
    real = service_module.encode_request

    def counting(encoder, query, documents, options):
        tokenized.append(len(documents))
        return real(encoder, query, documents, options)

    monkeypatch.setattr(service_module, "encode_request", counting)
    with running(reranker, max_request_chars=5000) as url:
        for path, field in [("/v1/rerank", "documents"), ("/v2/rerank", "documents"),
                            ("/rerank", "texts")]:  # fmt: skip
            huge = {"query": QUERY, field: ["x" * 1000] * 5 + ["y"]}  # 5001 + the query
            response = httpx.post(f"{url}{path}", json=huge)
            assert response.status_code == 413, response.text
            body = response.json()
            assert body["error_type"] == "too_many_characters" and body["limit"] == 5000
        assert tokenized == []  # refused without tokenizing a single document
        ok = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["x" * 1000]})
        assert ok.status_code == 200 and tokenized == [1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_under_load_answers_every_request_in_flight(tiny_checkpoint):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "crossrank.cli", "serve", "--model", str(tiny_checkpoint),
         "--port", str(port), "--max-batch-tokens", "2048"],
        env={**os.environ, "CROSSRANK_API_KEY": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_until_healthy(process, url)

        clients = 24
        bodies = [
            {"query": f"{QUERY} {i}", "documents": texts(60, seed=i, longest=300)}
            for i in range(clients)
        ]

        async def load() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=clients)
            async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
                tasks = [asyncio.ensure_future(client.post("/v2/rerank", json=b)) for b in bodies]
                # SIGTERM once every request is admitted (answered or in flight) and most
                # still wait for the model.
                while True:
                    text = (await client.get("/metrics")).text
                    in_flight = metric(text, "crossrank_requests_in_flight")
                    done = sum(t.done() for t in tasks)
                    if in_flight + done >= clients and in_flight >= clients // 2:
                        break
                    assert done < clients // 2, "the load finished before the signal"
                    await asyncio.sleep(0.01)
                print(f"\nSIGTERM with {in_flight:.0f} of {clients} requests in flight")
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*tasks)

        replies = asyncio.run(load())
        assert [r.status_code for r in replies] == [200] * clients
        assert all(len(r.json()["results"]) == 60 for r in replies)
        assert process.wait(60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    log = process.stdout.read()
    assert "Application shutdown complete" in log
    assert log.count('"POST /v2/rerank" 200') == clients
