"""Slow senders: header and body deadlines, the per-address connection cap, and normal
clients served while dozens of slow senders trickle bytes (benchmarks/slow_senders.py runs
the 200-sender version and measures the latency ratio)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from crossrank.server import ServerSettings
from crossrank.server.cli import add_parser, guard_settings
from reliability.guarded import guarded_running, port_of, read_until_closed
from server.conftest import metric, texts

QUERY = "neural reranking"
BODY = json.dumps({"query": QUERY, "documents": texts(10, seed=3)}).encode()
HEAD = (
    b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
)


JSON = {"Content-Type": "application/json"}


def status(data: bytes) -> int | None:
    """The status of the first response in ``data``."""
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data[9:12])


async def trickle(writer: asyncio.StreamWriter, data: bytes, pause: float) -> None:
    """Send ``data`` one byte every ``pause`` seconds, until it is sent or refused."""
    try:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:
        pass


async def slow_sender(
    port: int, prefix: bytes, rest: bytes, pause: float, source: str, wait: float
) -> tuple[int | None, bool, float]:
    """Send ``prefix`` at once, then ``rest`` a byte at a time; the status the server
    answered (None: none), whether it closed the connection, and when (seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    started = time.monotonic()
    writer.write(prefix)
    sending = asyncio.ensure_future(trickle(writer, rest, pause))
    data, closed = await read_until_closed(reader, wait)
    elapsed = time.monotonic() - started
    sending.cancel()
    writer.close()
    return status(data), closed, elapsed


def test_headers_that_do_not_arrive_in_time_get_408_and_close(reranker):
    with guarded_running(reranker, header_timeout_s=0.5) as url:
        code, closed, seconds = asyncio.run(
            slow_sender(port_of(url), b"POST /v1/rerank HTTP/1.1\r\n", HEAD, 0.1, "127.0.0.1", 10)
        )
        assert (code, closed) == (408, True)
        assert 0.4 < seconds < 3, seconds
        assert httpx.get(f"{url}/health").status_code == 200


def test_a_body_that_does_not_arrive_in_time_gets_408_and_close(reranker):
    with guarded_running(reranker, header_timeout_s=5, body_timeout_s=0.5) as url:
        code, closed, seconds = asyncio.run(
            slow_sender(port_of(url), HEAD + BODY[:20], BODY[20:], 0.1, "127.0.0.1", 10)
        )
        assert (code, closed) == (408, True)
        assert 0.4 < seconds < 3, seconds
        metrics = httpx.get(f"{url}/metrics").text
        assert metric(metrics, 'crossrank_requests_total{status="408"}') == 1


def test_the_header_deadline_starts_again_for_each_request_on_a_kept_alive_connection(reranker):
    async def two_requests(port: int) -> tuple[bytes, float, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await reader.readuntil(b"}")  # the whole /health body
        await asyncio.sleep(0.6)  # idle past the header deadline: the keep-alive wait
        started = time.monotonic()
        writer.write(b"GET /health HTTP/1.1\r\nHo")  # a second request, never finished
        data, closed = await read_until_closed(reader, 10)
        writer.close()
        return first + b"|" + data, time.monotonic() - started, closed

    with guarded_running(reranker, header_timeout_s=0.5) as url:
        data, seconds, closed = asyncio.run(two_requests(port_of(url)))
    first, second = data.split(b"|", 1)
    assert status(first) == 200 and status(second) == 408 and closed
    assert 0.4 < seconds < 3, seconds


def test_connections_over_the_cap_per_address_are_refused_and_others_served(reranker):
    async def scenario(port: int) -> tuple[int | None, bool, int, int | None]:
        held = [
            await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            for _ in range(3)
        ]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        over, closed = await read_until_closed(reader, 5)
        writer.close()
        async with httpx.AsyncClient() as client:  # another address is not affected
            other = (await client.get(f"http://127.0.0.1:{port}/health")).status_code
        for _, held_writer in held:
            held_writer.close()
        await asyncio.sleep(0.3)
        # The address's connections were counted down as they closed: served again.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        again, _ = await read_until_closed(reader, 5)
        writer.close()
        return status(over), closed, other, status(again)

    with guarded_running(reranker, header_timeout_s=30, max_connections_per_client=3) as url:
        over, closed, other, again = asyncio.run(scenario(port_of(url)))
    assert (over, closed) == (429, True)
    assert other == 200 and again == 200


async def normal_clients(url: str, clients: int, seconds: float) -> list[tuple[int, float]]:
    """``clients`` clients sending rerank requests back to back for ``seconds``."""
    results: list[tuple[int, float]] = []
    stop = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            response = await client.post("/v1/rerank", content=BODY, headers=JSON)
            results.append((response.status_code, time.monotonic() - started))

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return results


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[-1]


def test_normal_clients_are_served_while_slow_senders_are_cut_off(reranker):
    """40 slow senders (half stuck in their headers, half in their body, from 8 addresses)
    beside 4 normal clients; the 200-sender measurement is benchmarks/slow_senders.py."""
    deadline = 1.0
    with guarded_running(reranker, header_timeout_s=deadline, body_timeout_s=deadline) as url:
        port = port_of(url)

        async def run(with_slow: bool) -> tuple[list, list]:
            senders = [
                slow_sender(
                    port,
                    b"POST /v1/rerank HTTP/1.1\r\n" if i % 2 else HEAD,
                    HEAD if i % 2 else BODY,
                    0.3,
                    f"127.0.1.{1 + i % 8}",
                    deadline + 10,
                )
                for i in range(40 if with_slow else 0)
            ]
            slow, normal = await asyncio.gather(
                asyncio.gather(*senders), normal_clients(url, 4, 3.0)
            )
            return slow, normal

        _, baseline = asyncio.run(run(with_slow=False))
        slow, loaded = asyncio.run(run(with_slow=True))
    statuses = {code for code, _ in baseline + loaded}
    assert statuses == {200}, statuses
    # Every slow sender is cut off: a 408, or closed, soon after its deadline.
    assert all(closed and code in (408, None) for code, closed, _ in slow), slow
    assert max(seconds for *_, seconds in slow) < deadline + 5
    base, under = p95([s for _, s in baseline]), p95([s for _, s in loaded])
    print(f"normal clients' p95: {base * 1000:.1f} ms alone, {under * 1000:.1f} ms beside 40")
    # Loose here (a shared CI core, a 3 s sample); the benchmark measures the 2x bound.
    assert under < max(3 * base, base + 0.5), (base, under)


def test_serve_options_default_to_the_settings_and_zero_turns_a_guard_off():
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    defaults = guard_settings(parser.parse_args(["serve"]))
    settings = ServerSettings()
    assert defaults == {name: getattr(settings, name) for name in defaults}
    zeros = ["--header-timeout", "--body-timeout", "--call-timeout", "--max-connections-per-client"]
    off = guard_settings(parser.parse_args(["serve", *(x for name in zeros for x in (name, "0"))]))
    assert off["header_timeout_s"] is None and off["body_timeout_s"] is None
    assert off["call_timeout_s"] is None and off["max_connections_per_client"] is None
    ServerSettings(**off)  # accepted as they are
