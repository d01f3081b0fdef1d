"""Bridge throughput and per-token added latency, against a direct upstream call in the same run.

Run: ``python -m benchmarks.bridge [--tokens N] [--streams S]``. Setup: the demo model runs in
this process (its own thread and event loop); the bridge runs as a real ``python -m bridge``
subprocess with the simulated provider, pinned to one CPU when the machine has two or more
(this process is pinned to another), and the client is the channel core over a real WebSocket.

- throughput: ``S`` concurrent streamed completions of ``N`` tokens on one session; each token
  is one SSE event and so one encrypted record from the bridge. Reported as records per second
  of wall time and per second of the bridge process's own CPU time (``/proc``), which is the
  "one bridge core" figure whatever the client costs.
- added latency: the same streamed completion read directly from the demo model (``httpx2``)
  and through the bridge, one at a time; (bridge - direct) / N is the per-token cost the bridge
  adds (decrypt request, forward, re-frame, encrypt, send), and the time-to-first-token
  difference is shown too. Medians over rounds.

This module measures; it asserts no speed targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2

from bridge.demo_upstream import DemoUpstream
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient, chat_body


@contextlib.contextmanager
def _demo_in_thread() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    demo = DemoUpstream(max_body=16 * 1024 * 1024)
    asyncio.run_coroutine_threadsafe(demo.start(), loop).result(10)
    try:
        yield demo.base_url
    finally:
        asyncio.run_coroutine_threadsafe(demo.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime (proc(5), fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def _pin(bridge: BridgeProcess) -> str:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    os.sched_setaffinity(bridge.process.pid, {cpus[0]})
    os.sched_setaffinity(0, set(cpus[1:]))
    return f"bridge on CPU {cpus[0]}, client and demo on CPU {cpus[1:]}"


def _prompt(tokens: int) -> str:
    return " ".join(f"w{i}" for i in range(tokens))


async def _direct(base_url: str, body: bytes) -> tuple[float, float, int]:
    async with httpx2.AsyncClient(trust_env=False, timeout=60) as http:
        start = time.perf_counter()
        first = 0.0
        events = 0
        async with http.stream(
            "POST",
            f"{base_url}/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        ) as response:
            async for chunk in response.aiter_raw():
                if not first:
                    first = time.perf_counter() - start
                events += chunk.count(b"data: ")
        return time.perf_counter() - start, first, events


async def _through(client: ChannelClient, body: bytes) -> tuple[float, float, int]:
    start = time.perf_counter()
    sid = await client.start(
        "POST", "/v1/chat/completions", headers=[("content-type", "application/json")], body=body
    )
    await client.first_chunk(sid, seconds=60)
    first = time.perf_counter() - start
    response = await client.response(sid, seconds=120)
    if response.status != 200 or not response.ended:
        raise RuntimeError(f"bridge answered {response.status}, ended={response.ended}")
    return time.perf_counter() - start, first, response.body.count(b"data: ")


async def _run(
    bridge: BridgeProcess, base_url: str, tokens: int, streams: int, rounds: int
) -> None:
    body = chat_body(_prompt(tokens), stream=True)
    client = await ChannelClient.connect(
        bridge.url, audience=bridge.audience, root_pem=bridge.root_pem
    )
    try:
        await _through(client, body)  # warm-up: connections, caches
        await _direct(base_url, body)
        direct, through = [], []
        for _ in range(rounds):
            direct.append(await _direct(base_url, body))
            through.append(await _through(client, body))
        events = through[0][2]
        if direct[0][2] != events:
            raise RuntimeError(f"direct saw {direct[0][2]} events, bridge {events}")
        d_total = statistics.median(t for t, _, _ in direct)
        b_total = statistics.median(t for t, _, _ in through)
        d_first = statistics.median(f for _, f, _ in direct)
        b_first = statistics.median(f for _, f, _ in through)

        records_before = _cpu_seconds(bridge.process.pid)
        start = time.perf_counter()
        ids = [
            await client.start("POST", "/v1/chat/completions", body=body) for _ in range(streams)
        ]
        results = await asyncio.gather(*(client.response(sid, seconds=300) for sid in ids))
        wall = time.perf_counter() - start
        cpu = _cpu_seconds(bridge.process.pid) - records_before
        records = sum(r.body.count(b"data: ") + 2 for r in results)  # + HEADERS and END
    finally:
        await client.close()
    print(f"  streamed completion of {events} SSE events, median of {rounds} rounds")
    print(f"    direct to upstream         {d_total * 1e3:9.2f} ms  (first {d_first * 1e3:.2f})")
    print(f"    through the bridge         {b_total * 1e3:9.2f} ms  (first {b_first * 1e3:.2f})")
    print(f"    added per token            {(b_total - d_total) / events * 1e6:9.1f} us")
    print(f"    added to first token       {(b_first - d_first) * 1e3:9.2f} ms")
    print(f"  throughput: {streams} concurrent streams on one session, {records} records b2c")
    print(f"    records per wall second    {records / wall:9.0f}")
    if cpu > 0:
        print(f"    records per bridge CPU s   {records / cpu:9.0f}  (bridge CPU {cpu:.2f} s)")


def main(argv: list[str] | None = None) -> None:
    """Start the demo model and a bridge; print latency and throughput figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=400, help="tokens per completion")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams")
    parser.add_argument("--rounds", type=int, default=7, help="latency rounds")
    args = parser.parse_args(argv)
    original = os.sched_getaffinity(0)
    with (
        tempfile.TemporaryDirectory() as workdir,
        _demo_in_thread() as base_url,
        running_bridge(
            Path(workdir),
            upstream=base_url,
            args=["--max-streams-per-session", str(max(32, args.streams))],
            env={"SHROUD_BRIDGE_LOG_LEVEL": "WARNING"},
        ) as bridge,
    ):
        try:
            print(f"bridge benchmark ({_pin(bridge)})")
            asyncio.run(_run(bridge, base_url, args.tokens, args.streams, args.rounds))
        finally:
            os.sched_setaffinity(0, original)


if __name__ == "__main__":
    main()
