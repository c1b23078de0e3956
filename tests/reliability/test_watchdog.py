"""The watchdog on model calls: a hung call makes the server unhealthy (/health 503, the
waiting and new requests 503 with Retry-After), a late one makes it healthy again, and one
that never returns ends the process with a non-zero status, for a supervisor to restart."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from crossrank.server.watchdog import HUNG_EXIT_STATUS, Watchdog
from server.conftest import gated, running, texts, wait_until_healthy

QUERY = "neural reranking"
LAUNCHER = Path(__file__).with_name("hanging_serve.py")


def wait_for(condition, timeout: float) -> float:
    """Seconds until ``condition()`` held; fails past ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.02)
    return time.monotonic() - started


def test_the_deadline_grows_with_the_batch_tokens():
    dog = Watchdog("m", timeout_s=5, per_1k_tokens_s=2, exit_grace_s=1)
    assert dog.deadline_s(0) == 5 and dog.deadline_s(8192) == 5 + 2 * 8.192


def test_a_call_that_never_returns_trips_then_exits_after_the_grace():
    exits: list[int] = []
    release = threading.Event()

    async def scenario() -> tuple[str, float, list[int]]:
        dog = Watchdog("m", timeout_s=0.3, per_1k_tokens_s=0, exit_grace_s=0.5, exit=exits.append)
        dog.start()
        watched = dog.watch(lambda features: release.wait(10))
        thread = threading.Thread(target=watched, args=([[1, 2, 3]],))
        started = time.monotonic()
        thread.start()
        reason = await asyncio.wait_for(dog.tripped(), 5)
        tripped_after = time.monotonic() - started
        exits_at_trip = list(exits)
        await asyncio.sleep(1.0)  # past deadline + grace
        release.set()
        thread.join(10)
        dog.stop()
        return reason, tripped_after, exits_at_trip

    reason, tripped_after, exits_at_trip = asyncio.run(scenario())
    assert "past its deadline of 0.3 s" in reason and "3 tokens" in reason
    assert 0.25 < tripped_after < 1.5
    assert exits_at_trip == [] and exits == [HUNG_EXIT_STATUS]


def test_a_hung_call_answers_503_and_a_late_return_makes_the_server_healthy(reranker):
    hung, gate = gated(reranker)
    settings = dict(call_timeout_s=0.5, call_timeout_per_1k_tokens_s=0, hung_exit_grace_s=60)
    body = {"query": QUERY, "documents": texts(5)}
    with running(hung, **settings) as url, concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            assert httpx.get(f"{url}/health").status_code == 200
            waiting = pool.submit(httpx.post, f"{url}/v1/rerank", json=body, timeout=30)
            assert gate.entered.wait(10)
            seconds = wait_for(lambda: httpx.get(f"{url}/health").status_code == 503, 5)
            assert seconds < 0.5 + 1.0  # the deadline, plus polling and a loaded core
            health = httpx.get(f"{url}/health").json()
            assert health["error_type"] == "model_unhealthy"
            assert "past its deadline of 0.5 s" in health["message"]
            answer = waiting.result(10)
            assert answer.status_code == 503 and int(answer.headers["Retry-After"]) == 60
            assert answer.json()["error_type"] == "model_unhealthy"
            refused = httpx.post(f"{url}/v2/rerank", json=body, timeout=5)
            assert refused.status_code == 503 and "Retry-After" in refused.headers
            service = url.app.state.service
            wait_for(lambda: service.admitted == 0 and service.budget.admitted == 0, 5)
        finally:
            gate.opened.set()  # the call returns, late
        wait_for(lambda: httpx.get(f"{url}/health").status_code == 200, 10)
        assert httpx.post(f"{url}/v1/rerank", json=body, timeout=30).status_code == 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(checkpoint: Path, port: int, hang: bool) -> subprocess.Popen:
    env = {**os.environ, "CROSSRANK_API_KEY": "", "CROSSRANK_TEST_HANG": "1" if hang else "0"}
    return subprocess.Popen(
        [sys.executable, str(LAUNCHER), "serve", "--model", str(checkpoint), "--port", str(port),
         "--call-timeout", "1", "--call-timeout-per-1k-tokens", "0", "--hung-exit-grace", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def test_a_supervisor_restarts_a_server_whose_model_call_never_returns(tiny_checkpoint):
    """The test is the supervisor: it sees the exit status and starts the server again."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = {"query": QUERY, "documents": texts(5)}
    process = serve(tiny_checkpoint, port, hang=True)
    try:
        wait_until_healthy(process, url)
        started = time.monotonic()
        answer = httpx.post(f"{url}/v1/rerank", json=body, timeout=30)
        assert answer.status_code == 503 and answer.json()["error_type"] == "model_unhealthy"
        assert time.monotonic() - started < 1 + 2.0
        assert httpx.get(f"{url}/health").status_code == 503
        status = process.wait(timeout=30)
        log = process.stdout.read()
        assert status == HUNG_EXIT_STATUS, log
        assert "has not returned" in log and "exiting with status 70" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    restarted = serve(tiny_checkpoint, port, hang=False)
    try:
        wait_until_healthy(restarted, url)
        assert httpx.post(f"{url}/v1/rerank", json=body, timeout=30).status_code == 200
    finally:
        restarted.terminate()
        restarted.wait(30)
