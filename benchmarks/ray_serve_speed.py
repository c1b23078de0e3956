"""Requests/s and latency of `crossrank serve` as one process and on Ray Serve (1 and 2
replicas), side by side, in one run.

Each setting is a real `crossrank serve` subprocess on a loopback port, started, measured
and stopped in turn (only one runs at a time): the single-process server with
`--threads T`, then `--ray --replicas 1` and `--ray --replicas 2` with
`--cpus-per-replica T` (a local Ray instance each: Serve's proxy, the front deployment
that runs the HTTP app, and 1 or 2 model replicas, each request crossing from the front
to a model replica through a DeploymentHandle). Each gets the same closed loop:
`--clients` threads send /v1/rerank requests back to back (a DL19 query and `--documents`
of its BM25 candidates, queries in turn) until `--requests` are answered, after a warm-up
round; requests/s is answered requests over the wall time, latencies per request.

    taskset -c 1 python benchmarks/ray_serve_speed.py [--requests 96] [--clients 8]

On a machine whose other core is busy (this repository's, during training), two replicas
share one core and cannot beat one; run it without taskset on an idle machine to see the
second replica's gain.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from common import dl19
from load import free_port
from serve_speed import Server

SETTINGS = {
    "single process": [],
    "Ray Serve, 1 replica": ["--ray", "--replicas", "1"],
    "Ray Serve, 2 replicas": ["--ray", "--replicas", "2"],
}


def measure(url: str, requests: list[dict], total: int, clients: int) -> dict:
    """``clients`` closed-loop senders until ``total`` answers: requests/s, p50, p95."""
    latencies: list[float] = []
    replicas: set[str] = set()
    lock = threading.Lock()
    progress = tqdm(total=total, desc="  requests", leave=False, file=sys.stderr)

    def client(number: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            turn = number
            while True:
                with lock:
                    if len(latencies) >= total:
                        return
                start = time.perf_counter()
                reply = http.post("/v1/rerank", json=requests[turn % len(requests)])
                reply.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - start)
                    replicas.add(reply.headers.get("x-crossrank-replica", "-"))
                progress.update()
                turn += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    progress.close()
    ordered = sorted(latencies)
    return {
        "requests/s": len(latencies) / wall,
        "p50 ms": 1000 * statistics.median(ordered),
        "p95 ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "replicas answering": len(replicas - {"-"}) or 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96, help="answered per setting")
    parser.add_argument("--clients", type=int, default=8, help="concurrent senders")
    parser.add_argument("--documents", type=int, default=20, help="documents per request")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled one)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    args = parser.parse_args()

    _, workload = dl19(32)
    requests = [
        {"query": query, "documents": texts[: args.documents], "return_documents": False}
        for _, query, _, texts in workload
    ]
    common = ["--dtype", "float32", "--device", "cpu"]
    common += ["--model", args.model] if args.model else []
    results = {}
    for name in args.settings:
        threads = ["--threads", str(args.threads)]
        if "--ray" in SETTINGS[name]:
            threads = ["--cpus-per-replica", str(args.threads)]
        print(f"{name}: starting", file=sys.stderr)
        started = time.perf_counter()
        server = Server(name, free_port(), [*SETTINGS[name], *threads, *common])
        try:
            server.wait_ready(timeout=900)
            if "--ray" in SETTINGS[name]:  # /health answers once any model replica is up
                wait_all_running(server.url, int(SETTINGS[name][-1]))
            ready = time.perf_counter() - started
            measure(server.url, requests, args.clients, args.clients)  # warm-up
            results[name] = {**measure(server.url, requests, args.requests, args.clients)}
            results[name]["ready after s"] = ready
        finally:
            server.process.terminate()  # Ray drains and stops: give it longer than stop() does
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(180)
            server.stop()
    print_table(results, args)


def wait_all_running(url: str, replicas: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = httpx.get(f"{url}/health/replicas", timeout=30)
        if reply.status_code == 200 and reply.json()["replica_states"] == {"RUNNING": replicas}:
            return
        time.sleep(1)
    raise SystemExit(f"{url}: not {replicas} replicas running after {timeout:.0f} s")


def print_table(results: dict, args: argparse.Namespace) -> None:
    columns = ["requests/s", "p50 ms", "p95 ms", "replicas answering", "ready after s"]
    print(
        f"\n{args.clients} clients, {args.requests} requests of {args.documents} DL19 "
        f"passages each, {args.threads} torch thread(s) per process/replica, "
        f"model {Path(args.model).name if args.model else 'bundled'}, float32\n"
    )
    print(f"| setting | {' | '.join(columns)} |")
    print(f"|---|{'---|' * len(columns)}")
    base = results.get("single process", {}).get("requests/s")
    for name, row in results.items():
        cells = [f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        if base:
            cells[0] += f" ({row['requests/s'] / base:.2f}×)"
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
