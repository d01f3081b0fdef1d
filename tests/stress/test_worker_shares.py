"""One source against a two-worker bridge: a per-source bound holds for the bridge, not per worker.

Each worker applies its share of every bridge-wide and per-source bound
(``BridgeConfig.per_worker``), so that together they never exceed the configured figure. Here
the attacker, on 127.0.0.2, opens as many connections as the bridge lets it and holds two
streams on each (a model that sends one event, then nothing), in front of an upstream sized
for the configured figures: what one source may hold, plus two requests. A legitimate client
on 127.0.0.1 must be served throughout. Without the division each worker admits the source's
whole share, the attacker holds up to twice what it may, fills the upstream, and the
legitimate client gets 503s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from websockets.exceptions import InvalidStatus

from tests.bridgeproc import running_bridge
from tests.e2e.client import ChannelClient, chat_body
from tests.e2e.fake_upstream import FakeUpstream
from tests.stress.harness import MIB, PeakRss, attacker, legitimate_client, mib

pytestmark = pytest.mark.slow

PER_SOURCE = 4  # --max-connections-per-source: 2 per worker
STREAMS = 2  # --max-streams-per-session
CAPACITY = PER_SOURCE * STREAMS + 2  # the upstream: one source's most, and room for two more
ATTEMPTS = 40  # connections the attacker tries, spread by the kernel over both workers
ROUNDS = 5


async def _hold(client: ChannelClient) -> None:
    """Open ``STREAMS`` streams to the silent model and wait until each has answered."""
    body = chat_body(model="stall", stream=True)
    sids = [await client.start("POST", "/v1/chat/completions", body=body) for _ in range(STREAMS)]
    for sid in sids:
        await client.first_chunk(sid)


async def test_one_source_holds_no_more_than_its_share_of_a_two_worker_bridge(
    tmp_path: Path,
) -> None:
    args = [
        "--workers",
        "2",
        "--max-connections-per-source",
        str(PER_SOURCE),
        "--max-handshakes-per-source",
        "1000",  # the connection cap is what this test is about
        "--max-streams-per-session",
        str(STREAMS),
    ]
    with (
        FakeUpstream(capacity=CAPACITY) as upstream,
        running_bridge(
            tmp_path / "bridge", upstream=upstream.base_url, args=args, test_source_limits=False
        ) as bridge,
    ):
        start = bridge.rss_bytes()
        held: list[ChannelClient] = []
        refused = held_upstream = served = 0
        try:
            with PeakRss(bridge) as rss:
                for _ in range(ATTEMPTS):
                    try:
                        client = await attacker(bridge)
                    except InvalidStatus:
                        refused += 1
                        continue
                    held.append(client)
                    await _hold(client)
                held_upstream = upstream.in_flight
                # One connection for every round: only the attacker tests the source caps.
                async with legitimate_client(bridge) as legitimate:
                    for _ in range(ROUNDS):
                        try:
                            if (await legitimate.models.list()).data:
                                served += 1
                        except openai.APIStatusError:
                            pass
                        await asyncio.sleep(0.2)
        finally:
            for client in held:
                await client.close()
        growth = rss.peak - start
    print(
        f"attacker: {len(held)} connections admitted, {refused} refused, holding "
        f"{held_upstream}/{CAPACITY} upstream requests; legitimate {served}/{ROUNDS}; "
        f"RSS growth {mib(growth)}"
    )
    assert served == ROUNDS
    assert refused > 0
    assert len(held) <= PER_SOURCE  # the configured figure, whichever worker took them
    assert growth <= 32 * MIB
