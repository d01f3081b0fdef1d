"""Slowloris: connections that send their WebSocket upgrade a byte at a time and never finish.

100 such connections from 127.0.0.2 against a bridge that holds at most 64 connections. What
stops them: the per-source connection cap (counted from TCP accept, so an upgrade that never
completes still counts; the extra ones get an immediate HTTP 429 without being parsed) and
the handshake timeout (a connection that has not finished its upgrade and ClientHello by then
is closed). A legitimate client from 127.0.0.1 must be served throughout, the bridge's memory
must stay flat, and no silent connection may outlive the handshake timeout by much.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.bridgeproc import running_bridge
from tests.stress.harness import (
    ATTACKER,
    FULL,
    MIB,
    Attacker,
    PeakRss,
    legitimate_client,
    mib,
    wait_for,
)

pytestmark = pytest.mark.slow

HANDSHAKE_TIMEOUT = 10.0 if FULL else 3.0  # full: the default
ATTACK_SECONDS = 3 * HANDSHAKE_TIMEOUT


# With two workers each holds half of every bound (docs/deployment.md, "Workers"): together
# they still admit at most 32 connections from the attacker. This test still passes with
# the division removed (each worker's 64 sessions outnumber its 32 attackers);
# test_worker_shares.py is the one that fails then.
@pytest.mark.parametrize("workers", [1, 2])
async def test_slow_upgrades_cannot_take_the_bridge(tmp_path: Path, workers: int) -> None:
    args = [
        "--max-sessions",
        "64",
        "--handshake-timeout",
        str(HANDSHAKE_TIMEOUT),
        "--workers",
        str(workers),
    ]
    with running_bridge(tmp_path / "bridge", args=args, test_source_limits=False) as bridge:
        start = bridge.rss_bytes()
        port = bridge.url.rsplit(":", 1)[1].strip("/")
        attack = Attacker(
            "slowloris", "127.0.0.1", port, "--from", ATTACKER, "--count", "100", "--seconds", "600"
        )
        served = 0
        try:
            assert await wait_for(
                lambda: bridge.metric("shroud_bridge_connections_open") >= 32, 30
            ), "the attack never got going"
            with PeakRss(bridge) as rss:
                for _ in range(int(ATTACK_SECONDS)):
                    async with legitimate_client(bridge) as client:
                        if (await client.models.list()).data:
                            served += 1
                    await asyncio.sleep(1.0)
        finally:
            counts = attack.stop()
        growth = rss.peak - start
        refused = bridge.metric(
            "shroud_bridge_overload_refusals_total", {"limit": "connections_per_source"}
        )
        print(f"slowloris {counts}; legitimate {served}/{int(ATTACK_SECONDS)}; RSS {mib(growth)}")
    assert served == int(ATTACK_SECONDS)
    assert refused > 0
    assert counts["cut_silently"] >= 32  # the admitted ones were cut...
    assert counts["longest_silent_ms"] <= (HANDSHAKE_TIMEOUT + 3) * 1000  # ...at the timeout
    assert growth <= 32 * MIB
