"""The SDK's own reading of whole binary frames (``shroud_sdk.ws_frames``), and its limits.

Frames the fast path takes must be exactly the messages websockets would have produced, and
every frame it must not take (masked, RSV bits, text, fragments, control frames, non-minimal
lengths, over the size limit, cut by the end of a read) must reach websockets, which accepts
it or fails the connection as it always did. The connection tests use a real websockets
server on loopback that writes raw bytes after the opening handshake.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import CloseCode
from websockets.protocol import CLIENT, Protocol, State
from websockets.streams import StreamReader

from shroud_sdk.session import _BridgeSocket
from shroud_sdk.ws_frames import parser_between_frames, whole_binary_frames


def _frame(payload: bytes, *, first: int = 0x82, masked: bool = False, width: int = 0) -> bytes:
    """A server frame: ``first`` byte (FIN, RSV, opcode), length in ``width`` bytes (0: the
    minimal encoding), optionally masked with a zero key (the payload unchanged)."""
    n = len(payload)
    if width == 0:
        width = 0 if n < 126 else 2 if n < 65536 else 8
    mask_bit = 0x80 if masked else 0
    if width == 0:
        head = bytes((first, mask_bit | n))
    elif width == 2:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", n)
    return head + (bytes(4) if masked else b"") + payload


def test_parser_between_frames_only_where_a_new_frame_starts() -> None:
    protocol = Protocol(CLIENT, state=State.OPEN)
    assert parser_between_frames(protocol)
    protocol.receive_data(_frame(b"abc"))
    assert parser_between_frames(protocol)
    # The header of the next frame consumed, its payload not arrived: nothing is buffered,
    # yet the next byte is payload, not a frame start.
    protocol.receive_data(_frame(b"x" * 200)[:4])
    assert not protocol.reader.buffer
    assert not parser_between_frames(protocol)
    protocol.receive_data(b"x" * 200)
    assert parser_between_frames(protocol)
    protocol.receive_data(_frame(b"part", first=0x02))  # a message's first fragment
    assert not parser_between_frames(protocol)
    protocol.receive_data(_frame(b"end", first=0x80))
    assert parser_between_frames(protocol)
    protocol.receive_data(_frame(b"\x03\xe8", first=0x88))  # CLOSE: the parser discards
    assert not parser_between_frames(protocol)


class _OtherReader(StreamReader):
    def at_eof(self) -> Generator[None, None, bool]:
        # websockets' behaviour in another function: a parser shaped unlike 17.x.
        while not self.buffer and not self.eof:
            yield
        return not self.buffer


def _reshaped(protocol: Protocol) -> Protocol:
    protocol.reader = _OtherReader()
    protocol.parser = protocol.parse()
    next(protocol.parser)
    return protocol


def _renamed(protocol: Protocol) -> Protocol:
    del protocol.current_size  # websockets 15 and earlier call it ``cur_size``
    return protocol


def _not_a_generator(protocol: Protocol) -> Protocol:
    setattr(protocol, "parser", iter(()))  # noqa: B010 - not the declared type, on purpose
    return protocol


def _with_extension(protocol: Protocol) -> Protocol:
    protocol.extensions = [PerMessageDeflate(False, False, 15, 15)]
    return protocol


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: _reshaped(Protocol(CLIENT, state=State.OPEN)), "at_eof is not websockets'"),
        (lambda: _renamed(Protocol(CLIENT, state=State.OPEN)), "no current_size attribute"),
        (lambda: _not_a_generator(Protocol(CLIENT, state=State.OPEN)), "parser not a generator"),
        (lambda: Protocol(CLIENT, state=State.OPEN, max_size=(1000, 100)), "a fragment limit"),
        (lambda: _with_extension(Protocol(CLIENT, state=State.OPEN)), "an extension"),
    ],
)
def test_parser_between_frames_is_false_for_a_parser_it_cannot_vouch_for(
    make: Callable[[], Protocol], why: str
) -> None:
    assert not parser_between_frames(make()), why


@pytest.mark.parametrize(
    ("stopper", "why"),
    [
        (_frame(b"m", masked=True), "a server's frame must not be masked"),
        (_frame(b"r", first=0xC2), "RSV1 without an extension"),
        (_frame(b"t", first=0x81), "text"),
        (_frame(b"f", first=0x02), "a first fragment"),
        (_frame(b"p", first=0x89), "a ping"),
        (_frame(b"s" * 100, width=2), "a 16-bit length under 126"),
        (_frame(b"s" * 150, width=8), "a 64-bit length under 65536"),
        (_frame(b"b" * 201), "over the limit of 200"),
        (_frame(b"c" * 50)[:-1], "cut by the end of the read"),
        (_frame(b"c" * 150)[:3], "its length cut by the end of the read"),
        (b"\x82", "its header cut by the end of the read"),
        (_frame(b"d" * 70_000)[:6], "its 64-bit length cut by the end of the read"),
        (b"\x82\x7f" + (1 << 63 | 5).to_bytes(8, "big") + b"x" * 5, "a 64-bit length's top bit"),
    ],
)
def test_whole_binary_frames_stop_at_anything_but_a_simple_whole_binary_frame(
    stopper: bytes, why: str
) -> None:
    before = _frame(b"one") + _frame(b"two" * 60)
    # A frame cut by the end of the read is the last thing in it. Otherwise enough follows
    # that a masked length byte (128 + n) misread as a length would find its whole "payload".
    after = b"" if "end of the read" in why else _frame(b"after" * 40)
    messages, taken = whole_binary_frames(before + stopper + after, 200)
    assert messages == [b"one", b"two" * 60], why
    assert taken == len(before), why


def test_whole_binary_frames_reads_every_length_encoding() -> None:
    payloads = [b"", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536]
    data = b"".join(_frame(p) for p in payloads)
    assert whole_binary_frames(data, None) == (payloads, len(data))


class _Log:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        self.ended = asyncio.Event()

    def receive(self, message: bytes, text: bool) -> None:
        self.messages.append((message, text))

    def ended_(self) -> None:
        self.ended.set()


class _Receiver:
    def __init__(self, log: _Log) -> None:
        self._log = log

    def receive(self, message: bytes, text: bool) -> None:
        self._log.receive(message, text)

    def ended(self) -> None:
        self._log.ended_()


@asynccontextmanager
async def _raw_server(
    writes: list[bytes], max_size: int = 1 << 20
) -> AsyncIterator[tuple[_BridgeSocket, _Log, list[bytes]]]:
    """A client ``_BridgeSocket`` with a receiver attached; once it says so, the server
    writes each of ``writes`` raw to its socket (one write each). Yields the socket, what it
    received, and the pongs the server got."""
    pongs: list[bytes] = []

    async def handler(peer: ServerConnection) -> None:
        await peer.recv()  # the client attached its receiver
        original: Callable[..., None] = peer.protocol.recv_frame

        def recv_frame(frame: object) -> None:
            if getattr(frame, "opcode", None) is not None and frame.opcode.name == "PONG":  # type: ignore[attr-defined]
                pongs.append(bytes(frame.data))  # type: ignore[attr-defined]
            original(frame)

        peer.protocol.recv_frame = recv_frame  # type: ignore[method-assign]
        for data in writes:
            peer.transport.write(data)
            await asyncio.sleep(0.01)  # separate reads on the client's side
        await peer.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}/",
            create_connection=_BridgeSocket,
            compression=None,
            max_size=max_size,
        ) as websocket:
            socket = websocket
            assert isinstance(socket, _BridgeSocket)
            log = _Log()
            socket.attach(_Receiver(log))
            await socket.send(b"ready")
            yield socket, log, pongs


async def _settle(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_records_control_frames_and_split_frames_arrive_in_order() -> None:
    big = _frame(b"B" * 70_000)
    writes = [
        _frame(b"r1") + _frame(b"r2" * 100) + _frame(b"hi", first=0x89) + _frame(b"r3"),
        _frame(b"f1", first=0x02) + _frame(b"f2", first=0x00),  # a fragmented message ...
        _frame(b"f3", first=0x80) + big[:5],  # ... its end, then a frame cut after its header
        big[5:40_000],
        big[40_000:] + _frame(b"r4"),
    ]
    async with _raw_server(writes) as (socket, log, pongs):
        await _settle(lambda: len(log.messages) == 6)
        assert log.messages == [
            (b"r1", False),
            (b"r2" * 100, False),
            (b"r3", False),
            (b"f1f2f3", False),
            (b"B" * 70_000, False),
            (b"r4", False),
        ]
        await _settle(lambda: pongs == [b"hi"])  # websockets still answers the ping
        assert socket.protocol.state is State.OPEN


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (_frame(b"secret", masked=True), CloseCode.PROTOCOL_ERROR),
        (_frame(b"secret", first=0xC2), CloseCode.PROTOCOL_ERROR),
        (_frame(b"s" * 2000), CloseCode.MESSAGE_TOO_BIG),
        (_frame(b"f", first=0x02) + _frame(b"secret"), CloseCode.PROTOCOL_ERROR),
    ],
    ids=["masked", "rsv1", "too-big", "binary-inside-a-fragmented-message"],
)
async def test_a_frame_websockets_refuses_fails_the_connection_and_is_not_delivered(
    bad: bytes, code: CloseCode
) -> None:
    async with _raw_server([_frame(b"ok") + bad + _frame(b"late")], max_size=1000) as (
        socket,
        log,
        _,
    ):
        await asyncio.wait_for(log.ended.wait(), 5)
        assert log.messages == [(b"ok", False)]
        assert socket.protocol.close_sent is not None
        assert socket.protocol.close_sent.code == code
