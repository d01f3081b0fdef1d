"""Who the client is behind a trusted proxy, end to end against a bridge subprocess.

The bridge counts connections per client source; here at most one per source, so whether two
connections count as one source shows. Real clients:

- **X-Forwarded-For**: attested clients send the header themselves, once from 127.0.0.1 (the
  trusted proxy's address) and once from 127.0.0.2 (anyone else);
- **PROXY protocol v2**: attested clients connect through a relay on 127.0.0.1 that, like
  HAProxy with ``send-proxy-v2``, opens each connection to the bridge with a PROXY header
  naming the client, then pipes bytes both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidMessage, InvalidStatus

from bridge.proxy_protocol import encode
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient

pytestmark = pytest.mark.slow

ONE_PER_SOURCE = ["--max-connections-per-source", "1", "--max-handshakes-per-source", "100"]
# The PROXY v2 relay reaches the bridge from here (health checks still come from 127.0.0.1).
PROXY_ADDRESS = "127.0.0.5"


async def _connect(
    bridge: BridgeProcess, url: str | None = None, source: str = "127.0.0.1", **headers: str
) -> ChannelClient:
    return await ChannelClient.connect(
        url or bridge.url,
        audience=bridge.audience,
        root_pem=bridge.root_pem,
        local_address=source,
        headers={name.replace("_", "-"): value for name, value in headers.items()},
    )


async def _refused(bridge: BridgeProcess, *args: object, **kwargs: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        await _connect(bridge, *args, **kwargs)  # type: ignore[arg-type]
    return caught.value


async def test_forwarded_for_is_believed_from_a_trusted_proxy_only(tmp_path: Path) -> None:
    args = [*ONE_PER_SOURCE, "--trusted-proxy", "127.0.0.1"]
    with running_bridge(tmp_path, args=args, test_source_limits=False) as bridge:
        held = [
            await _connect(bridge, X_Forwarded_For="198.51.100.1"),
            await _connect(bridge, X_Forwarded_For="203.0.113.66, 198.51.100.2"),
            await _connect(bridge, source="127.0.0.2", X_Forwarded_For="198.51.100.3"),
        ]
        try:
            # Through the trusted proxy, the forwarded client is the source...
            again = await _refused(bridge, X_Forwarded_For="198.51.100.1")
            assert again.response.status_code == 429
            assert again.response.headers["x-shroud-overload"] == "connections_per_source"
            # ...and only the address the proxy appended counts, not what the client wrote.
            spoof = await _refused(bridge, X_Forwarded_For="198.51.100.9, 198.51.100.2")
            assert spoof.response.status_code == 429
            # From anyone else the header is ignored: 127.0.0.2 is the source.
            ignored = await _refused(bridge, source="127.0.0.2", X_Forwarded_For="198.51.100.4")
            assert ignored.response.status_code == 429
        finally:
            for client in held:
                await client.close()
        bridge.terminate()
        log = bridge.log_text()
    assert "refused connections_per_source from 198.51.100.1" in log


class ProxyV2Relay:
    """A TCP relay that announces ``next_source`` in a PROXY v2 header on each connection."""

    def __init__(self, bridge_port: int) -> None:
        self.bridge_port = bridge_port
        self.next_source = "192.0.2.1"
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = self.next_source
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.bridge_port, local_addr=(PROXY_ADDRESS, 0)
        )
        up_writer.write(encode(source, 40000, "127.0.0.1", self.bridge_port))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


@contextlib.asynccontextmanager
async def proxy_relay(bridge: BridgeProcess) -> AsyncIterator[ProxyV2Relay]:
    relay = ProxyV2Relay(int(bridge.url.rsplit(":", 1)[1].strip("/")))
    relay.server = await asyncio.start_server(relay._track, "127.0.0.1", 0)
    try:
        yield relay
    finally:
        relay.server.close()
        for task in list(relay.tasks):
            task.cancel()
        await asyncio.gather(*relay.tasks, return_exceptions=True)


async def test_a_proxy_v2_header_names_the_client_and_is_required_from_the_proxy(
    tmp_path: Path,
) -> None:
    args = [*ONE_PER_SOURCE, "--trusted-proxy", f"{PROXY_ADDRESS}/32", "--proxy-protocol"]
    with running_bridge(tmp_path, args=args, test_source_limits=False) as bridge:
        async with proxy_relay(bridge) as relay:
            relay.next_source = "203.0.113.7"
            first = await _connect(bridge, relay.url)
            relay.next_source = "203.0.113.8"
            second = await _connect(bridge, relay.url)  # another client: its own share
            relay.next_source = "203.0.113.7"
            again = await _refused(bridge, relay.url)  # the same client: refused at accept
            assert again.response.status_code == 429
            # Not through the proxy: the trusted address must send the header (no guessing)...
            await _dropped_at_once(bridge, PROXY_ADDRESS)
            # ...and any other peer is a direct client.
            direct = await _connect(bridge, source="127.0.0.2")
            response = await direct.request("GET", "/v1/models")
            assert response.status == 200
            for client in (first, second, direct):
                await client.close()
        bridge.terminate()
        log = bridge.log_text()
    assert "refused connections_per_source from 203.0.113.7" in log


async def _dropped_at_once(bridge: BridgeProcess, source: str) -> None:
    try:
        async with asyncio.timeout(5):
            await _connect(bridge, source=source)
    except TimeoutError:  # an OSError too: checked first
        pytest.fail("the connection was left hanging, not dropped")
    except (InvalidMessage, OSError, EOFError):
        return
    pytest.fail("served without the PROXY header its address must send")


async def test_a_proxy_header_from_an_untrusted_peer_is_not_honoured(tmp_path: Path) -> None:
    args = ["--trusted-proxy", f"{PROXY_ADDRESS}/32", "--proxy-protocol"]
    with running_bridge(tmp_path, args=args) as bridge:
        port = int(bridge.url.rsplit(":", 1)[1].strip("/"))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        writer.write(encode("198.51.100.1", 1, "127.0.0.1", port) + b"GET / HTTP/1.1\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert not answer.startswith(b"HTTP/1.1 101")  # read as a malformed request, not a client
