"""Soak: the real server under mixed, partly hostile traffic for a long, bounded run.

Starts ``crossrank serve`` on a free 127.0.0.1 port (the bundled default model) and runs,
for ``--warmup`` then ``--duration`` seconds, all at once:

* valid clients: the four API dialects in turn, 5 to 30 documents;
* an invalid client: bodies that are not JSON, wrong types, an empty query, an unknown
  model, a zero ``top_n``;
* an oversized client: too many documents, a body over ``--max-body-bytes``, more tokens
  than the whole token budget;
* a disconnecting client: hangs up mid-body, or after sending a request, at random;
* slow senders: one byte a second, in the headers or the body, until cut off;
* a stall injector: every ``--stall-every`` seconds one model call stalls for
  ``--stall-s`` seconds (longer than the watchdog's deadline, shorter than its grace), so
  the server turns unhealthy and answers 503 on purpose, then recovers.

The server's RSS and open file descriptors are sampled every 10 s. At the end of the
warm-up and at the end the clients pause until nothing is in flight and idle connections
have closed, and both are sampled again ("quiesced"). Pass: no 5xx but the 503s inside a
stall window, no unexpected status, RSS growth after warm-up under 50 MB (quiesced, and
median of the last 5 minutes of samples against the first 5 under load), no open fd more than after
the warm-up (quiesced), and the server healthy at the end. A PNG of the samples is written
beside the JSON report.

    python benchmarks/soak.py [--duration 1800] [--warmup 120] [--json OUT]

Loopback only, by design; bounded: ``--duration`` is capped at 4 hours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from common import benchmark_checkpoint
from load import HOST, free_port, stop_server
from slow_senders import trickle_and_read

MAX_DURATION = 4 * 3600.0
SAMPLE_EVERY_S = 10.0
RSS_LIMIT_MB = 50.0
RSS_WINDOW_SAMPLES = 30  # 5 minutes of samples, compared at each end of the run
WORDS = ["search", "rank", "model", "query", "document", "token", "neural", "passage"]
# The server: patched so that a model call stalls while the flag file exists (one call per
# flag); otherwise ``crossrank serve`` unchanged.
LAUNCHER = """
import os, sys, time
from crossrank.reranker import Reranker
flag, stall = sys.argv.pop(1), float(sys.argv.pop(1))
original = Reranker.logits
def logits(self, features):
    if os.path.exists(flag):
        os.unlink(flag)
        time.sleep(stall)
    return original(self, features)
