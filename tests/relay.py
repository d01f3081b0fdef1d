"""A recording, fault-injecting TCP relay for WebSocket traffic on 127.0.0.1 (tests only).

``Relay`` listens on a free loopback port and forwards every connection to ``target``. It
records every byte in both directions (``recorded(direction)``), parses WebSocket frames
minimally after the HTTP upgrade (RFC 6455 §5.2: client frames masked, server frames not), and
can be told to flip a bit in, drop, reorder, truncate or rewrite one *binary* frame of a
direction, counted per connection from 1. Client frames are mutated after unmasking and
re-masked, so the damage reaches the peer as intended rather than as a framing error.

``ThreadedRelay`` runs a ``Relay`` on its own event loop thread, for synchronous tests. This is
deliberately not a WebSocket implementation: no fragmentation reassembly, no extensions.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")

# RFC 6455 §5.2 frame layout.
_OPCODE_BINARY = 0x2
_MASK_BIT = 0x80
_LEN_16 = 126
_LEN_64 = 127


class Direction(enum.Enum):
    C2B = "client->bridge"
    B2C = "bridge->client"


class FaultKind(enum.Enum):
    FLIP = "flip"  # flip one bit in the frame's payload
    DROP = "drop"  # never deliver the frame
    REORDER = "reorder"  # deliver it after the next binary frame
    TRUNCATE = "truncate"  # cut both TCP directions instead of delivering it
    REWRITE = "rewrite"  # deliver ``Fault.rewrite(payload)`` instead (any length)


@dataclass(frozen=True)
class Fault:
    """Damage binary frame number ``frame`` (1-based) of ``direction`` on connection ``conn``.

    With ``record_type`` set, ``frame`` is ignored and the first binary frame whose shroud/1
    record header (sent in clear as AEAD associated data) has that type is damaged instead.
    """

    kind: FaultKind
    direction: Direction
    frame: int = 0
    conn: int = 1
    record_type: int | None = None
    rewrite: Callable[[bytes], bytes] | None = None  # for REWRITE: the middlebox's edit

    def hits(self, direction: Direction, conn: int, count: int, payload: bytes) -> bool:
        if direction is not self.direction or conn != self.conn:
            return False
        if self.record_type is not None:
            return len(payload) > 1 and payload[1] == self.record_type
        return count == self.frame


@dataclass
class _Frame:
    raw: bytes
    opcode: int
    masked: bool
    payload: bytes  # unmasked


@dataclass
class ConnectionLog:
    """What crossed one relayed connection."""

    raw: dict[Direction, bytearray] = field(
        default_factory=lambda: {d: bytearray() for d in Direction}
    )
    binary_frames: dict[Direction, list[bytes]] = field(
        default_factory=lambda: {d: [] for d in Direction}
    )


def _parse_frame(buffer: bytearray) -> _Frame | None:
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    masked = bool(second & _MASK_BIT)
    length = second & 0x7F
    offset = 2
    if length == _LEN_16:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack_from(">H", buffer, 2)
        offset = 4
    elif length == _LEN_64:
        if len(buffer) < 10:
            return None
        (length,) = struct.unpack_from(">Q", buffer, 2)
        offset = 10
    key = b""
    if masked:
        if len(buffer) < offset + 4:
            return None
        key = bytes(buffer[offset : offset + 4])
        offset += 4
    if len(buffer) < offset + length:
        return None
    raw = bytes(buffer[: offset + length])
    del buffer[: offset + length]
    payload = raw[offset:]
    if masked:
        payload = _xor(payload, key)
    return _Frame(raw, first & 0x0F, masked, payload)


def _xor(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def _reframe(frame: _Frame, payload: bytes) -> bytes:
    """A binary frame carrying ``payload`` (any length), masked with the frame's key if any."""
    header = bytearray([frame.raw[0]])
    mask = _MASK_BIT if frame.masked else 0
    if len(payload) < _LEN_16:
        header.append(mask | len(payload))
    elif len(payload) <= 0xFFFF:
        header += bytes([mask | _LEN_16]) + struct.pack(">H", len(payload))
    else:
        header += bytes([mask | _LEN_64]) + struct.pack(">Q", len(payload))
    if not frame.masked:
        return bytes(header) + payload
    key = frame.raw[len(frame.raw) - len(frame.payload) - 4 : len(frame.raw) - len(frame.payload)]
    return bytes(header) + key + _xor(payload, key)


