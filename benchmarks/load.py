"""Load test: the real rerank server under concurrent clients, on loopback, bounded.

Starts ``crossrank serve`` on a free 127.0.0.1 port (the bundled default model, else
all-MiniLM-L6-v2 with a random head: the default model's shape and speed), then runs
``--clients`` concurrent clients for ``--warmup`` plus ``--duration`` seconds, each
sending one request after another: a TREC DL19 query and 10 to 100 of its BM25
passages, over the three API dialects (Jina / Cohere v1, Cohere v2, TEI) in turn. It
stops issuing requests at the deadline, waits for those in flight, stops the server with
SIGTERM and reports, for the requests started after the warm-up (which lets the
allocator reach its working size, as a server does in its first minute of traffic;
errors during the warm-up count too):

- requests by status; errors are anything but 200 and an explicit 429 (none allowed);
- latency p50 / p90 / p99 of answered requests, throughput (requests/s, documents/s);
- the server's resident memory (psutil), sampled each second after the warm-up: median of
  the first 10 s against the last 10 s (growth must stay under 100 MB) and the peak;
- how many requests the server packed into each model call.

Exit status 1 if there were errors or memory grew by 100 MB or more.

    python benchmarks/load.py [--clients 32] [--duration 60] [--warmup 10] [--model PATH]
                              [--json OUT]

It only ever connects to the server it started on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from common import benchmark_checkpoint, dl19

HOST = "127.0.0.1"  # loopback only, by design: not an option
MAX_DURATION = 600.0  # seconds; the script stops by itself whatever it is asked
MAX_CLIENTS = 256
REQUEST_TIMEOUT = 300.0  # a loaded 2-core machine took 106 s at p99 with 32 clients
RSS_LIMIT_MB = 100.0
DOCUMENT_COUNTS = (10, 25, 50, 100)
ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank")


@dataclass
class Tally:
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # answered (200) requests only
    documents: int = 0
    completions: list[tuple[float, int]] = field(default_factory=list)  # (when, documents)
    error_samples: list[str] = field(default_factory=list)

    def count(self, status: str, detail: str = "") -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status not in ("200", "429") and len(self.error_samples) < 5:
            self.error_samples.append(f"{status}: {detail[:300]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def body_for(route: str, query: str, passages: list[str], rng: random.Random) -> dict:
    """The request as each dialect's clients send it."""
    if route == "/rerank":
        return {"query": query, "texts": passages, "return_text": rng.random() < 0.5}
    body = {"query": query, "documents": passages, "top_n": rng.choice([None, 3, 10])}
    if route == "/v1/rerank":
        body["return_documents"] = rng.random() < 0.5
    else:
        body["model"] = "rerank-v3.5"
    return {k: v for k, v in body.items() if v is not None}


async def client(
    number: int,
    url: str,
    workload: list[tuple[str, str, list[str], list[str]]],
    measure_from: float,
    deadline: float,
    tallies: tuple[Tally, Tally],
) -> None:
    """Requests back to back until the deadline; counted in the second tally once measuring."""
    rng = random.Random(number)
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits) as http:
        turn = number
        while time.monotonic() < deadline:
            _, query, _, passages = rng.choice(workload)
            count = rng.choice(DOCUMENT_COUNTS)
            route = ROUTES[turn % len(ROUTES)]
            turn += 1
            tally = tallies[time.monotonic() >= measure_from]
            started = time.perf_counter()
            try:
                response = await http.post(
                    route, json=body_for(route, query, passages[:count], rng)
                )
            except httpx.HTTPError as error:
                tally.count(type(error).__name__, repr(error))
                continue
            status = str(response.status_code)
            tally.count(status, response.text)
            if status == "200":
                tally.latencies.append(time.perf_counter() - started)
                tally.documents += count
                tally.completions.append((time.monotonic(), count))
            elif status == "429":  # explicit back-pressure: wait as told, then go on
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


def sample_rss(
    pid: int, start: float, stop: threading.Event, samples: list[tuple[float, float]]
) -> None:
    """(seconds since ``start``, RSS in MiB) each second, from ``start`` on."""
    process = psutil.Process(pid)
    time.sleep(max(0.0, start - time.monotonic()))
    while not stop.wait(1.0):
        try:
            samples.append((time.monotonic() - start, process.memory_info().rss / 2**20))
        except psutil.NoSuchProcess:
            return


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def metric_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


def start_server(model: Path, port: int, log: Path, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "crossrank.cli", "serve", "--model", str(model),
               "--host", HOST, "--port", str(port), "--log-level", "warning", *extra]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "CROSSRANK_API_KEY"}
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the server did not start in 300 s")
        time.sleep(0.5)