Reranker.logits = logits
from crossrank.cli import main
main()
"""
SERVER_ARGS = [
    "--max-batch-tokens", "2048", "--max-documents", "100", "--max-body-bytes", "2097152",
    "--max-queue-tokens", "40000", "--header-timeout", "5", "--body-timeout", "10",
    "--call-timeout", "30", "--call-timeout-per-1k-tokens", "10", "--hung-exit-grace", "300",
]  # fmt: skip
# Generous deadlines: on a shared, loaded core a 2,048-token call took up to 8 s, and a
# deadline it misses is a 503 nobody provoked. So a stall must outlast 30 + 2 x 10 s.
EXPECTED = {
    "valid": {"200", "429"},
    "invalid": {"400", "404", "422"},
    "oversized": {"413"},
    "disconnecting": {"200", "429", "hung up"},
    "slow": {"408", "closed"},
}


class Soak:
    def __init__(self, url: str, port: int, stall_s: float):
        self.url = url
        self.port = port
        self.stall_s = stall_s
        self.statuses: dict[str, Counter] = {kind: Counter() for kind in EXPECTED}
        self.unexpected: list[str] = []
        self.stalls: list[tuple[float, float]] = []  # windows in which a 503 is provoked
        self.stall_started: float | None = None
        self.provoked_503 = 0
        self.paused = asyncio.Event()
        self.stopping = False
        self.in_flight = 0

    def record(self, kind: str, status: str, detail: str = "") -> None:
        now = time.monotonic()
        if status == "503" and self.in_stall(now):
            self.provoked_503 += 1
            status = "503 provoked"
        elif status not in EXPECTED[kind] and len(self.unexpected) < 20:
            self.unexpected.append(f"{kind}: {status} {detail[:200]}")
        self.statuses[kind][status] += 1

    def in_stall(self, when: float) -> bool:
        if self.stall_started is not None and when >= self.stall_started:
            return True
        return any(start <= when <= end for start, end in self.stalls)

    async def loop(self, kind: str, step, pause: float, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stopping:
            if self.paused.is_set():
                await asyncio.sleep(0.2)
                continue
            self.in_flight += 1
            try:
                await step(rng)
            except Exception as error:  # any client failure is a finding
                self.record(kind, type(error).__name__, str(error))
            finally:
                self.in_flight -= 1
            await asyncio.sleep(pause * rng.random())

    # ---------------------------------------------------------------- the clients

    async def valid(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        documents = texts(rng, rng.randint(5, 30), 10, 80)
        route, body = rng.choice(
            [
                ("/v1/rerank", {"query": "neural ranking", "documents": documents, "top_n": 3}),
                ("/v2/rerank", {"query": "neural ranking", "documents": documents}),
                ("/rerank", {"query": "neural ranking", "texts": documents}),
                ("/score", {"text_1": "neural ranking", "text_2": documents}),
            ]
        )
        response = await client.post(route, json=body)
        self.record("valid", str(response.status_code), response.text)

    async def invalid(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        bad = rng.choice(
            [
                b"{not json",
                b'{"query": 5, "documents": "x"}',
                b'{"query": "  ", "documents": ["a"]}',
                b'{"query": "q", "documents": ["a"], "model": "no-such-model"}',
                b'{"query": "q", "documents": ["a"], "top_n": 0}',
                b"\xff\xfe\x00",
            ]
        )
        response = await client.post(
            "/v1/rerank", content=bad, headers={"Content-Type": "application/json"}
        )
        self.record("invalid", str(response.status_code), response.text)

    async def oversized(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        case = rng.randrange(3)
        if case == 0:  # over --max-documents
            body = {"query": "q", "documents": ["a"] * 101}
        elif case == 1:  # over --max-body-bytes
            body = {"query": "q", "documents": ["word " * 1000] * 500}
        else:  # over --max-queue-tokens: 100 documents of about 512 tokens
            body = {"query": "q", "documents": texts(rng, 100, 600, 601)}
        response = await client.post("/v2/rerank", json=body)
        self.record("oversized", str(response.status_code), response.text)

    async def disconnecting(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        body = json.dumps({"query": "q", "documents": texts(rng, 20, 20, 60)}).encode()
        if rng.random() < 0.5:  # mid-body: headers and part of the body, then a reset
            _, writer = await asyncio.open_connection(HOST, self.port)
            writer.write(request_head(len(body)) + body[: rng.randrange(len(body))])
            await writer.drain()
            await asyncio.sleep(rng.random() * 0.5)
            writer.close()
            self.record("disconnecting", "hung up")
            return
        try:  # a whole request, then gone before (or after) the answer
            async with asyncio.timeout(rng.random()):
                response = await client.post(
                    "/v1/rerank", content=body, headers={"Content-Type": "application/json"}
                )
            self.record("disconnecting", str(response.status_code), response.text)
        except TimeoutError:
            self.record("disconnecting", "hung up")

    async def slow(self, rng: random.Random) -> None:
        body = json.dumps({"query": "q", "documents": ["a b c"]}).encode()
        in_body = rng.random() < 0.5
        prefix, rest = (request_head(len(body)), body) if in_body else (b"", request_head(5))
        reader, writer = await asyncio.open_connection(HOST, self.port)

        status = await trickle_and_read(reader, writer, prefix, rest, pause=1.0, timeout=60)
        self.record("slow", status)

    async def stall_injector(self, flag: Path, every: float) -> None:
        """Every ``every`` seconds, stall one model call; the window lasts until /health is
        200 again after it went 503 (and 2 s more, for answers already on their way)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not self.stopping:
                wake = time.monotonic() + every
                while not self.stopping and time.monotonic() < wake:
                    await asyncio.sleep(1.0)  # not one long sleep: the run ends when it ends
                if self.stopping or self.paused.is_set():
                    continue
                self.stall_started = time.monotonic()
                flag.touch()
                seen_503 = False
                deadline = time.monotonic() + 2 * self.stall_s + 60
                while time.monotonic() < deadline:
                    status = (await client.get("/health")).status_code
                    seen_503 = seen_503 or status == 503
                    if seen_503 and status == 200:
                        break
                    await asyncio.sleep(0.5)
                self.stalls.append((self.stall_started, time.monotonic() + 2))
                self.stall_started = None
                print(f"  stall injected; /health went 503: {seen_503}", flush=True)

    async def quiesce(self) -> None:
        """Pause the clients until nothing is in flight and idle connections have closed."""
        self.paused.set()
        while self.in_flight:
            await asyncio.sleep(0.2)
        await asyncio.sleep(7)  # uvicorn closes idle kept-alive connections after 5 s


