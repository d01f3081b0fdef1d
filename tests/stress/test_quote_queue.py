"""Fresh-quote handshakes from many sources while the attested key must rotate.

Quotes cost what they do on hardware (``--simulated-quote-latency 0.2``: one at a time per
host). 60 attacker sources (127.0.0.10 and up: each is its own source, so per-source
connection and handshake limits never bind) each keep two fresh-mode handshakes open, as many
as their fresh-quote budget allows, asking again half a second after each ends. Demand is
then 120 quotes at once and 6 a second after that, more than the 5 a second the host makes.

Without ``max_concurrent_handshakes`` every one of them becomes a quote job: the jobs queue
behind each other (a job outlives its connection: a thread cannot be cancelled), and so does
the bridge's own rotation quote. The attested key (lifetime 16 s, rotated at 8 s) then
expires before its successor is quoted, and ordinary attested-key handshakes, which need no
quote themselves, are refused with evidence-unavailable. With the cap at most 16 quote jobs
wait, so the rotation quote waits about 3 s; attackers beyond the cap get 1013 at once.

A client on 127.0.0.1 makes an attested-key handshake every half second for 24 s (past the
first key's expiry) and must complete all but one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from websockets.exceptions import WebSocketException

from shroud_sdk.errors import ShroudError
from tests.bridgeproc import running_bridge
from tests.e2e.client import ChannelClient
from tests.stress.harness import LEGITIMATE, MIB, Attacker, PeakRss, mib

pytestmark = pytest.mark.slow

LIFETIME = 16  # seconds; the first key is rotated at 8 s and expires at 16 s
WATCH = 24.0  # seconds the legitimate client keeps handshaking (past the expiry)
SOURCES = 60
QUOTE_LATENCY = 0.2


async def test_a_quote_queue_from_many_sources_does_not_expire_the_attested_key(
    tmp_path: Path,
) -> None:
    args = [
        "--simulated-quote-latency",
        str(QUOTE_LATENCY),
        "--evidence-lifetime",
        str(LIFETIME),
    ]
    with running_bridge(tmp_path / "bridge", args=args, test_source_limits=False) as bridge:
        start = bridge.rss_bytes()
        attack = Attacker(
            "quotes",
            bridge.url,
            bridge.audience,
            "--from",
            "127.0.0.10",
            "--count",
            str(SOURCES),
            "--loops",
            "2",  # the default fresh_quote_burst
            "--seconds",
            "300",
        )
        attempts, failures = 0, []
        try:
            with PeakRss(bridge) as rss:
                began = time.monotonic()
                while (elapsed := time.monotonic() - began) < WATCH:
                    attempts += 1
                    try:
                        client = await ChannelClient.connect(
                            bridge.url,
                            audience=bridge.audience,
                            root_pem=bridge.root_pem,
                            local_address=LEGITIMATE,
                            seconds=5,
                        )
                    except (WebSocketException, ShroudError, OSError, TimeoutError) as exc:
                        failures.append(f"{elapsed:.1f}s: {exc}")
                    else:
                        await client.close()
                    await asyncio.sleep(0.5)
            capacity = bridge.metric(
                "shroud_bridge_overload_refusals_total", {"limit": "handshake_capacity"}
            )
        finally:
            counts = attack.stop()
        growth = rss.peak - start
        print(
            f"quotes {counts}; capacity refusals {capacity:.0f}; legitimate "
            f"{attempts - len(failures)}/{attempts} {failures[:5]}; RSS growth {mib(growth)}"
        )
    assert len(failures) <= 1, failures
    # The attack happened: quotes were made for attackers, and the cap turned the rest away
    # without making them wait.
    assert counts["answered"] >= 20
    assert capacity > 0
    assert counts["slowest_1013_ms"] < 2000
    assert growth <= 64 * MIB
