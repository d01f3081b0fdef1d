"""Candidate upstream HTTP clients for the bridge, measured side by side (issue 11).

Run: ``python -m benchmarks.upstream_clients [--streams S] [--tokens N] [--delay SECONDS]``.

The demo model runs in a subprocess (so its CPU is not this process's); each candidate reads
``S`` concurrent streamed chat completions of ``N`` tokens from it, the way the bridge does:
the raw body bytes, as they arrive. Reported per candidate: this process's CPU time per SSE
event (``time.process_time``, so load on the other core does not count) and how many body
chunks the candidate handed over per event (fewer is better: each chunk becomes a record).
Paced (``--delay``, the upstream sleeping between tokens) is the regime of many slow streams,
where nearly every read brings one event; unpaced shows how well a candidate merges what one
read brought.

Candidates:

- ``httpx2``: what the bridge used before issue 11 (``AsyncClient.send(stream=True)``,
  ``aiter_raw``: httpcore2 over anyio, a cancel scope per read);
- ``aiohttp``: ``ClientSession`` with a pooled ``TCPConnector``, ``content.iter_any()`` (its C
  HTTP parser; each iteration returns everything buffered): the bridge's client until its own;
- ``bridge``: ``bridge.upstream.Upstream`` as the bridge uses it, ``relay_body`` with a callback
  per read (httptools' parser, no task woken per read; the chunks are handed to this harness's
  iterator when the body ended, which does not change what is counted);
- ``h11``: a small reader on asyncio streams feeding ``h11`` (one connection per request, no
  pool: the leanest hand-written shape, for comparison).

This module measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import urlsplit

import aiohttp
import h11
import httpx2

from bridge.upstream import Upstream, UpstreamRequest
from tests.bridgeproc import REPO_ROOT
from tests.e2e.client import chat_body

Reader = Callable[[str, bytes], AsyncIterator[bytes]]

_UPSTREAM = """
import asyncio, sys
from bridge.demo_upstream import DemoUpstream
async def main():
    demo = DemoUpstream(token_delay=float(sys.argv[1]), max_body=16 * 1024 * 1024)
    await demo.start()
    print(demo.base_url, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@contextlib.contextmanager
def demo_upstream_process(token_delay: float) -> Iterator[str]:
    """The demo model in a subprocess; yields its base URL (``http://127.0.0.1:PORT/v1``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", _UPSTREAM, str(token_delay)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().decode().strip()
    finally:
        process.terminate()
        process.wait(10)


def _httpx2_reader(limit: int) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    client = httpx2.AsyncClient(
        trust_env=False,
        timeout=60,
        limits=httpx2.Limits(max_connections=limit, max_keepalive_connections=limit),
    )

    async def read(url: str, body: bytes) -> AsyncIterator[bytes]:
        request = client.build_request(
            "POST", url, content=body, headers={"content-type": "application/json"}
        )
        response = await client.send(request, stream=True)
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    return read, client.aclose


def _aiohttp_reader(limit: int) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    session: aiohttp.ClientSession | None = None

    async def read(url: str, body: bytes) -> AsyncIterator[bytes]:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit), auto_decompress=False
            )
        async with session.post(
            url, data=body, headers={"content-type": "application/json"}
        ) as response:
            async for chunk in response.content.iter_any():
                yield chunk

    async def close() -> None:
        if session is not None:
            await session.close()

    return read, close


def _bridge_reader(limit: int) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    upstreams: dict[str, Upstream] = {}

    async def read(url: str, body: bytes) -> AsyncIterator[bytes]:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        upstream = upstreams.get(origin)
        if upstream is None:
            upstream = upstreams[origin] = Upstream(origin, pool_size=limit)
        request = UpstreamRequest("POST", parts.path, (("content-type", "application/json"),), body)
        got: list[bytes] = []

        def on_chunk(chunk: bytes) -> bool:
            got.append(chunk)
            return True

        async def drain() -> None:
            return None

        async with upstream.send(request) as response:
            await response.relay_body(on_chunk, drain)
        for chunk in got:
            yield chunk

    async def close() -> None:
        for upstream in upstreams.values():
            await upstream.aclose()

    return read, close


def _h11_reader(limit: int) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    del limit

    async def read(url: str, body: bytes) -> AsyncIterator[bytes]:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        conn = h11.Connection(h11.CLIENT)
        head = h11.Request(
            method="POST",
            target=parts.path,
            headers=[
                ("host", parts.netloc),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ],
        )
        writer.write(
            conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        )
        try:
            while True:
                data = await reader.read(65536)
                conn.receive_data(data)
                out: list[bytes] = []
                ended = False
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        break
                    if isinstance(event, h11.Data):
                        out.append(bytes(event.data))
                    elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        ended = True
                        break
                if out:
                    yield b"".join(out)
                if ended or not data:
                    return
        finally:
            writer.close()

    async def close() -> None:
        return None

    return read, close


CANDIDATES: dict[str, Callable[[int], tuple[Reader, Callable[[], Awaitable[None]]]]] = {
    "httpx2": _httpx2_reader,
    "aiohttp": _aiohttp_reader,
    "bridge": _bridge_reader,
    "h11": _h11_reader,
}


async def measure(
    name: str, base_url: str, streams: int, tokens: int
) -> tuple[float, float, float]:
    """(CPU µs per event, chunks per event, wall seconds) for one candidate and one round."""
    read, close = CANDIDATES[name](streams)
    body = chat_body(" ".join(f"w{i}" for i in range(tokens)), stream=True)
    url = f"{base_url}/chat/completions"

    async def one() -> tuple[int, int]:
        chunks = events = 0
        async for chunk in read(url, body):
            chunks += 1
            events += chunk.count(b"data: ")
        return chunks, events

    try:
        await one()  # warm-up: connections, imports
        cpu, wall = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(streams)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await close()
    chunks = sum(c for c, _ in results)
    events = sum(e for _, e in results)
    return cpu / events * 1e6, chunks / events, wall


def main(argv: list[str] | None = None) -> None:
    """Print each candidate's CPU per event, paced and unpaced (median over rounds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.01, help="paced: seconds per token")
    args = parser.parse_args(argv)
    for delay in (0.0, args.delay):
        with demo_upstream_process(delay) as base_url:
            label = f"paced {delay * 1e3:.0f} ms/token" if delay else "unpaced"
            print(f"  upstream clients, {args.streams} streams x {args.tokens} tokens, {label}")
            rows: dict[str, list[tuple[float, float, float]]] = {n: [] for n in CANDIDATES}
            for _ in range(args.rounds):  # interleaved rounds
                for name in CANDIDATES:
                    rows[name].append(
                        asyncio.run(measure(name, base_url, args.streams, args.tokens))
                    )
            for name, results in rows.items():
                cpu = statistics.median(r[0] for r in results)
                chunks = statistics.median(r[1] for r in results)
                wall = statistics.median(r[2] for r in results)
                print(
                    f"    {name:8} {cpu:7.1f} us CPU/event  {chunks:5.2f} chunks/event"
                    f"  wall {wall:6.2f} s"
                )


if __name__ == "__main__":
    main()