def texts(rng: random.Random, count: int, shortest: int, longest: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(shortest, longest))) for _ in range(count)]


def request_head(length: int) -> bytes:
    return (
        b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def sample(process: psutil.Process, started: float, phase: str) -> dict:
    return {
        "t_s": round(time.monotonic() - started, 1),
        "phase": phase,
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
        "fds": process.num_fds(),
    }


async def run(soak: Soak, server: psutil.Process, args, flag: Path) -> dict:
    started = time.monotonic()
    samples: list[dict] = []
    quiesced: dict[str, dict] = {}

    async def sampler() -> None:
        while not soak.stopping:
            phase = "warmup" if time.monotonic() - started < args.warmup else "load"
            samples.append(sample(server, started, phase))
            last = samples[-1]
            seen = dict(sum(soak.statuses.values(), Counter()))
            print(f"  {last['t_s']:7.0f} s  rss {last['rss_mb']:7.1f} MB  fds {last['fds']}  "
                  f"statuses {seen}", flush=True)  # fmt: skip
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def schedule() -> None:
        await asyncio.sleep(args.warmup)
        await soak.quiesce()
        quiesced["after_warmup"] = sample(server, started, "quiesced")
        soak.paused.clear()
        await asyncio.sleep(args.duration)
        await soak.quiesce()
        quiesced["end"] = sample(server, started, "quiesced")
        soak.stopping = True

    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=soak.url, timeout=120, limits=limits) as client:

        def with_client(method):
            return lambda rng: method(client, rng)

        tasks = [
            *(soak.loop("valid", with_client(soak.valid), 0.5, i) for i in range(3)),
            soak.loop("invalid", with_client(soak.invalid), 0.5, 10),
            soak.loop("oversized", with_client(soak.oversized), 3.0, 11),
            soak.loop("disconnecting", with_client(soak.disconnecting), 0.5, 12),
            *(soak.loop("slow", soak.slow, 0.5, 20 + i) for i in range(4)),
            soak.stall_injector(flag, args.stall_every),
            sampler(),
            schedule(),
        ]
        await asyncio.gather(*tasks)
    return {"samples": samples, "quiesced": quiesced}


def plot(samples: list[dict], warmup: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rss, fds) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    minutes = [s["t_s"] / 60 for s in samples]
    rss.plot(minutes, [s["rss_mb"] for s in samples])
    rss.set_ylabel("server RSS (MB)")
    fds.plot(minutes, [s["fds"] for s in samples], color="tab:orange")
    fds.set_ylabel("open fds")
    fds.set_xlabel("minutes")
    for axis in (rss, fds):
        axis.axvline(warmup / 60, color="grey", linestyle="--", linewidth=1)
    rss.set_title("crossrank serve under the soak (sampled every 10 s; dashed: end of warm-up)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds after warm-up")
    parser.add_argument("--warmup", type=float, default=120.0)
    parser.add_argument("--stall-every", type=float, default=300.0, help="seconds")
    parser.add_argument("--stall-s", type=float, default=75.0, help="seconds a stall lasts")
    parser.add_argument("--model", default=None, help="checkpoint (default: bundled model)")
    parser.add_argument("--json", type=Path, default=None, help="report (and a .png beside)")
    parser.add_argument(
        "--summarize", type=Path, default=None, help="only re-evaluate a report written by --json"
    )
    args = parser.parse_args()
    if args.summarize:
        resummarize(args.summarize, args.json)
        return
    args.duration = min(args.duration, MAX_DURATION)

    model, label = benchmark_checkpoint(args.model)
    port = free_port()
    url = f"http://{HOST}:{port}"
    folder = Path(tempfile.mkdtemp(prefix="crossrank-soak-"))
    flag, log = folder / "stall", folder / "server.log"
    command = [sys.executable, "-c", LAUNCHER, str(flag), str(args.stall_s), "serve",
               "--model", str(model), "--host", HOST, "--port", str(port),
               "--log-level", "warning", *SERVER_ARGS]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "CROSSRANK_API_KEY"}
    print(f"soak: {label} on {url}, {args.warmup:g} s warm-up + {args.duration:g} s "
          f"(log {log})", flush=True)  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(process, url, log)
        soak = Soak(url, port, args.stall_s)
        result = asyncio.run(run(soak, psutil.Process(process.pid), args, flag))
        healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
        alive = process.poll() is None
    finally:
        exit_status = stop_server(process)
    report = summarize(soak, result, args, label, healthy and alive, exit_status)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        plot(result["samples"], args.warmup, args.json.with_suffix(".png"))
    print("FAILED" if report["failed"] else "passed")
    sys.exit(1 if report["failed"] else 0)


