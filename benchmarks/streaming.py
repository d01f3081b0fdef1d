"""Streaming through SDK + bridge, against plain ``openai`` and a bare TCP relay, in one run.

One SSE upstream process (``benchmarks.sse_upstream``: every token carries its send time), one
bare TCP relay process in front of it (``benchmarks.tcp_relay``) and the bridge of this tree
as a subprocess (simulated TDX, one worker where the bridge has workers) in front of it too.
Nothing is pinned: client, upstream, relay and bridge share the machine's cores.

Paths, each with a real ``openai`` client object (async and sync): *direct* (``openai`` to the
upstream), *relay* (``openai`` through the relay) and *bridge* (``shroud_sdk``'s client through
the bridge). In every round each path runs once per client kind, in rotating order, so the
per-round ratios compare runs made moments apart:

- throughput: a 2,000-token stream, upstream unpaced; tokens per second of wall time from the
  request to the last token. Ratio bridge / direct.
- added one-way latency: per token, receive time minus the upstream's send time (one clock);
  a path's added latency is its p50 (p99) minus the direct path's in the same round. Ratio
  bridge-added / relay-added. Paced: 1,000 tokens at 1 ms per token per path and round, as
  five 200-token streams per path interleaved across the paths. Unpaced (the
  throughput stream), where latency is queueing behind the burst: the whole one-way latency,
  bridge path against relay path.
- bridge CPU per token: the bridge process's own CPU time (``/proc``) over a run, per token.
  Baseline: the relay process's, over its run.

Active streams (``streams_rows``): N concurrent streams at 20 tokens/s each, started spread
over one token interval, read as raw bytes through ``httpx2`` (the SDK's transport for the
bridge, at most 32 streams per attested session as the bridge allows by default), so the load
generator spends little per chunk. Counted over a steady window after a second of start-up:
delivered tokens against the offered rate, and the p99 one-way latency against the direct
path's. This module measures; it asserts no speed targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx2
import openai

import shroud_sdk
from benchmarks.processes import bridge, server, tree_cpu_seconds
from benchmarks.sse_upstream import MODEL
from benchmarks.table import Row, at_least, at_most
from shroud_sdk.verifier import AttestationVerifier
from tests.bridgeproc import BridgeProcess

THROUGHPUT_TOKENS: Final = 2000
PACED_TOKENS: Final = 1000
PACE_US: Final = 1000
# The paced runs of a round are this many streams per path, interleaved across the paths
# (PACED_TOKENS in all per path): the machine's background load comes and goes within
# seconds, and interleaving lets each path sample the same moments, as one stream per path
# in a row would not.
PACED_SEGMENTS: Final = 5
KINDS: Final = ("async", "sync")
PATHS: Final = ("direct", "relay", "bridge")
_MESSAGES: Final = [{"role": "user", "content": "benchmark"}]
_STAMP: Final = re.compile(rb'"content":"(\d+) ')
_STREAM_RATE: Final = 20.0  # tokens per second per stream
_STREAMS_PER_SESSION: Final = 32  # the bridge's default --max-streams-per-session


@dataclass
class _Run:
    seconds: float
    latencies_ns: list[int]
    cpu: float = 0.0  # CPU seconds of the process between client and upstream (if any)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] / 1e9


@dataclass
class _Rounds:
    """Every run of every round, by (kind, path, paced)."""

    runs: dict[tuple[str, str, bool], list[_Run]] = field(default_factory=dict)

    def add(self, kind: str, path: str, paced: bool, run: _Run) -> None:
        self.runs.setdefault((kind, path, paced), []).append(run)

    def of(self, kind: str, path: str, paced: bool) -> list[_Run]:
        return self.runs[(kind, path, paced)]


def _request(tokens: int, pace_us: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": _MESSAGES,
        "stream": True,
        "max_tokens": tokens,
        "extra_body": {"bench_pace_us": pace_us},
    }


def _checked(tokens: int, start: float, latencies: list[int]) -> _Run:
    seconds = time.perf_counter() - start
    if len(latencies) != tokens:
        raise RuntimeError(f"expected {tokens} tokens, got {len(latencies)}")
    return _Run(seconds, latencies)


async def _async_stream(client: openai.AsyncOpenAI, tokens: int, pace_us: int) -> _Run:
    latencies = []
    start = time.perf_counter()
    stream = await client.chat.completions.create(**_request(tokens, pace_us))
    async for chunk in stream:
        arrived = time.monotonic_ns()
        if chunk.choices and chunk.choices[0].delta.content:
            latencies.append(arrived - int(chunk.choices[0].delta.content))
    return _checked(tokens, start, latencies)


def _sync_stream(client: openai.OpenAI, tokens: int, pace_us: int) -> _Run:
    latencies = []
    start = time.perf_counter()
    stream = client.chat.completions.create(**_request(tokens, pace_us))
    for chunk in stream:
        arrived = time.monotonic_ns()
        if chunk.choices and chunk.choices[0].delta.content:
            latencies.append(arrived - int(chunk.choices[0].delta.content))
    return _checked(tokens, start, latencies)


@dataclass
class _Setup:
    upstream_url: str
    relay_url: str
    relay_pid: int
    bridge: BridgeProcess


@contextlib.contextmanager
def running_paths() -> Iterator[_Setup]:
    """The upstream, the relay in front of it and the bridge in front of it, all running."""
    with server("sse_upstream") as (_, port):
        upstream = f"http://127.0.0.1:{port}/v1"
        with (
            server("tcp_relay", "--target", f"127.0.0.1:{port}") as (relay, relay_port),
            bridge(upstream) as running,
        ):
            yield _Setup(upstream, f"http://127.0.0.1:{relay_port}/v1", relay.pid, running)


def _measure_paths(setup: _Setup, rounds: int) -> _Rounds:
    cpu_of = {"direct": None, "relay": setup.relay_pid, "bridge": setup.bridge.process.pid}
    policy = setup.bridge.policy
    loop = asyncio.new_event_loop()
    clients_async: dict[str, openai.AsyncOpenAI] = {
        "direct": openai.AsyncOpenAI(base_url=setup.upstream_url, api_key="k", max_retries=0),
        "relay": openai.AsyncOpenAI(base_url=setup.relay_url, api_key="k", max_retries=0),
        "bridge": shroud_sdk.AsyncOpenAI(
            bridge_url=setup.bridge.url, api_key="k", policy=policy, max_retries=0
        ),
    }
    clients_sync: dict[str, openai.OpenAI] = {
        "direct": openai.OpenAI(base_url=setup.upstream_url, api_key="k", max_retries=0),
        "relay": openai.OpenAI(base_url=setup.relay_url, api_key="k", max_retries=0),
        "bridge": shroud_sdk.OpenAI(
            bridge_url=setup.bridge.url, api_key="k", policy=policy, max_retries=0
        ),
    }

    def one(kind: str, path: str, tokens: int, pace_us: int) -> _Run:
        pid = cpu_of[path]
        before = tree_cpu_seconds(pid) if pid else 0.0
        if kind == "async":
            run = loop.run_until_complete(_async_stream(clients_async[path], tokens, pace_us))
        else:
            run = _sync_stream(clients_sync[path], tokens, pace_us)
        run.cpu = tree_cpu_seconds(pid) - before if pid else 0.0
        return run

    results = _Rounds()
    try:
        for kind in KINDS:  # warm-up: connections, handshakes, imports; not counted
            for path in PATHS:
                one(kind, path, 200, 0)
                one(kind, path, 50, PACE_US)
        segment = PACED_TOKENS // PACED_SEGMENTS
        for number in range(rounds):
            shift = number % len(PATHS)
            order = PATHS[shift:] + PATHS[:shift]
            for kind in KINDS:
                for path in order:
                    results.add(kind, path, False, one(kind, path, THROUGHPUT_TOKENS, 0))
                paced = {path: _Run(0.0, []) for path in PATHS}
                for part in range(PACED_SEGMENTS):
                    for path in order[part % len(order) :] + order[: part % len(order)]:
                        run = one(kind, path, segment, PACE_US)
                        paced[path].seconds += run.seconds
                        paced[path].latencies_ns.extend(run.latencies_ns)
                        paced[path].cpu += run.cpu
                for path in PATHS:
                    results.add(kind, path, True, paced[path])
    finally:
        for client in clients_sync.values():
            client.close()
        for async_client in clients_async.values():
            loop.run_until_complete(async_client.close())
        loop.close()
    return results


def _added(runs: _Rounds, kind: str, path: str, paced: bool, fraction: float) -> tuple[float, ...]:
    direct = runs.of(kind, "direct", paced)
    return tuple(
        r.percentile(fraction) - d.percentile(fraction)
        for r, d in zip(runs.of(kind, path, paced), direct, strict=True)
    )


def _latency(
    runs: _Rounds, kind: str, path: str, paced: bool, fraction: float
) -> tuple[float, ...]:
    return tuple(r.percentile(fraction) for r in runs.of(kind, path, paced))


def _throughput(runs: _Rounds, kind: str, path: str) -> tuple[float, ...]:
    return tuple(THROUGHPUT_TOKENS / r.seconds for r in runs.of(kind, path, False))


def _cpu_per_token(runs: _Rounds, path: str, paced: bool) -> tuple[float, ...]:
    tokens = PACED_TOKENS if paced else THROUGHPUT_TOKENS
    return tuple(
        (a.cpu + s.cpu) / (2 * tokens)
        for a, s in zip(runs.of("async", path, paced), runs.of("sync", path, paced), strict=True)
    )


def path_rows(setup: _Setup, rounds: int = 5) -> list[Row]:
    """Throughput, added latency and bridge CPU rows (``rounds`` interleaved rounds)."""
    runs = _measure_paths(setup, rounds)
    rows: list[Row] = []
    for kind in KINDS:
        rows.append(
            Row(
                f"throughput, {THROUGHPUT_TOKENS:,}-token stream, {kind}",
                "tok/s",
                _throughput(runs, kind, "bridge"),
                _throughput(runs, kind, "direct"),
                "direct openai",
                at_least(0.8),
            )
        )
    rows.append(
        Row(
            "  (reference: the bare TCP relay, async)",
            "tok/s",
            _throughput(runs, "async", "relay"),
            _throughput(runs, "async", "direct"),
            "direct openai",
        )
    )
    # Unpaced, latency is mostly queueing behind the burst, and the relay adds next to nothing
    # (sometimes less than nothing): whole one-way latencies compare there, not added ones.
    for paced, label in (
        (True, "added one-way latency {}, paced 1 ms/token"),
        (False, "one-way latency {}, unpaced"),
    ):
        for kind in KINDS:
            for fraction, name in ((0.5, "p50"), (0.99, "p99")):
                figure = _added if paced else _latency
                rows.append(
                    Row(
                        f"{label.format(name)}, {kind}",
                        "s",
                        figure(runs, kind, "bridge", paced, fraction),
                        figure(runs, kind, "relay", paced, fraction),
                        "TCP relay",
                        at_most(2.0) if paced and fraction == 0.5 else None,
                    )
                )
    for paced, name in ((False, "unpaced"), (True, "paced 1 ms/token")):
        rows.append(
            Row(
                f"bridge CPU per token, {name}",
                "s",
                _cpu_per_token(runs, "bridge", paced),
                _cpu_per_token(runs, "relay", paced),
                "TCP relay",
            )
        )
    return rows


# -- active streams ----------------------------------------------------------------------------


@dataclass
class _StreamsRun:
    delivered: int  # tokens received inside the window
    window: float  # seconds
    latencies_ns: list[int]

    def p99(self) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] / 1e9


async def _streams(
    clients: list[httpx2.AsyncClient], url: str, count: int, seconds: float
) -> _StreamsRun:
    tokens = round(_STREAM_RATE * (seconds + 1.0))
    body = (
        b'{"model":"%s","messages":[{"role":"user","content":"x"}],"stream":true,'
        b'"max_tokens":%d,"bench_pace_us":%d}' % (MODEL.encode(), tokens, 1e6 / _STREAM_RATE)
    )
    arrivals: list[tuple[int, int]] = []
    interval = 1.0 / _STREAM_RATE

    async def one(client: httpx2.AsyncClient, delay: float) -> None:
        await asyncio.sleep(delay)
        headers = {"content-type": "application/json", "authorization": "Bearer k"}
        async with client.stream("POST", url, content=body, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"stream answered {response.status_code}")
            pending = b""
            async for raw in response.aiter_raw():
                now = time.monotonic_ns()
                pending += raw
                cut = pending.rfind(b"\n\n") + 2
                if cut > 1:
                    for stamp in _STAMP.findall(pending, 0, cut):
                        arrivals.append((now, int(stamp)))
                    pending = pending[cut:]

    start = time.monotonic_ns()
    tasks = [
        asyncio.ensure_future(one(clients[i % len(clients)], interval * i / count))
        for i in range(count)
    ]
    # Only the window counts: a path that lags is not waited for past it (its streams are
    # closed, which abandons them), so the bench's time does not depend on the bridge's speed.
    _, late = await asyncio.wait(tasks, timeout=seconds + 2.0)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError("a benchmark stream failed") from task.exception()
    low, high = start + 1_000_000_000, start + int(seconds * 1e9)
    inside = [(arrived, sent) for arrived, sent in arrivals if low <= arrived < high]
    return _StreamsRun(len(inside), (high - low) / 1e9, [a - s for a, s in inside])


def _streams_round(setup: _Setup, count: int, seconds: float) -> tuple[_StreamsRun, _StreamsRun]:
    policy = setup.bridge.policy
    sessions = -(-count // _STREAMS_PER_SESSION)

    async def measure() -> tuple[_StreamsRun, _StreamsRun]:
        limits = httpx2.Limits(max_connections=count + 10, max_keepalive_connections=count)
        async with httpx2.AsyncClient(timeout=60, limits=limits, trust_env=False) as direct:
            direct_run = await _streams(
                [direct], f"{setup.upstream_url}/chat/completions", count, seconds
            )
        transports = [
            shroud_sdk.AsyncShroudTransport(setup.bridge.url, AttestationVerifier(policy))
            for _ in range(sessions)
        ]
        clients = [httpx2.AsyncClient(transport=t, timeout=60) for t in transports]
        try:
            for client, transport in zip(clients, transports, strict=True):
                (await client.get(f"{transport.base_url}/models")).raise_for_status()
            url = f"{transports[0].base_url}/chat/completions"
            bridge_run = await _streams(clients, url, count, seconds)
        finally:
            for client in clients:
                await client.aclose()
        return direct_run, bridge_run

    return asyncio.run(measure())


def streams_rows(
    setup: _Setup, counts: tuple[int, ...] = (100, 250, 500), seconds: float = 6.0
) -> list[Row]:
    """Per N: delivered rate against the offered rate (bridge, and direct for reference) and
    p99 one-way latency per chunk against the direct path's (one round each)."""
    rows: list[Row] = []
    for count in counts:
        direct, through = _streams_round(setup, count, seconds)
        offered = count * _STREAM_RATE
        rows.append(
            Row(
                f"{count} streams at 20 tok/s: delivered, bridge",
                "chunks/s",
                (through.delivered / through.window,),
                (offered,),
                "offered",
                at_least(0.97),
            )
        )
        rows.append(
            Row(
                f"{count} streams at 20 tok/s: delivered, direct",
                "chunks/s",
                (direct.delivered / direct.window,),
                (offered,),
                "offered",
            )
        )
        added = through.p99() - direct.p99()
        # Over delivered chunks only: with more than 1% of the offered chunks missing, the
        # true p99 is a chunk that never came, and the target cannot be met.
        share = through.delivered / through.window / offered
        verdict = "met" if added <= 0.05 and share >= 0.99 else "NOT MET"
        missing = f", {share:.0%} delivered" if share < 0.99 else ""
        rows.append(
            Row(
                f"{count} streams at 20 tok/s: p99 per chunk",
                "s",
                (through.p99(),),
                (direct.p99(),),
                "direct",
                note=f"added {added * 1e3:.1f} ms (target <= 50 ms: {verdict}{missing})",
            )
        )
    return rows
