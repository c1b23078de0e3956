"""``crossrank serve`` as a process: startup, the API key from the environment, SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from crossrank.cli import main
from crossrank.server.cli import add_parser, model_name, model_specs, serve_command

from .conftest import metric, wait_until_healthy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_finishes_in_flight_requests_then_exits(tiny_checkpoint):
    key = "env-key-never-logged"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "crossrank.cli", "serve", "--model", str(tiny_checkpoint),
         "--port", str(port), "--max-batch-tokens", "4096"],
        env={**os.environ, "CROSSRANK_API_KEY": key},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {key}"}
    try:
        wait_until_healthy(process, url)

        reply = {}
        documents = ["search rank model " * 150] * 60  # a second or more of work
        worker = threading.Thread(
            target=lambda: reply.update(
                response=httpx.post(
                    f"{url}/v2/rerank",
                    json={"query": "q", "documents": documents},
                    headers=auth,
                    timeout=120,
                )
            )
        )
        worker.start()
        while (
            metric(httpx.get(f"{url}/metrics", headers=auth).text, "crossrank_requests_in_flight")
            < 1
        ):
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        worker.join(120)
        assert reply["response"].status_code == 200
        assert len(reply["response"].json()["results"]) == 60
        # uvicorn re-raises the signal once it has shut down, so a supervisor sees SIGTERM.
        assert process.wait(60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    log = process.stdout.read()
    assert "/v2/rerank" in log and "id=" in log  # requests are logged with their id...
    assert key not in log  # ...and the key is not
    assert "Application shutdown complete" in log
    with httpx.Client() as client:  # and nothing listens any more
        try:
            client.get(f"{url}/health", timeout=2)
            raise AssertionError("still serving after SIGTERM")
        except httpx.TransportError:
            pass


def test_serve_is_a_crossrank_subcommand_with_safe_defaults(tiny_checkpoint, capsys):
    seen = {}
    parse = argparse.ArgumentParser().add_subparsers()
    add_parser(parse)
    args = parse.choices["serve"].parse_args([])
    seen.update(vars(args))
    assert args.func is serve_command
    with pytest.raises(SystemExit):  # registered with the crossrank command
        main(["serve", "--help"])
    assert "--max-queue" in capsys.readouterr().out
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8000 and seen["model"] == []
    assert seen["api_key"] is None and seen["cors_origin"] == []
    assert model_name(None) == "crossrank-default"
    assert model_name(str(tiny_checkpoint)) == tiny_checkpoint.name
    assert model_name("BAAI/bge-reranker-base") == "BAAI/bge-reranker-base"


def test_serve_exposes_the_speed_settings():
    parse = argparse.ArgumentParser().add_subparsers()
    add_parser(parse)
    serve = parse.choices["serve"]
    args = serve.parse_args(["--dtype", "bfloat16", "--threads", "2", "--max-batch-tokens", "4096"])
    assert (args.dtype, args.threads, args.max_batch_tokens) == ("bfloat16", 2, 4096)
    assert serve.parse_args(["--dtype", "int8"]).dtype == "int8"
    defaults = serve.parse_args([])
    assert defaults.dtype is None and defaults.threads is None
    with pytest.raises(SystemExit):
        serve.parse_args(["--dtype", "int4"])


def test_models_are_named_with_name_equals_path(tiny_checkpoint, tmp_path):
    assert model_specs([]) == ([("crossrank-default", None)], {})
    path = str(tiny_checkpoint)
    assert model_specs([path]) == ([(tiny_checkpoint.name, path)], {})
    assert model_specs([f"fast={path}", "big=BAAI/bge-reranker-base"]) == (
        [("fast", path), ("big", "BAAI/bge-reranker-base")],
        {},
    )
    odd = tmp_path / "a=b"  # a folder whose name holds "=" is a path, not NAME=PATH
    odd.mkdir()
    assert model_specs([str(odd)]) == ([("a=b", str(odd))], {})
    duplicates = [f"a={path}", f"a={path}"], [f"a,b={path}", f"b={path}"], [f"a,a={path}"]
    for bad in (["=x"], ["x="], ["a,={path}"], [",a=x"], *duplicates):
        with pytest.raises(SystemExit):
            model_specs(bad)


def test_aliases_follow_the_name(tiny_checkpoint):
    path = str(tiny_checkpoint)
    specs, aliases = model_specs([f"fast, rerank-v3.5,rerank-english-v3.0={path}", f"big={path}"])
    assert specs == [("fast", path), ("big", path)]
    assert aliases == {"rerank-v3.5": "fast", "rerank-english-v3.0": "fast"}


def test_serve_two_named_models(tiny_checkpoint, tiny_jina_checkpoint):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "crossrank.cli", "serve", "--port", str(port),
         "--model", f"bert={tiny_checkpoint}", "--model", f"jina={tiny_jina_checkpoint}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_until_healthy(process, url)
        cards = httpx.get(f"{url}/v1/models").json()["data"]
        assert [(c["id"], c["max_length"]) for c in cards] == [("bert", 512), ("jina", 8192)]
        body = {"query": "q", "documents": ["a", "b"]}
        assert httpx.post(f"{url}/v1/rerank", json=body).json()["model"] == "bert"
        named = httpx.post(f"{url}/v1/rerank", json={**body, "model": "jina"}).json()
        assert named["model"] == "jina"
    finally:
        process.terminate()
        process.wait(60)