def resummarize(path: Path, out: Path | None) -> None:
    """Apply this script's criteria to a recorded run (its samples and counts)."""
    old = json.loads(path.read_text())
    soak = Soak("", 0, 0.0)
    soak.statuses = {kind: Counter(counts) for kind, counts in old["statuses"].items()}
    soak.unexpected, soak.provoked_503 = old["unexpected"], old["provoked_503"]
    soak.stalls = [(0.0, 0.0)] * old["stalls"]
    args = argparse.Namespace(warmup=old["warmup_s"], duration=old["duration_s"])
    result = {"samples": old["samples"], "quiesced": old["quiesced"]}
    report = summarize(
        soak, result, args, old["model"], old["healthy_at_end"], old["exit_status_on_sigterm"]
    )
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if out:
        out.write_text(json.dumps(report, indent=2))
        plot(report["samples"], args.warmup, out.with_suffix(".png"))
    print("FAILED" if report["failed"] else "passed")


def wait_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start in 300 s")


def summarize(soak: Soak, result: dict, args, label: str, healthy: bool, exit_status: int):
    samples = result["samples"]
    quiesced = result["quiesced"]
    load = [s for s in samples if s["phase"] == "load"]
    # Single samples swing by +-50 MB with the activations of the model call under way, so
    # 5 samples (50 s) are too few to see a trend: a 30-minute run measured +70 MB that way,
    # +32 MB by 5-minute medians and +15 MB quiesced. Hence 5 minutes (or a third of a
    # shorter run) at each end.
    window = max(1, min(RSS_WINDOW_SAMPLES, len(load) // 3))
    first, last = load[:window], load[-window:]
    median_growth = statistics.median(s["rss_mb"] for s in last) - statistics.median(
        s["rss_mb"] for s in first
    )
    quiesced_growth = quiesced["end"]["rss_mb"] - quiesced["after_warmup"]["rss_mb"]
    fd_growth = quiesced["end"]["fds"] - quiesced["after_warmup"]["fds"]
    server_errors = {
        kind: {s: n for s, n in counts.items() if s.startswith("5") and s != "503 provoked"}
        for kind, counts in soak.statuses.items()
    }
    failed = bool(
        soak.unexpected
        or any(server_errors.values())
        or max(median_growth, quiesced_growth) >= RSS_LIMIT_MB
        or fd_growth > 0
        or not healthy
    )
    return {
        "model": label,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "statuses": {kind: dict(counts) for kind, counts in soak.statuses.items()},
        "requests": sum(sum(c.values()) for c in soak.statuses.values()),
        "provoked_503": soak.provoked_503,
        "stalls": len(soak.stalls),
        "server_errors": server_errors,
        "unexpected": soak.unexpected,
        "rss_window_samples": window,
        "rss_mb_median_first_window": statistics.median(s["rss_mb"] for s in first),
        "rss_mb_median_last_window": statistics.median(s["rss_mb"] for s in last),
        "rss_growth_median_mb": round(median_growth, 1),
        "rss_peak_mb": max(s["rss_mb"] for s in samples),
        "quiesced": quiesced,
        "rss_growth_quiesced_mb": round(quiesced_growth, 1),
        "fd_growth_quiesced": fd_growth,
        "fds_min_max_under_load": [min(s["fds"] for s in load), max(s["fds"] for s in load)],
        "healthy_at_end": healthy,
        "exit_status_on_sigterm": exit_status,
        "failed": failed,
        "samples": samples,
    }


if __name__ == "__main__":
    main()