def stop_server(process: subprocess.Popen) -> int:
    """SIGTERM (the server drains), a kill if it has not exited in two minutes; its status."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--model", default=None, help="checkpoint (default: see above)")
    parser.add_argument("--queries", type=int, default=None, help="DL19 queries to draw from")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to serve")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    clients = max(1, min(args.clients, MAX_CLIENTS))
    duration = max(1.0, min(args.duration, MAX_DURATION))
    warmup = max(0.0, min(args.warmup, MAX_DURATION))

    model, label = benchmark_checkpoint(args.model)
    _, workload = dl19(args.queries)
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = Path(tempfile.mkdtemp(prefix="crossrank-load-")) / "server.log"
    print(
        f"model: {label}; {len(workload)} DL19 queries; {clients} clients for "
        f"{warmup:.0f} s of warm-up and {duration:.0f} s measured"
    )
    process = start_server(model, port, log, args.server_arg)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    warm, tally = Tally(), Tally()
    try:
        started = time.monotonic() + warmup
        deadline = started + duration
        sampler = threading.Thread(
            target=sample_rss, args=(process.pid, started, stop, samples), daemon=True
        )
        sampler.start()
        before: list[str] = []

        async def run() -> None:
            async def mark() -> None:  # the server's counters when measuring starts
                await asyncio.sleep(max(0.0, started - time.monotonic()))
                async with httpx.AsyncClient(timeout=30) as http:
                    before.append((await http.get(f"{url}/metrics")).text)

            await asyncio.gather(
                mark(),
                *(
                    client(i, url, workload, started, deadline, (warm, tally))
                    for i in range(clients)
                ),
            )

        asyncio.run(run())
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join(5)
        after = httpx.get(f"{url}/metrics", timeout=10).text
        healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        stop.set()
        exit_status = stop_server(process)

    answered = len(tally.latencies)
    done = [c for t in (warm, tally) for c in t.completions if c[0] >= started]
    errors = sum(n for t in (warm, tally) for s, n in t.statuses.items() if s not in ("200", "429"))
    first = [rss for t, rss in samples if t <= 10]
    # The first and last 10 s of the measured load, not of the drain after it.
    last = [rss for t, rss in samples if duration - 10 <= t <= duration]
    growth = statistics.median(last) - statistics.median(first) if first and last else float("nan")
    calls = metric_sum(after, "crossrank_batch_requests_count") - metric_sum(
        before[0], "crossrank_batch_requests_count"
    )
    packed = metric_sum(after, "crossrank_batch_requests_sum") - metric_sum(
        before[0], "crossrank_batch_requests_sum"
    )
    report = {
        "model": label,
        "clients": clients,
        "warmup_s": warmup,
        "warmup_statuses": warm.statuses,
        "measured_s": round(elapsed, 1),  # to the last answer, past the deadline
        "requests": sum(tally.statuses.values()),
        "statuses": tally.statuses,
        "errors": errors,
        "error_samples": warm.error_samples + tally.error_samples,
        "latency_p50_s": round(percentile(tally.latencies, 50), 3) if answered else None,
        "latency_p90_s": round(percentile(tally.latencies, 90), 3) if answered else None,
        "latency_p99_s": round(percentile(tally.latencies, 99), 3) if answered else None,
        # Answers that arrived in the measured window, whenever their request started.
        "throughput_rps": round(len(done) / elapsed, 2),
        "throughput_docs_per_s": round(sum(n for _, n in done) / elapsed, 1),
        "tokens_scored_per_s": round(
            (
                metric_sum(after, "crossrank_tokens_scored_total")
                - metric_sum(before[0], "crossrank_tokens_scored_total")
            )
            / elapsed
        ),
        "rss_first_10s_mb": round(statistics.median(first), 1) if first else None,
        "rss_last_10s_mb": round(statistics.median(last), 1) if last else None,
        "rss_growth_mb": round(growth, 1),
        # The lowest sample of each window: memory held between model calls, without the
        # activations of the call in progress (up to ~200 MB at 8192 tokens).
        "rss_floor_growth_mb": round(min(last) - min(first), 1) if first and last else None,
        "rss_peak_mb": round(max(rss for _, rss in samples), 1) if samples else None,
        "rss_after_drain_mb": round(samples[-1][1], 1) if samples else None,
        "requests_per_model_call": round(packed / calls, 2) if calls else None,
        "healthy_after": healthy,
        "server_exit_status": exit_status,
        "server_log": str(log),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = errors > 0 or not growth < RSS_LIMIT_MB or not healthy
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
