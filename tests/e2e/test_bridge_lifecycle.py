"""End to end: the bridge process's life cycle and failure modes that need their own bridge:
upstream down, handshake and idle timeouts, graceful shutdown, bad configuration."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shroud_sdk.channel.constants import CLOSE_GOING_AWAY
from tests.bridgeproc import REPO_ROOT, free_port, running_bridge
from tests.e2e.client import ChannelClient, chat_body, sse_data
from tests.e2e.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


async def test_unreachable_upstream_gets_502(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with running_bridge(tmp_path, upstream=dead) as bridge:
        client = await ChannelClient.connect(
            bridge.url, audience=bridge.audience, root_pem=bridge.root_pem
        )
        try:
            response = await client.request("POST", "/v1/chat/completions", body=chat_body())
        finally:
            await client.close()
    assert response.status == 502
    document = response.json()
    assert isinstance(document, dict)
    assert document["error"]["code"] == "upstream_unavailable"


async def test_silent_connection_is_closed_at_the_handshake_timeout(tmp_path: Path) -> None:
    with running_bridge(tmp_path, args=["--handshake-timeout", "0.5"]) as bridge:
        async with connect(bridge.url, compression=None) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)  # we never send a ClientHello
            assert ws.close_code == 1008


async def test_idle_session_is_closed_with_authenticated_close(tmp_path: Path) -> None:
    with running_bridge(tmp_path, args=["--idle-timeout", "0.5"]) as bridge:
        client = await ChannelClient.connect(
            bridge.url, audience=bridge.audience, root_pem=bridge.root_pem
        )
        try:
            async with asyncio.timeout(10):
                await client.connection_done.wait()
            assert client.closed_by_peer is not None
            assert client.closed_by_peer.code == CLOSE_GOING_AWAY
        finally:
            await client.close()


async def test_graceful_shutdown_completes_in_flight_streams(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with running_bridge(tmp_path, upstream=upstream.base_url) as bridge:
        client = await ChannelClient.connect(
            bridge.url, audience=bridge.audience, root_pem=bridge.root_pem
        )
        try:
            sid = await client.start(
                "POST", "/v1/chat/completions", body=chat_body(model="slow-stream", stream=True)
            )
            await client.first_chunk(sid)
            bridge.process.send_signal(signal.SIGTERM)
            response = await client.response(sid)
            async with asyncio.timeout(10):
                await client.connection_done.wait()
            exit_status = await asyncio.to_thread(bridge.process.wait, 20)
        finally:
            await client.close()
    assert response.ended  # END, not RESET: the stream was allowed to finish
    events = sse_data(response.body)
    assert len(events) == 11
    assert events[-1] == "[DONE]"
    assert client.closed_by_peer is not None
    assert client.closed_by_peer.code == CLOSE_GOING_AWAY
    assert exit_status == 0


def test_invalid_configuration_exits_2_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "--quote-provider", "simulated", "--listen", "nope"],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"listen" in result.stderr
