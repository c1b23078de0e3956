"""Pairs/s of `crossrank serve` with its default number format against forced fp32.

Starts one real loopback server per setting (`crossrank serve --port P [--dtype D]`, the same
--threads and --model for all), then, round after round and server after server, sends
16 concurrent /v1/rerank requests of 100 passages each (the BM25 top 100 of 16 TREC DL19
queries) and times each round from the first request sent to the last answer received.
Only one server is busy at a time; the others sit idle. The default server is started
without CROSSRANK_DTYPE in its environment, so it applies crossrank's default rule
(engine/precision.py); its start-up line saying which format it chose and why is printed.

    taskset -c 1 python benchmarks/serve_speed.py --threads 1 [--rounds 3] [--also bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tqdm import tqdm

from common import dl19

DTYPE_ENV = "CROSSRANK_DTYPE"


class Server:
    """A `crossrank serve` subprocess on a loopback port, its log kept in a temporary file."""

    def __init__(self, name: str, port: int, options: list[str]):
        self.name, self.url = name, f"http://127.0.0.1:{port}"
        # lives as long as the server, closed in stop()
        self.log = tempfile.NamedTemporaryFile("w+", prefix="crossrank-serve-", suffix=".log")  # noqa: SIM115
        command = [*crossrank_command(), "serve", "--port", str(port), *options]
        environment = {k: v for k, v in os.environ.items() if k != DTYPE_ENV}
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=environment
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server {self.name} exited:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"server {self.name} not ready after {timeout:.0f} s:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def precision_line(self) -> str:
        """The server's start-up line naming its number format and why."""
        lines = [line for line in self.log_text().splitlines() if " dtype " in line]
        return lines[-1].split(": ", 1)[-1] if lines else "(no dtype line in the server log)"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def crossrank_command() -> list[str]:
    script = Path(sys.executable).with_name("crossrank")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "crossrank.cli"]


def one_round(url: str, requests: list[tuple[str, list[str]]]) -> tuple[float, list[float]]:
    """All requests at once; seconds from the first sent to the last answered, and each
    request's latency."""

    def send(request: tuple[str, list[str]]) -> float:
        query, documents = request
        body = {"query": query, "documents": documents, "return_documents": False}
        start = time.perf_counter()
        response = httpx.post(f"{url}/v1/rerank", json=body, timeout=600)
        response.raise_for_status()
        if len(response.json()["results"]) != len(documents):
            raise SystemExit(f"{url}: expected {len(documents)} results")
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(len(requests)) as pool:
        latencies = list(pool.map(send, requests))
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint folder or hub id (default: the bundled model)")
    parser.add_argument("--data", help="folder holding trec-dl19/ (default: ../shared/data)")
    parser.add_argument("--threads", type=int, default=1, help="--threads of every server")
    parser.add_argument("--requests", type=int, default=16, help="concurrent requests per round")
    parser.add_argument("--documents", type=int, default=100, help="passages per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=18150, help="first port; one per server")
    parser.add_argument(
        "--also", nargs="*", default=[], metavar="DTYPE", help="more servers: --dtype DTYPE"
    )
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    _, workload = dl19(args.requests, data=args.data)
    requests = [(query, texts[: args.documents]) for _, query, _, texts in workload]
    pairs = sum(len(documents) for _, documents in requests)
    common = ["--threads", str(args.threads), *(["--model", args.model] if args.model else [])]
    settings = {"default": [], "--dtype float32": ["--dtype", "float32"]}
    settings.update({f"--dtype {dtype}": ["--dtype", dtype] for dtype in args.also})
    servers = [
        Server(name, args.port + i, [*common, *options])
        for i, (name, options) in enumerate(settings.items())
    ]
    try:
        for server in servers:
            server.wait_ready()
            one_round(server.url, requests[:2])  # warm-up: first-call allocations
        seconds = {server.name: [] for server in servers}
        latencies = {server.name: [] for server in servers}
        for _ in tqdm(range(args.rounds), desc="rounds", unit="round"):
            for server in servers:  # interleaved, so that machine noise hits all alike
                elapsed, each = one_round(server.url, requests)
                seconds[server.name].append(elapsed)
                latencies[server.name].extend(each)
        report = summarise(servers, seconds, latencies, pairs)
    finally:
        for server in servers:
            server.stop()
    print_report(report, args, pairs)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def summarise(servers, seconds, latencies, pairs) -> dict:
    report = {}
    for server in servers:
        rates = [pairs / s for s in seconds[server.name]]
        ordered = sorted(latencies[server.name])
        report[server.name] = {
            "precision": server.precision_line(),
            "pairs_per_s": statistics.median(rates),
            "pairs_per_s_rounds": rates,
            "p50_s": ordered[len(ordered) // 2],
            "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        }
    return report


def print_report(report: dict, args, pairs: int) -> None:
    print(
        f"\n{args.requests} concurrent requests x {args.documents} DL19 passages ({pairs} pairs) "
        f"per round, {args.rounds} rounds, --threads {args.threads}"
    )
    baseline = report["--dtype float32"]["pairs_per_s"]
    print(f"{'server':<18} {'pairs/s':>8} {'vs fp32':>8} {'p50 s':>7} {'p95 s':>7}  number format")
    for name, r in report.items():
        print(
            f"{name:<18} {r['pairs_per_s']:>8.1f} {r['pairs_per_s'] / baseline:>7.2f}x "
            f"{r['p50_s']:>7.2f} {r['p95_s']:>7.2f}  {r['precision']}"
        )


if __name__ == "__main__":
    main()
