"""Held requests from several sources: the bridge's descriptors and its upstream stay bounded.

Each request in flight holds an upstream connection, a file descriptor. Before
``max_streams`` the only bound on them was ``max_sessions x max_streams_per_session`` (32768
by default) against a descriptor limit nobody checked (1024 soft under systemd): one source
with its 32 connections of 32 requests each was past it, and a process out of descriptors
cannot even accept a connection.

Here attackers on 127.0.0.2.. (several sources, each at its connection cap) open every
request the bridge lets them, to a model that sends one event and then holds the request
open, in front of a bridge whose RLIMIT_NOFILE is exactly what its bounds need
(``bridge.descriptors``). The requests-in-flight budget refuses them past each source's share
(429 ``source_streams``); a legitimate client on 127.0.0.1 must be served throughout and the
bridge's memory must stay flat. Without the budget the attackers' requests take every
descriptor and the legitimate client gets nothing (0 to 2 of 5 served, 448 upstream requests
held, a traceback logged for every failed accept).

The same budget bounds what unread responses hold: 32 sessions of 32 streams that never read
a flood add 8.6 MiB to the bridge under ``max_streams`` 80, 47.6 MiB without that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from websockets.exceptions import WebSocketException

from bridge.descriptors import BASE_DESCRIPTORS
from bridge.listener import MAX_LINGERING_REFUSALS
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient, chat_body
from tests.e2e.fake_upstream import FakeUpstream
from tests.stress.harness import FULL, MIB, PeakRss, legitimate_client, mib

pytestmark = pytest.mark.slow

SOURCES = 6 if FULL else 3
CONNECTIONS = 8  # --max-connections-per-source: each source opens all it may
STREAMS = 32  # the default --max-streams-per-session: each connection asks for all of them
SESSIONS = 64
MAX_STREAMS = 96
SOURCE_STREAMS = 24
FD_LIMIT = SESSIONS + MAX_STREAMS + MAX_LINGERING_REFUSALS + BASE_DESCRIPTORS
ROUNDS = 5
RETRY = 1.0  # what the refusals' Retry-After asks; the attacker never gives up


async def _connect(bridge: BridgeProcess, source: str) -> list[ChannelClient]:
    """As many connections from ``source`` as the bridge admits, up to ``CONNECTIONS``."""
    clients = []
    for _ in range(CONNECTIONS):
        with contextlib.suppress(WebSocketException, OSError, TimeoutError):
            clients.append(
                await ChannelClient.connect(
                    bridge.url,
                    audience=bridge.audience,
                    root_pem=bridge.root_pem,
                    local_address=source,
                    seconds=10,
                )
            )
    return clients


async def _keep_one(client: ChannelClient, counts: dict[str, int], stop: asyncio.Event) -> None:
    """Keep one request held on ``client``: a stalled request is held until it ends (the stall
    lasts beyond the test); anything else (a refusal, a 502) is retried after ``RETRY``."""
    body = chat_body(model="stall", stream=True)
    while not stop.is_set():
        try:
            sid = await client.start("POST", "/v1/chat/completions", body=body)
            status = await client.status(sid)
        except (WebSocketException, OSError, TimeoutError):
            return  # the connection is gone
        if stop.is_set():
            return  # the test aborted the connection: not an answer
        if status == 200:
            counts["held"] += 1
            with contextlib.suppress(TimeoutError):
                await client.response(sid, seconds=60)
            counts["held"] -= 1
        else:
            counts["refused" if status == 429 else "failed"] += 1
            await asyncio.sleep(RETRY)


async def test_held_requests_from_many_sources_leave_descriptors_for_others(
    tmp_path: Path,
) -> None:
    args = [
        "--max-sessions",
        str(SESSIONS),
        "--max-connections-per-source",
        str(CONNECTIONS),
        "--max-handshakes-per-source",
        "1000",  # the request budget is what this test is about
        "--max-streams",
        str(MAX_STREAMS),
        "--max-source-streams",
        str(SOURCE_STREAMS),
    ]
    with (
        FakeUpstream() as upstream,
        running_bridge(
            tmp_path / "bridge",
            upstream=upstream.base_url,
            args=args,
            test_source_limits=False,
            fd_limit=FD_LIMIT,
        ) as bridge,
    ):
        start = bridge.rss_bytes()
        clients: list[ChannelClient] = []
        counts = {"held": 0, "refused": 0, "failed": 0}
        stop = asyncio.Event()
        served = most_held = 0
        with PeakRss(bridge) as rss:
            for n in range(SOURCES):
                clients += await _connect(bridge, f"127.0.0.{n + 2}")
            keepers = [
                asyncio.create_task(_keep_one(client, counts, stop))
                for client in clients
                for _ in range(STREAMS)
            ]
            try:
                await asyncio.sleep(3.0)  # every request the bridge lets through is held
                for _ in range(ROUNDS):
                    most_held = max(most_held, upstream.in_flight)
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(10), legitimate_client(bridge) as legitimate:
                            reply = await legitimate.chat.completions.create(
                                model="echo", messages=[{"role": "user", "content": "served?"}]
                            )
                            served += reply is not None
                    await asyncio.sleep(0.5)
            finally:
                stop.set()
                for client in clients:
                    client.ws.transport.abort()
                await asyncio.gather(*keepers, return_exceptions=True)
        growth = rss.peak - start
        print(
            f"{SOURCES} sources x {len(clients) // SOURCES} connections x {STREAMS} requests, "
            f"fd limit {FD_LIMIT}: at most {most_held} upstream requests held, "
            f"{counts['refused']} refused (429), {counts['failed']} failed otherwise; "
            f"legitimate {served}/{ROUNDS}; RSS growth {mib(growth)}"
        )
    assert served == ROUNDS
    assert counts["refused"] > 0
    assert most_held <= SOURCES * SOURCE_STREAMS
    assert growth <= 48 * MIB


# The response side: a request whose client stops reading holds at most one upstream read
# (64 KiB) beyond the socket buffers (bridge.upstream), so max_streams bounds that memory too.
FLOOD_SOURCES = 4
FLOOD_SESSIONS = 16 if FULL else 8  # per source
FLOOD_MAX_STREAMS = 80
FLOOD_SOURCE_STREAMS = 16


async def test_unread_floods_hold_no_more_than_the_requests_in_flight_allow(
    tmp_path: Path,
) -> None:
    args = [
        "--max-connections-per-source",
        str(FLOOD_SESSIONS),
        "--max-handshakes-per-source",
        "1000",
        "--max-streams",
        str(FLOOD_MAX_STREAMS),
        "--max-source-streams",
        str(FLOOD_SOURCE_STREAMS),
        "--send-timeout",
        "60",  # the stalled clients stay for the whole test
    ]
    with (
        FakeUpstream() as upstream,
        running_bridge(
            tmp_path / "bridge", upstream=upstream.base_url, args=args, test_source_limits=False
        ) as bridge,
    ):
        start = bridge.rss_bytes()
        clients: list[ChannelClient] = []
        served = 0
        with PeakRss(bridge) as rss:
            try:
                for n in range(FLOOD_SOURCES):
                    for client in await _connect(bridge, f"127.0.0.{n + 2}"):
                        clients.append(client)
                        body = chat_body(model="flood", stream=True)
                        for _ in range(STREAMS):
                            await client.start("POST", "/v1/chat/completions", body=body)
                        await asyncio.sleep(0.05)
                        client.ws.transport.pause_reading()  # never reads again
                await asyncio.sleep(4.0)  # every buffer on the way fills up
                for _ in range(ROUNDS):
                    async with asyncio.timeout(10), legitimate_client(bridge) as legitimate:
                        reply = await legitimate.chat.completions.create(
                            model="echo", messages=[{"role": "user", "content": "served?"}]
                        )
                        served += reply is not None
            finally:
                for client in clients:
                    client.ws.transport.abort()
        growth = rss.peak - start
        print(
            f"{len(clients)} sessions x {STREAMS} unread floods, max_streams "
            f"{FLOOD_MAX_STREAMS}: legitimate {served}/{ROUNDS}; RSS growth {mib(growth)}"
        )
    assert served == ROUNDS
    # 80 requests x one 64 KiB read, and the sessions themselves.
    assert growth <= 16 * MIB
