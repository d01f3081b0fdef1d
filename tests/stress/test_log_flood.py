"""Refused handshakes and failing upstream requests by the thousand: the log stays a sample.

Loops from eight loopback addresses (127.0.0.2-9; the per-source limits, at their defaults,
hold each to its handshake rate but not the eight together) send ClientHellos the bridge must
refuse: another audience, no common suite, noise (tests/stress/attackers.py, ``garbage``).
Meanwhile an attested attacker sends requests the upstream answers with a broken status
line, each a 502 and an ``upstream request failed`` line; attested connections from
127.0.0.10 send a record that fails (``connection failed``); connections to the metrics port
are reset mid-request (socketserver printed a 30-line traceback for each). Without
``bridge.log_throttle`` the bridge wrote a line (or 30) per event; with it, at most five of
each kind per ten seconds, and at shutdown one summary whose count adds up, with the lines
logged, to exactly what the metrics counted. A legitimate client from 127.0.0.1 is served
throughout; the bridge's memory stays flat.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient, chat_body
from tests.e2e.fake_upstream import FakeUpstream
from tests.stress.harness import (
    FULL,
    MIB,
    Attacker,
    PeakRss,
    attacker,
    legitimate_client,
    mib,
    wait_for,
)

pytestmark = pytest.mark.slow

ATTACK_SECONDS = 30.0 if FULL else 6.0
SOURCES = ",".join(f"127.0.0.{n}" for n in range(2, 10))
UPSTREAM_LOOPS = 2
# Per ten seconds: five lines and a summary for each kind the attack triggers (handshake
# refused, connection failed, upstream request failed, metrics connection failed), a line
# per overload limit met, and the startup and shutdown lines; a line per event would be
# hundreds.
MAX_LINES = (5 + 1) * 4 * (int(ATTACK_SECONDS // 10) + 1) + 20


KINDS = (
    r"handshake refused: ",
    r"connection failed: ",
    r"upstream request failed: ",
    r"metrics connection from .* failed: ",
)


def _failed(bridge: BridgeProcess, reason: str) -> float:
    return bridge.metric("shroud_bridge_handshakes_total", {"result": "failed", "reason": reason})


def _upstream_failures(bridge: BridgeProcess) -> float:
    return bridge.metric("shroud_bridge_errors_total", {"kind": "upstream_connect"})


async def _failing_requests(client: ChannelClient, stop: asyncio.Event) -> int:
    sent = 0
    while not stop.is_set():
        answer = await client.request(
            "POST", "/v1/chat/completions", body=chat_body(model="bad-status"), seconds=10
        )
        assert answer.status == 502
        sent += 1
    return sent


def _connections_failed(bridge: BridgeProcess) -> float:
    return sum(
        bridge.metric("shroud_bridge_errors_total", {"kind": kind})
        for kind in ("protocol", "record_auth")
    )


async def _bad_records(bridge: BridgeProcess, stop: asyncio.Event) -> int:
    """Attested connections that each send one record the bridge cannot open: how many."""
    sent = 0
    while not stop.is_set():
        client = await ChannelClient.connect(
            bridge.url,
            audience=bridge.audience,
            root_pem=bridge.root_pem,
            local_address="127.0.0.10",
        )
        await client.ws.send(b"\x17" + bytes(100))
        await client.ws.wait_closed()
        sent += 1
    return sent


async def _reset_scrapes(bridge: BridgeProcess, stop: asyncio.Event) -> int:
    """Connections to the metrics port that send half a request and reset: how many."""
    port = int(bridge.metrics_url.rsplit(":", 1)[1].split("/", 1)[0])
    linger = struct.pack("ii", 1, 0)  # close() sends RST
    reset = 0
    while not stop.is_set():
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)  # the scrape thread is reading its headers
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.transport.abort()
        reset += 1
    return reset


def _logged(lines: list[str], pattern: str) -> int:
    return sum(1 for line in lines if re.search(pattern, line))


def _summarised(lines: list[str], kind: str) -> int:
    found = (re.search(rf"log throttle: (\d+) more '{kind}' line", line) for line in lines)
    return sum(int(m.group(1)) for m in found if m)


async def test_a_flood_of_refusals_and_failures_writes_a_bounded_log(tmp_path: Path) -> None:
    with (
        FakeUpstream() as upstream,
        running_bridge(
            tmp_path / "bridge", upstream=upstream.base_url, test_source_limits=False
        ) as bridge,
    ):
        stop = asyncio.Event()
        served = tried = 0
        async with legitimate_client(bridge) as legitimate:
            # Its first request imports and connects: before the attack, so that the attack
            # window measures serving, not the test process's start-up under load.
            await legitimate.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "served?"}]
            )
            failing = await attacker(bridge)
            before = len(bridge.log_text().splitlines())
            began = time.monotonic()
            start = bridge.rss_bytes()
            garbage = Attacker(
                "garbage",
                bridge.url,
                bridge.audience,
                "--from",
                SOURCES,
                "--loops",
                "4",
                "--seconds",
                str(ATTACK_SECONDS + 30),
            )
            try:
                requests = [
                    asyncio.create_task(_failing_requests(failing, stop))
                    for _ in range(UPSTREAM_LOOPS)
                ]
                scrapes = asyncio.create_task(_reset_scrapes(bridge, stop))
                records = asyncio.create_task(_bad_records(bridge, stop))
                assert await wait_for(lambda: _failed(bridge, "wrong_audience") > 20, 30), (
                    "no flood"
                )
                with PeakRss(bridge) as rss:
                    loop = asyncio.get_running_loop()
                    until = loop.time() + ATTACK_SECONDS
                    while loop.time() < until:
                        tried += 1
                        await legitimate.chat.completions.create(
                            model="echo", messages=[{"role": "user", "content": "served?"}]
                        )
                        served += 1  # an answer, not an exception (overload, timeout)
                        await asyncio.sleep(0.5)
                stop.set()
                failures_sent = sum(await asyncio.gather(*requests))
                resets = await scrapes
                bad_records = await records
            finally:
                stop.set()
                counts = garbage.stop()
                await failing.close()
        during = bridge.log_text().splitlines()[before:]
        elapsed = time.monotonic() - began
        refused = _failed(bridge, "wrong_audience") + _failed(bridge, "unsupported_suite")
        upstream_failed = _upstream_failures(bridge)
        connections_failed = _connections_failed(bridge)
        bridge.terminate()
        after = bridge.log_text().splitlines()[before:]
    growth = rss.peak - start
    print(
        f"log flood: {counts}; {int(refused)} handshakes refused, {failures_sent} upstream "
        f"failures, {bad_records} bad records, {resets} metrics connections reset; "
        f"{len(during)} log lines during the "
        f"attack; legitimate {served}/{tried} served; RSS growth {mib(growth)}"
    )
    assert refused > 200, "the flood never got going"
    assert failures_sent > 50, "the upstream failures never got going"
    assert resets > 50, "the metrics resets never got going"
    assert bad_records > 10, "the bad records never got going"
    assert len(during) <= MAX_LINES, f"{len(during)} lines, from:\n" + "\n".join(during[:8])
    # Each kind alone: five lines per ten-second window the attack touched, whatever the rest.
    per_kind = 5 * (int(elapsed // 10) + 2)
    for kind in KINDS:
        assert _logged(during, kind) <= per_kind, kind
    # Each line logged or counted once: the summaries at shutdown add up to the metrics.
    logged_refusals = _logged(after, r"handshake refused: (audience|suite):")
    assert logged_refusals + _summarised(after, "handshake refused") == refused
    logged_failures = _logged(after, r"upstream request failed: ")
    assert logged_failures + _summarised(after, "upstream request failed") == upstream_failed
    logged_records = _logged(after, r"connection failed: ")
    assert logged_records + _summarised(after, "connection failed") == connections_failed
    assert served == tried >= ATTACK_SECONDS  # about two a second, none refused
    assert growth <= 32 * MIB
