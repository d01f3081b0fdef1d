"""Idle connections to the metrics port: they cannot take the bridge's threads or descriptors.

``metrics_listen`` is loopback by default, but deployments expose it to their scraper (a pod
address in Kubernetes), and whoever reaches it can connect. prometheus_client's server spent
a thread and a descriptor on every connection for as long as its client kept it open, with no
limit and no timeout. Here an attacker opens connections to the metrics port that send half
a request and wait, against a bridge whose RLIMIT_NOFILE is exactly what its bounds need
(``bridge.descriptors`` counts at most ``bridge.metrics.MAX_SCRAPES`` scrapes at once). A
legitimate client must be served on the bridge's port throughout, and the bridge's threads,
descriptors and memory must stay flat. Without the bound each connection is a thread, the
descriptors run out, and the bridge can no longer accept the legitimate client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from bridge.descriptors import BASE_DESCRIPTORS
from bridge.listener import MAX_LINGERING_REFUSALS
from bridge.metrics import MAX_SCRAPES
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.stress.harness import ATTACKER, FULL, MIB, PeakRss, legitimate_client, mib

pytestmark = pytest.mark.slow

SESSIONS = STREAMS = 64
FD_LIMIT = SESSIONS + STREAMS + MAX_LINGERING_REFUSALS + BASE_DESCRIPTORS
CONNECTIONS = 1000 if FULL else 500  # above FD_LIMIT: without the bound, past every descriptor
ROUNDS = 5


def _threads_and_descriptors(bridge: BridgeProcess) -> tuple[int, int]:
    pid = bridge.process.pid
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    threads = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
    )
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


async def test_idle_metrics_connections_take_neither_threads_nor_descriptors(
    tmp_path: Path,
) -> None:
    args = ["--max-sessions", str(SESSIONS), "--max-streams", str(STREAMS)]
    args += ["--max-source-streams", str(STREAMS)]
    with running_bridge(tmp_path / "bridge", args=args, fd_limit=FD_LIMIT) as bridge:
        host, port = bridge.metrics_url.split("/")[2].split(":")
        start = bridge.rss_bytes()
        before = _threads_and_descriptors(bridge)
        held: list[asyncio.StreamWriter] = []
        served = 0
        with PeakRss(bridge) as rss:
            try:
                for _ in range(CONNECTIONS):
                    # A server that stopped accepting has the kernel drop SYNs: do not wait
                    # minutes for their retransmissions.
                    with contextlib.suppress(OSError, TimeoutError):
                        async with asyncio.timeout(1):
                            _, writer = await asyncio.open_connection(
                                host, int(port), local_addr=(ATTACKER, 0)
                            )
                        writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
                        held.append(writer)
                await asyncio.sleep(1.0)
                during = _threads_and_descriptors(bridge)
                for _ in range(ROUNDS):
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(10), legitimate_client(bridge) as client:
                            served += bool((await client.models.list()).data)
                    await asyncio.sleep(0.2)
            finally:
                for writer in held:
                    writer.transport.abort()
        growth = rss.peak - start
        print(
            f"{CONNECTIONS} idle metrics connections: threads, descriptors {before} -> "
            f"{during}; legitimate {served}/{ROUNDS}; RSS growth {mib(growth)}"
        )
    assert served == ROUNDS
    assert during[0] <= before[0] + MAX_SCRAPES
    assert during[1] <= before[1] + MAX_SCRAPES
    assert growth <= 16 * MIB