def _rebuild(frame: _Frame, payload: bytes) -> bytes:
    """The frame with a new payload of the same length (re-masked with the same key)."""
    header_len = len(frame.raw) - len(frame.payload)
    header = frame.raw[:header_len]
    if frame.masked:
        payload = _xor(payload, header[-4:])
    return header + payload


class Relay:
    """Forward 127.0.0.1:``port`` to ``target``; record and optionally damage frames."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.fault: Fault | None = None
        self.connections: list[ConnectionLog] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/") -> str:
        """The ``ws://`` URL clients should use to go through the relay."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def recorded(self, direction: Direction | None = None) -> bytes:
        """Every byte relayed (in one direction, or both), across all connections."""
        directions = [direction] if direction else list(Direction)
        return b"".join(bytes(c.raw[d]) for c in self.connections for d in directions)

    def payloads(self, direction: Direction | None = None) -> bytes:
        """Every binary frame's payload, unmasked (what a network observer can read).

        Client frames are masked on the wire, so searching ``recorded()`` alone for a secret
        would prove nothing: masking is not encryption. Search this.
        """
        directions = [direction] if direction else list(Direction)
        return b"".join(
            payload for c in self.connections for d in directions for payload in c.binary_frames[d]
        )

    def seen(self, needle: bytes) -> bool:
        """Whether ``needle`` appears in the raw bytes or in any unmasked frame payload."""
        return needle in self.recorded() or needle in self.payloads()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log = ConnectionLog()
        self.connections.append(log)
        number = len(self.connections)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        writers = (writer, up_writer)
        pumps = [
            asyncio.ensure_future(
                self._pump(reader, up_writer, Direction.C2B, log, number, writers)
            ),
            asyncio.ensure_future(
                self._pump(up_reader, writer, Direction.B2C, log, number, writers)
            ),
        ]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        await asyncio.gather(*pumps, return_exceptions=True)
        for w in writers:
            with contextlib.suppress(Exception):
                w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
        log: ConnectionLog,
        number: int,
        writers: tuple[asyncio.StreamWriter, ...],
    ) -> None:
        buffer = bytearray()
        upgraded = False
        held: bytes | None = None  # a frame held back by REORDER
        binary_count = 0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                log.raw[direction].extend(data)
                buffer.extend(data)
                if not upgraded:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    writer.write(bytes(buffer[: end + 4]))
                    del buffer[: end + 4]
                    upgraded = True
                while (frame := _parse_frame(buffer)) is not None:
                    out = frame.raw
                    if frame.opcode == _OPCODE_BINARY:
                        binary_count += 1
                        log.binary_frames[direction].append(frame.payload)
                        fault = self.fault
                        hit = fault is not None and fault.hits(
                            direction, number, binary_count, frame.payload
                        )
                        if hit and fault is not None:
                            self.fault = None  # one fault per arming
                            if fault.kind is FaultKind.FLIP:
                                damaged = bytearray(frame.payload)
                                damaged[len(damaged) // 2] ^= 0x01
                                out = _rebuild(frame, bytes(damaged))
                            elif fault.kind is FaultKind.REWRITE:
                                assert fault.rewrite is not None
                                out = _reframe(frame, fault.rewrite(frame.payload))
                            elif fault.kind is FaultKind.DROP:
                                continue
                            elif fault.kind is FaultKind.REORDER:
                                held = out
                                continue
                            else:  # TRUNCATE
                                await writer.drain()
                                for w in writers:
                                    with contextlib.suppress(Exception):
                                        w.close()
                                return
                        elif held is not None:
                            writer.write(out)
                            out, held = held, None
                    writer.write(out)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()


class ThreadedRelay:
    """A ``Relay`` on a private event loop thread; use as a context manager."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.relay = Relay(target_host, target_port)

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def __enter__(self) -> Relay:
        self._thread.start()
        self._run(self.relay.start())
        return self.relay

    def __exit__(self, *exc: object) -> None:
        self._run(self.relay.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
