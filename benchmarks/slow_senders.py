"""Slow senders against the real server: do normal clients still get served?

Starts ``crossrank serve`` on a free 127.0.0.1 port (the bundled default model), then:

1. alone: ``--clients`` normal clients send rerank requests (10 documents) back to back for
   ``--duration`` seconds;
2. again, beside ``--slow`` slow senders spread over ``--addresses`` loopback addresses
   (127.0.1.x): each sends one byte every ``--pause`` seconds, half of them stuck in their
   headers and half in their body, and connects again as soon as it is cut off.

Reports the normal clients' latency p50 / p95 in both runs and their ratio, and every slow
connection's end: a 408 (header or body deadline), a 429 (over the per-address cap) or a
close. Exit status 1 if the p95 grew more than ``--max-ratio`` (2x), a normal request failed,
or a slow connection outlived its deadline by more than 5 s.

    python benchmarks/slow_senders.py [--slow 200] [--clients 8] [--duration 60]
        [--header-timeout 5] [--body-timeout 10] [--json OUT]

Loopback only, by design; bounded: at most 600 s a run, 1,000 slow senders.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from common import benchmark_checkpoint
from load import HOST, free_port, start_server, stop_server

MAX_DURATION = 600.0
MAX_SLOW = 1000
WORDS = ["search", "rank", "model", "query", "document", "token", "neural", "passage"]
SLACK_S = 5.0  # how far past its deadline a slow connection may last before it counts


def body(rng: random.Random) -> bytes:
    documents = [" ".join(rng.choices(WORDS, k=rng.randint(20, 60))) for _ in range(10)]
    return json.dumps({"query": "neural ranking", "documents": documents}).encode()


def head(length: int) -> bytes:
    return (
        b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


async def normal_client(url: str, seed: int, stop: float, latencies: list, failures: list):
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while time.monotonic() < stop:
            started = time.monotonic()
            response = await client.post(
                "/v1/rerank", content=body(rng), headers={"Content-Type": "application/json"}
            )
            if response.status_code == 200:
                latencies.append(time.monotonic() - started)
            else:
                failures.append(response.status_code)


async def slow_connection(port: int, source: str, stuck_in_body: bool, pause: float) -> str:
    """One slow connection, to its end: '408', '429', 'closed' (no answer), 'refused'."""
    payload = body(random.Random(0))
    prefix, rest = (head(len(payload)), payload) if stuck_in_body else (b"", head(len(payload)))
    try:
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
    except OSError:
        return "refused"

    return await trickle_and_read(reader, writer, prefix, rest, pause)


async def trickle_and_read(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    prefix: bytes,
    rest: bytes,
    pause: float,
    timeout: float | None = None,
) -> str:
    """Send ``prefix``, then ``rest`` one byte every ``pause`` seconds (a slow sender) while
    reading the answer; its status ('408', '429'...), or 'closed' when none came."""

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(prefix)
            for i in range(len(rest)):
                writer.write(rest[i : i + 1])
                await writer.drain()
                await asyncio.sleep(pause)

    sending = asyncio.ensure_future(trickle())
    answer = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(4096):
                answer += chunk
    except ConnectionError:
        pass
    finally:
        sending.cancel()
        writer.close()
    return answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"


async def slow_sender(port: int, number: int, args, stop: float, ends: Counter, late: list):
    source = f"127.0.1.{1 + number % args.addresses}"
    stuck_in_body = number % 2 == 1
    deadline = args.body_timeout if stuck_in_body else args.header_timeout
    while time.monotonic() < stop:
        started = time.monotonic()
        try:
            end = await asyncio.wait_for(
                slow_connection(port, source, stuck_in_body, args.pause),
                max(0.1, stop - started) + deadline + SLACK_S,
            )
        except TimeoutError:
            end = "never cut off"
        lasted = time.monotonic() - started
        ends[f"{'body' if stuck_in_body else 'headers'}: {end}"] += 1
        if end == "never cut off" or lasted > deadline + SLACK_S:
            late.append(round(lasted, 1))
        await asyncio.sleep(0.05)  # and again


async def phase(url: str, port: int, args, slow: int) -> dict:
    stop = time.monotonic() + args.duration
    latencies: list[float] = []
    failures: list[int] = []
    ends: Counter = Counter()
    late: list[float] = []
    await asyncio.gather(
        *(normal_client(url, i, stop, latencies, failures) for i in range(args.clients)),
        *(slow_sender(port, i, args, stop, ends, late) for i in range(slow)),
    )
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [float("nan")]
    return {
        "slow_senders": slow,
        "requests": len(latencies) + len(failures),
        "failures": Counter(failures),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p95_ms": round(quantiles[-1] * 1000, 1),
        "slow_connection_ends": dict(ends),
        "slow_connections_past_deadline": late,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=200, help="slow senders")
    parser.add_argument("--clients", type=int, default=8, help="normal clients")
    parser.add_argument("--addresses", type=int, default=8, help="loopback addresses (<= 250)")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between slow bytes")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--header-timeout", type=float, default=5.0)
    parser.add_argument("--body-timeout", type=float, default=10.0)
    parser.add_argument("--max-ratio", type=float, default=2.0)
    parser.add_argument("--model", default=None, help="checkpoint (default: bundled model)")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to serve")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.duration = min(args.duration, MAX_DURATION / 2)
    args.slow = min(args.slow, MAX_SLOW)
    args.addresses = max(1, min(args.addresses, 250))

    model, label = benchmark_checkpoint(args.model)
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = Path(tempfile.mkdtemp(prefix="crossrank-slow-")) / "server.log"
    extra = ["--header-timeout", str(args.header_timeout), "--body-timeout",
             str(args.body_timeout), *args.server_arg]  # fmt: skip
    print(f"serving {label} on {url} (log {log})", flush=True)
    process = start_server(model, port, log, extra)
    try:
        httpx.post(f"{url}/v1/rerank", content=body(random.Random(9)),
                   headers={"Content-Type": "application/json"}, timeout=120)  # fmt: skip
        print(f"{args.clients} normal clients alone, {args.duration:g} s ...", flush=True)
        alone = asyncio.run(phase(url, port, args, 0))
        print(json.dumps(alone), flush=True)
        print(f"... and beside {args.slow} slow senders, {args.duration:g} s ...", flush=True)
        beside = asyncio.run(phase(url, port, args, args.slow))
        print(json.dumps(beside), flush=True)
        healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        stop_server(process)
    ratio = beside["p95_ms"] / alone["p95_ms"]
    report = {
        "model": label,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "server_arg")},
        "alone": alone,
        "beside_slow_senders": beside,
        "p95_ratio": round(ratio, 2),
        "healthy_after": healthy,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    failed = (
        ratio > args.max_ratio
        or alone["failures"]
        or beside["failures"]
        or beside["slow_connections_past_deadline"]
        or any(end.endswith("never cut off") for end in beside["slow_connection_ends"])
        or not healthy
    )
    print("FAILED" if failed else "passed", f"(p95 ratio {ratio:.2f}, limit {args.max_ratio:g})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
