"""Request bodies built to be expensive to parse: the bridge refuses them before parsing.

The bridge parses every JSON request body on its worker's event loop (to check disclosed
fields), so while it parses, every other stream of that worker waits. The body size bounds the
bytes, not the parse: ``{"a":[]}`` is nine bytes and two containers, and a 4 MiB body of it
took 0.7 to 1.3 s and about 120 MiB to parse. ``max_json_containers`` refuses a body holding
more objects and arrays than that (400) after counting them at C speed, without parsing it.

Here an attacker process keeps such bodies in flight on several connections while a
legitimate client streams chat completions (``slow-stream``: ten events 100 ms apart). The
legitimate streams must each finish within :data:`DEADLINE` and the bridge's memory must stay
flat. Measured on this 2-core machine: without the bound (``--max-json-containers
100000000``) the legitimate streams took 4.4 to 9.2 s each (unhindered: 1.1 s), the bridge
grew by 157 to 163 MiB and no attacking body was refused; with it, 1.1 to 1.5 s
and 19 to 22 MiB (mostly the bodies being received), each body refused in 50 to 130 ms.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import shroud_sdk
from tests.bridgeproc import free_port, running_bridge
from tests.stress.harness import (
    FULL,
    MIB,
    Attacker,
    PeakRss,
    UpstreamProcess,
    legitimate_client,
    mib,
)

pytestmark = pytest.mark.slow

CONNECTIONS, STREAMS = (4, 2) if FULL else (3, 2)  # two 4 MiB bodies fill a session's share
BODY = 4 * MIB - 4096  # under the default max_request_body: 413 is not what stops it
LEGITIMATE_STREAMS = 5 if FULL else 3
DEADLINE = 5.0  # seconds for a stream that takes 1.1 s on an idle bridge
GROWTH_BOUND = 48 * MIB


async def _stream_seconds(client: shroud_sdk.AsyncOpenAI) -> float:
    """How long one streamed ``slow-stream`` chat completion takes, to its last event."""
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="slow-stream", messages=[{"role": "user", "content": "still served?"}], stream=True
    )
    events = [event async for event in stream]
    assert len(events) >= 10
    return time.monotonic() - started


async def test_container_bodies_are_refused_before_they_stall_other_streams(
    tmp_path: Path,
) -> None:
    upstream = UpstreamProcess(free_port())  # its own process: its parsing is not the test's
    upstream.start()
    try:
        with running_bridge(tmp_path / "bridge", upstream=upstream.base_url) as bridge:
            async with legitimate_client(bridge) as legitimate:
                unhindered = await _stream_seconds(legitimate)
                start = bridge.rss_bytes()
                attack = Attacker(
                    "bodies",
                    bridge.url,
                    bridge.audience,
                    "--policy",
                    str(bridge.policy_path),
                    "--count",
                    str(CONNECTIONS),
                    "--streams",
                    str(STREAMS),
                    "--size",
                    str(BODY),
                    "--seconds",
                    "300",
                )
                try:
                    await asyncio.to_thread(attack.wait_for_line, "ready", 60)
                    with PeakRss(bridge) as rss:
                        seconds = [
                            await _stream_seconds(legitimate) for _ in range(LEGITIMATE_STREAMS)
                        ]
                finally:
                    counts = attack.stop()
    finally:
        upstream.kill()
    growth = rss.peak - start
    print(
        f"container bodies: {counts}; legitimate streams {[round(s, 2) for s in seconds]} s "
        f"(unhindered {unhindered:.2f} s), RSS start {mib(start)}, peak growth {mib(growth)}"
    )
    # Every attacking body was refused, none reached the upstream.
    assert counts.get("status_400", 0) >= CONNECTIONS * STREAMS
    assert set(counts) <= {"sent", "errors", "status_400", "seconds"}
    assert max(seconds) <= DEADLINE, f"legitimate streams took {seconds} s"
    assert growth <= GROWTH_BOUND, f"RSS grew by {mib(growth)}"
