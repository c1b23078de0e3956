"""Pairs/s of `crossrank serve` with its default number format against forced fp32, and
against Infinity serving the same model folder.

Starts one real loopback server per setting (`crossrank serve --port P [--dtype D]`, the same
--threads and --model for all; with --infinity, also `infinity_emb v2 --model-id FOLDER
--engine torch --device cpu` with its threads capped the same way), then, round after round
and server after server, sends 16 concurrent rerank requests of 100 passages each (the BM25
top 100 of 16 TREC DL19 queries) and times each round from the first request sent to the
last answer received. Only one server is busy at a time; the others sit idle. The default
server is started without CROSSRANK_DTYPE in its environment, so it applies crossrank's
default rule (engine/precision.py); its start-up line saying which format it chose and why
is printed. Infinity's scores are checked against crossrank's fp32 ones first, so both
servers are known to compute the same thing.

    taskset -c 1 python benchmarks/serve_speed.py --threads 1 [--rounds 3] [--also bfloat16]
        [--infinity .venv-infinity/bin/infinity_emb]   # `make bench-infinity` builds it
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
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "src" / "crossrank" / "default_model"
FP32 = "--dtype float32"
INFINITY = "infinity"


class Server:
    """A `crossrank serve` subprocess on a loopback port, its log kept in a temporary file."""

    rerank_path = "/v1/rerank"

    def __init__(self, name: str, port: int, options: list[str]):
        self.name, self.url = name, f"http://127.0.0.1:{port}"
        command = [*crossrank_command(), "serve", "--port", str(port), *options]
        self.start(command, {k: v for k, v in os.environ.items() if k != DTYPE_ENV})

    def start(self, command: list[str], environment: dict[str, str]) -> None:
        # lives as long as the server, closed in stop()
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-", suffix=".log")  # noqa: SIM115
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

    def scores(self, query: str, documents: list[str]) -> list[float]:
        body = {"query": query, "documents": documents, "return_documents": False}
        response = httpx.post(f"{self.url}{self.rerank_path}", json=body, timeout=600)
        response.raise_for_status()
        by_index = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
        return [by_index[i] for i in range(len(documents))]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class InfinityServer(Server):
    """`infinity_emb v2` on the same model folder, torch on the CPU, as its docs start it.

    It has no thread option: torch reads OMP_NUM_THREADS/MKL_NUM_THREADS at start-up, so
    those cap it to the threads crossrank gets (and taskset, if used, pins both alike)."""

    rerank_path = "/rerank"

    def __init__(self, executable: str, port: int, model: Path, threads: int):
        self.name, self.url = INFINITY, f"http://127.0.0.1:{port}"
        command = [executable, "v2", "--model-id", str(model), "--engine", "torch"]
        command += ["--device", "cpu", "--port", str(port), "--host", "127.0.0.1"]
        capped = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        quiet = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
        self.start(command, {**os.environ, **capped, **quiet})

    def precision_line(self) -> str:
        return "fp32 (torch engine; sentence-transformers CrossEncoder)"


def crossrank_command() -> list[str]:
    script = Path(sys.executable).with_name("crossrank")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "crossrank.cli"]


def one_round(url: str, requests: list[tuple[str, list[str]]]) -> tuple[float, list[float]]:
    """All requests at once to the rerank route ``url``; seconds from the first sent to the
    last answered, and each request's latency."""

    def send(request: tuple[str, list[str]]) -> float:
        query, documents = request
        body = {"query": query, "documents": documents, "return_documents": False}
        start = time.perf_counter()
        response = httpx.post(url, json=body, timeout=600)
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
    parser.add_argument(
        "--infinity",
        metavar="INFINITY_EMB",
        help="also serve the model with this `infinity_emb` executable (its own virtualenv: "
        "`make bench-infinity` builds .venv-infinity)",
    )
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    _, workload = dl19(args.requests, data=args.data)
    requests = [(query, texts[: args.documents]) for _, query, _, texts in workload]
    pairs = sum(len(documents) for _, documents in requests)
    common = ["--threads", str(args.threads), *(["--model", args.model] if args.model else [])]
    # A round is tens of seconds of queued work at one thread: over the default 30 s of
    # --max-queue-wait, which would refuse part of it. Throughput is measured here, not
    # shedding (tests/server/test_load_shedding.py), and Infinity has no such limit.
    common += ["--max-queue-wait", "0"]
    settings = {"default": [], "--dtype float32": ["--dtype", "float32"]}
    settings.update({f"--dtype {dtype}": ["--dtype", dtype] for dtype in args.also})
    servers = [
        Server(name, args.port + i, [*common, *options])
        for i, (name, options) in enumerate(settings.items())
    ]
    if args.infinity:
        model = Path(args.model) if args.model else BUNDLED_MODEL
        servers.append(InfinityServer(args.infinity, args.port + len(servers), model, args.threads))
    try:
        for server in servers:
            server.wait_ready()
            one_round(f"{server.url}{server.rerank_path}", requests[:2])  # warm-up
        agreement = score_agreement(servers, requests[0])
        seconds = {server.name: [] for server in servers}
        latencies = {server.name: [] for server in servers}
        for _ in tqdm(range(args.rounds), desc="rounds", unit="round"):
            for server in servers:  # interleaved, so that machine noise hits all alike
                elapsed, each = one_round(f"{server.url}{server.rerank_path}", requests)
                seconds[server.name].append(elapsed)
                latencies[server.name].extend(each)
        report = summarise(servers, seconds, latencies, pairs)
        if agreement is not None:
            report[INFINITY]["max_score_difference_vs_fp32"] = agreement
    finally:
        for server in servers:
            server.stop()
    print_report(report, args, pairs)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def score_agreement(servers: list[Server], request: tuple[str, list[str]]) -> float | None:
    """Largest |score difference| between Infinity and crossrank fp32 on one request."""
    named = {server.name: server for server in servers}
    if INFINITY not in named:
        return None
    ours, theirs = (named[name].scores(*request) for name in (FP32, INFINITY))
    return max(abs(a - b) for a, b in zip(ours, theirs, strict=True))


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
    baseline = report[FP32]["pairs_per_s"]
    print(f"{'server':<18} {'pairs/s':>8} {'vs fp32':>8} {'p50 s':>7} {'p95 s':>7}  number format")
    for name, r in report.items():
        print(
            f"{name:<18} {r['pairs_per_s']:>8.1f} {r['pairs_per_s'] / baseline:>7.2f}x "
            f"{r['p50_s']:>7.2f} {r['p95_s']:>7.2f}  {r['precision']}"
        )
    if INFINITY in report:
        infinity = report[INFINITY]
        print(
            f"\nInfinity's scores differ from crossrank fp32's by at most "
            f"{infinity['max_score_difference_vs_fp32']:.2g}"
        )
        for name in ("default", FP32):
            speed = report[name]["pairs_per_s"] / infinity["pairs_per_s"]
            tail = report[name]["p95_s"] / infinity["p95_s"]
            print(f"crossrank {name} / Infinity: pairs/s {speed:.2f}x, p95 {tail:.2f}x")


if __name__ == "__main__":
    main()
