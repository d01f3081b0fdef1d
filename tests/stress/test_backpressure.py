"""A client that stops reading its streaming response makes the bridge stop reading the
upstream: the upstream's sends block, and the bridge holds no more than a bounded amount.

The bridge's token path writes from the upstream connection's read callback; when the client's
socket is full it pauses that upstream read until the send drained (``bridge.streaming``).
Without the pause, the bridge would read a fast upstream as fast as it sends and queue it all
in memory for a client that never reads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.bridgeproc import running_bridge
from tests.e2e.fake_upstream import FakeUpstream
from tests.stress.harness import MIB, PeakRss, mib, stalled_flood

pytestmark = pytest.mark.slow


async def test_a_client_that_stops_reading_stops_the_upstream_reads(tmp_path: Path) -> None:
    # A send deadline beyond the test: the stalled stream stays open all along.
    args = ["--send-timeout", "60"]
    with (
        FakeUpstream() as upstream,
        running_bridge(tmp_path / "bridge", upstream=upstream.base_url, args=args) as bridge,
    ):
        start = bridge.rss_bytes()
        stalled = await stalled_flood(bridge)
        with PeakRss(bridge) as rss:
            await asyncio.sleep(2.0)  # every buffer on the way fills up
            held_back = upstream.flood_bytes
            await asyncio.sleep(2.0)
            later = upstream.flood_bytes
        growth = rss.peak - start
        print(f"flood: {mib(held_back)} then {mib(later)} sent upstream; RSS {mib(growth)}")
        stalled.ws.transport.abort()
    assert later - held_back <= 1 * MIB  # the bridge stopped reading the upstream
    assert held_back <= 64 * MIB  # socket buffers on both sides, no queue in the bridge
    assert growth <= 32 * MIB
