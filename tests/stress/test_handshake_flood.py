"""A handshake flood from one source while another source connects.

64 loops from 127.0.0.2 open connections and send ClientHellos as fast as the bridge lets
them (a subprocess: tests/stress/attackers.py). With the bridge's default limits, a client on
127.0.0.1 must complete at least 19 of 20 handshakes (issue 10, "Done when"). Half the loops
ask for fresh quotes, which cost what they do on hardware (``--simulated-quote-latency``:
50 ms each, one at a time per host). What stops the flood before it costs anything: the
per-source connection cap and handshake rate (at the upgrade, before any ClientHello is
read), then for fresh quotes the per-source fresh-quote budget and share of the handshake
slots. The test checks that the attacker got no more handshakes answered than the rate
allows: without the per-source rate it gets thousands.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.exceptions import WebSocketException

from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient
from tests.stress.harness import ATTACKER, LEGITIMATE, MIB, Attacker, PeakRss, mib, wait_for

pytestmark = pytest.mark.slow

LOOPS = 64
HANDSHAKES = 20
RATE = 20  # the default max_handshakes_per_source
PER_SOURCE_LIMITS = ("handshakes_per_source", "connections_per_source", "source_handshake_slots")


def _refusals(bridge: BridgeProcess) -> float:
    return sum(
        bridge.metric("shroud_bridge_overload_refusals_total", {"limit": limit})
        for limit in PER_SOURCE_LIMITS
    )


async def test_a_flood_from_one_source_does_not_starve_another(tmp_path: Path) -> None:
    args = ["--simulated-quote-latency", "0.05"]
    with running_bridge(tmp_path / "bridge", args=args, test_source_limits=False) as bridge:
        start = bridge.rss_bytes()
        attack = Attacker(
            "flood",
            bridge.url,
            bridge.audience,
            "--from",
            ATTACKER,
            "--loops",
            str(LOOPS),
            "--seconds",
            "300",
        )
        completed = 0
        try:
            assert await wait_for(lambda: _refusals(bridge) > 100, 60), "no flood"
            with PeakRss(bridge) as rss:
                for _ in range(HANDSHAKES):
                    try:
                        client = await ChannelClient.connect(
                            bridge.url,
                            audience=bridge.audience,
                            root_pem=bridge.root_pem,
                            local_address=LEGITIMATE,
                            seconds=10,
                        )
                    except (WebSocketException, OSError, TimeoutError):
                        continue
                    completed += 1
                    await client.close()
                    await asyncio.sleep(0.25)  # spread over seconds of flood
        finally:
            counts = attack.stop()
        growth = rss.peak - start
        print(f"flood {counts}; legitimate {completed}/{HANDSHAKES}; RSS growth {mib(growth)}")
    assert completed >= HANDSHAKES - 1
    # The attacker got what the per-source rate allows (a burst, then RATE per second), no more.
    assert counts["answered"] <= RATE * (counts["seconds"] + 2) + RATE
    assert growth <= 64 * MIB
