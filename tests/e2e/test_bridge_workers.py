"""``--workers 2`` end to end: both workers serve, /metrics adds them up, /healthz answers for
the whole bridge, SIGTERM drains every worker, and a dead worker stops the bridge.

Real bridge subprocesses (``tests.bridgeproc``), real attested clients; the simulated quote
provider takes 20 ms per quote, serialised per host, as a fast configfs-tsm would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx2
import pytest

from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient, chat_body
from tests.e2e.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow

WORKERS = ["--workers", "2", "--simulated-quote-latency", "0.02"]


def _workers(bridge: BridgeProcess) -> list[int]:
    pids = bridge.pids()[1:]
    assert len(pids) == 2, pids
    return pids


def _connections(pid: int, port: int) -> int:
    """Established TCP connections on ``port`` held by process ``pid`` (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                count += 1
    return count


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


async def _client(bridge: BridgeProcess) -> ChannelClient:
    return await ChannelClient.connect(
        bridge.url, audience=bridge.audience, root_pem=bridge.root_pem
    )


async def test_both_workers_serve_with_their_own_attested_keys(tmp_path: Path) -> None:
    with running_bridge(tmp_path, args=WORKERS) as bridge:
        port = int(bridge.url.rsplit(":", 1)[1].strip("/"))
        clients = []
        try:
            # Connections are spread by whichever worker accepts first; enough of them and
            # each worker holds some.
            for _ in range(24):
                clients.append(await _client(bridge))
                if all(_connections(pid, port) for pid in _workers(bridge)):
                    break
            assert all(_connections(pid, port) for pid in _workers(bridge))
            # Each worker signs usage with a key of its own: keys never cross processes.
            assert len({c.handshake.usage_key for c in clients}) == 2
            answers = await asyncio.gather(
                *(c.request("POST", "/v1/chat/completions", body=chat_body()) for c in clients)
            )
            assert {a.status for a in answers} == {200}
        finally:
            for client in clients:
                await client.close()
        # /metrics adds the workers up: each made its own attested-key quote at start, and
        # every stream is counted once, whichever worker served it.
        assert (
            bridge.metric("shroud_bridge_quotes_generated_total", {"purpose": "attested_key"}) == 2
        )
        served = bridge.metric(
            "shroud_bridge_streams_total",
            {"path": "/v1/chat/completions", "outcome": "completed"},
        )
        assert served == len(clients)
        assert bridge.metric("shroud_bridge_sessions_active") == 0


async def test_sigterm_drains_every_worker_and_healthz_says_so(tmp_path: Path) -> None:
    args = [*WORKERS, "--shutdown-grace", "20"]
    with (
        FakeUpstream() as upstream,
        running_bridge(tmp_path, upstream=upstream.base_url, args=args) as bridge,
    ):
        port = int(bridge.url.rsplit(":", 1)[1].strip("/"))
        clients: list[ChannelClient] = []
        for _ in range(24):
            clients.append(await _client(bridge))
            if all(_connections(pid, port) for pid in _workers(bridge)):
                break
        body = chat_body(model="slow-stream", stream=True)  # ten events, 100 ms apart
        streams = [(c, await c.start("POST", "/v1/chat/completions", body=body)) for c in clients]
        for client, sid in streams:
            await client.first_chunk(sid)
        workers = _workers(bridge)
        bridge.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        healthz = 200
        while time.monotonic() < deadline and healthz == 200:
            healthz = httpx2.get(bridge.health_url, timeout=2, trust_env=False).status_code
            await asyncio.sleep(0.02)
        assert healthz == 503  # draining, whichever worker answered
        for client, sid in streams:
            response = await client.response(sid, seconds=30)
            assert response.ended  # in-flight streams were finished, not cut
            await client.close()
        assert await asyncio.to_thread(bridge.process.wait, 40) == 0
        assert not any(_alive(pid) for pid in workers)
    assert "stopping 2 workers" in bridge.log_text()


async def test_a_dead_worker_stops_the_whole_bridge(tmp_path: Path) -> None:
    with running_bridge(tmp_path, args=WORKERS) as bridge:
        victim, survivor = _workers(bridge)
        os.kill(victim, signal.SIGKILL)
        status = await asyncio.to_thread(bridge.process.wait, 40)
        assert status == 1
        assert not _alive(survivor)
        log = bridge.log_text()
    assert f"worker {victim} exited (signal SIGKILL): stopping the bridge" in log


async def test_a_worker_that_loses_its_parent_stops(tmp_path: Path) -> None:
    with running_bridge(tmp_path, args=WORKERS) as bridge:
        workers = _workers(bridge)
        bridge.process.kill()  # the parent, without a word to its workers
        bridge.process.wait(10)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its parent"
            await asyncio.sleep(0.1)
