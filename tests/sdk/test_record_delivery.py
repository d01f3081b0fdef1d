"""How the SDK hands received records to streams: from the WebSocket's protocol callback.

``_BridgeSocket`` passes each message on as soon as its frames are parsed (fragments joined,
messages held until a receiver is attached); ``_Link.receive`` opens the record and queues its
events in their streams' inboxes at once. These tests feed frames and records directly, with
no socket: order is kept, a full inbox stops the socket's reading and the events read after
it wait in order until the application makes room, a forged record fails every stream, and a
connection that ends hands over what was read before failing the streams.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from shroud_sdk.channel.connection import BridgeConnection
from shroud_sdk.channel.events import DataReceived, ResponseReceived, StreamEnded
from shroud_sdk.errors import HandshakeError, IntegrityError
from shroud_sdk.session import _MAX_HELD, _BridgeSocket, _Link, _StreamInbox
from tests.channel.doubles import connected_pair, deliver


class _Received:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        self.ended = 0

    def receive(self, message: bytes, text: bool) -> None:
        self.messages.append((message, text))

    def end(self) -> None:
        self.ended += 1


class _Receiver:
    def __init__(self, log: _Received) -> None:
        self._log = log

    def receive(self, message: bytes, text: bool) -> None:
        self._log.receive(message, text)

    def ended(self) -> None:
        self._log.end()


async def test_messages_are_held_until_attached_then_passed_on_whole_and_in_order() -> None:
    socket = _BridgeSocket(ClientProtocol(parse_uri("ws://bridge.test/")))
    socket.process_event(Frame(Opcode.BINARY, b"hello"))
    socket.process_event(Frame(Opcode.BINARY, b"held", fin=False))
    socket.process_event(Frame(Opcode.CONT, b" too"))
    assert await socket.next_held() == (b"hello", False)
    log = _Received()
    socket.attach(_Receiver(log))
    socket.process_event(Frame(Opcode.BINARY, b"ab", fin=False))
    socket.process_event(Frame(Opcode.CONT, b"cd", fin=False))
    socket.process_event(Frame(Opcode.CONT, b"ef"))
    socket.process_event(Frame(Opcode.TEXT, b"text"))
    assert log.messages == [(b"held too", False), (b"abcdef", False), (b"text", True)]


async def test_a_peer_flooding_messages_before_the_handshake_ends_is_held_to_a_bound() -> None:
    # A peer (the bridge, or anyone on the path) sends message after message while the client
    # is still verifying the BridgeHello. Past _MAX_HELD the socket's reading stops, so what
    # waits in this process stays bounded; taking the held messages lets the rest in, in order.
    flood, size = 200, 16 * 1024  # 3.2 MB: loopback delivers all of it at once if let

    async def flooding(peer: ServerConnection) -> None:
        for i in range(flood):
            await peer.send(i.to_bytes(4, "big") + bytes(size))
        await peer.wait_closed()

    # No compression, as between the SDK and a bridge (DESIGN.md §3): a flood of zeros would
    # otherwise arrive in one read.
    async with serve(flooding, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}/",
            create_connection=_BridgeSocket,
            compression=None,
            max_size=None,
        ) as opened:
            socket = cast(_BridgeSocket, opened)
            for _ in range(500):  # until the bound is reached (at most 5 s)
                if len(socket._held) >= _MAX_HELD:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # time for the rest of the flood, were reading not stopped
            held = len(socket._held)
            # One read (at most 256 KiB: 16 such messages) may land after the reading stops.
            assert _MAX_HELD <= held <= 2 * _MAX_HELD
            for i in range(flood):
                message, text = await socket.next_held()
                assert (message[:4], text) == (i.to_bytes(4, "big"), False)


class _Transport:
    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class _Socket:
    """What ``_Link`` uses of its WebSocket when receiving."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.closed: list[tuple[int, str]] = []

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed.append((code, reason))


def _link() -> tuple[_Link, _Socket, BridgeConnection, int, _StreamInbox]:
    client, bridge = connected_pair()
    socket = _Socket()
    link = _Link(cast(Any, socket), client, None, ())
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    client.end_stream(sid)
    deliver(client, bridge)
    inbox = link.streams[sid] = _StreamInbox(limit=2)
    return link, socket, bridge, sid, inbox


def _send(link: _Link, bridge: BridgeConnection) -> None:
    for message in bridge.data_to_send():
        link.receive(message, False)


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_full_inbox_stops_reading_and_the_rest_follows_in_order() -> None:
    link, socket, bridge, sid, inbox = _link()
    bridge.send_response(sid, 200, [])
    for n in range(4):
        bridge.send_data(sid, b"chunk %d" % n)
    bridge.end_stream(sid)
    _send(link, bridge)
    assert not socket.transport.reading  # the application holds two unread: stop reading
    assert len(inbox) == 2
    first = await inbox.take(1)
    assert isinstance(first[0], ResponseReceived)
    assert first[1:] == [DataReceived(sid, b"chunk 0")]
    taken = [*await inbox.take(1)]
    while not any(isinstance(event, StreamEnded) for event in taken):
        taken += await inbox.take(1)
        assert len(inbox) <= 2
    assert taken[:3] == [DataReceived(sid, b"chunk %d" % n) for n in (1, 2, 3)]
    await _settled()
    assert socket.transport.reading  # everything handed over: reading again


async def test_a_forged_record_fails_the_streams_and_closes_with_the_error_code() -> None:
    link, socket, bridge, sid, inbox = _link()
    bridge.send_response(sid, 200, [])
    (record,) = bridge.data_to_send()
    forged = record[:-1] + bytes([record[-1] ^ 1])
    link.receive(forged, False)
    (failure,) = await inbox.take(1)
    assert isinstance(failure, IntegrityError)
    await _settled()
    assert socket.closed == [(IntegrityError.ws_close_code, "record-auth")]
    link.receive(record, False)  # nothing more is opened on a failed link
    assert not link.streams


async def test_what_was_read_before_the_connection_ended_comes_before_its_error() -> None:
    link, socket, bridge, sid, inbox = _link()
    bridge.send_response(sid, 200, [])
    for n in range(3):
        bridge.send_data(sid, b"chunk %d" % n)
    _send(link, bridge)
    assert not socket.transport.reading
    link.ended()
    events = await inbox.take(1)  # all of it at once: the connection is over
    *read, failure = events
    assert read[1:] == [DataReceived(sid, b"chunk %d" % n) for n in range(3)]
    assert isinstance(failure, IntegrityError)  # truncation: no authenticated CLOSE
    assert failure.check == "truncation"


async def test_a_text_message_fails_the_link() -> None:
    link, socket, _, _, inbox = _link()
    link.receive(b"{}", True)
    (failure,) = await inbox.take(1)
    assert isinstance(failure, HandshakeError)
    assert failure.check == "frame"
    await _settled()
    assert socket.closed == [(HandshakeError.ws_close_code, "frame")]
