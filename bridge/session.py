"""The channel shell: one shroud/1 session driving a ``BridgeConnection`` over one WebSocket.

The channel core is sans-I/O; this is its asyncio shell on the bridge. A session:

1. waits (at most ``handshake_timeout``) for the ClientHello, checks the client's disclosure set
   against the operator's rules (closing with 1008 and a reason listing the required and
   allowed fields when it does not fit them), then answers in the evidence mode the client
   asked for (docs/protocol.md section 3.6): in attested-key mode at once, on the event loop
   (a signature, no quote); in fresh mode only with one of the server's handshake slots (else
   1013: quote generation is the expensive step; a source holds at most half of them,
   ``bridge.admission``) and within the source's fresh-quote budget (else 1013, "fresh quote
   rate limit: retry after <n>s"), in a worker thread, because the quote provider blocks;
2. then reads records and hands the core's events to its ``bridge.dispatch.Dispatcher``, which
   decides about each request stream and proxies the admitted ones (``bridge.streaming``);
3. ends on the client's CLOSE, a channel error (the WebSocket is closed with the error's code),
   the idle timeout (no streams and no message for ``idle_timeout``), or the server's shutdown
   (no new streams; CLOSE once the in-flight ones finished).

Sending (:meth:`Session.flush`): the records the core sealed are taken and written to the
socket in one synchronous step, each its own WebSocket message (protocol.md section 3.1) but
all of them in one write; only then may it wait (for the socket buffer to drain, at most
``send_timeout``). The token path writes from the upstream's read callback
(:meth:`Session.send_now`: the same write, never a wait) and, when the socket is full, stops
reading the upstream until :meth:`Session.drain` (the same wait and deadline) returned.
Records carry implicit sequence numbers, and because nothing can run between taking them from
the core and writing them, concurrent streams never interleave their sends.

Deliberately not here: which connections get in (``bridge.admission``, ``bridge.listener``),
what happens to a request (``bridge.dispatch``), the upstream (``bridge.streaming``,
``bridge.upstream``). Nothing here logs or counts request or response content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.protocol import State

from bridge.admission import HandshakeSlots
from bridge.buffer_budget import BufferBudget
from bridge.config import BridgeConfig
from bridge.dispatch import DispatchContext, Dispatcher
from bridge.fresh_quotes import FreshQuoteLimiter, retry_after_seconds
from bridge.log_throttle import PEER_EVENTS, LogKind
from bridge.logs import log_unexpected
from bridge.metrics import BridgeMetrics, Direction, ErrorKind, HandshakeFailure
from bridge.overload import OverloadReport
from bridge.upstream import Upstream
from shroud_sdk.channel.connection import BridgeConfig as ChannelConfig
from shroud_sdk.channel.connection import BridgeConnection
from shroud_sdk.channel.constants import CLOSE_GOING_AWAY
from shroud_sdk.channel.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from shroud_sdk.channel.handshake import ClientHello
from shroud_sdk.errors import ChannelError, IntegrityError
from shroud_sdk.refusals import WS_TRY_AGAIN_LATER

_log = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455 section 7.4.1) for endings that are not channel errors (those
# carry their own 4000-range code, ChannelError.ws_close_code).
WS_NORMAL: Final = 1000
WS_GOING_AWAY: Final = 1001  # idle timeout, shutdown
WS_UNSUPPORTED_DATA: Final = 1003  # a text frame: shroud/1 is binary only
WS_POLICY_VIOLATION: Final = 1008  # handshake timeout, refused disclosure set

# RFC 6455 section 5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
MAX_CLOSE_REASON_BYTES: Final = 123
# The close reason of a refused disclosure set; the SDK parses the two lists out of it
# (docs/protocol.md section 9, docs/deployment.md).
DISCLOSURE_REFUSED_PREFIX: Final = "disclosure refused:"
# The close reason of a refused fresh quote (docs/protocol.md section 9); the SDK parses it.
FRESH_QUOTE_LIMIT_PREFIX: Final = "fresh quote rate limit"
# Core error checks that name a handshake failure reason (the metrics label).
_HANDSHAKE_REASONS: Final = {
    "audience": HandshakeFailure.WRONG_AUDIENCE,
    "suite": HandshakeFailure.UNSUPPORTED_SUITE,
    "version": HandshakeFailure.UNSUPPORTED_VERSION,
    "evidence-provider": HandshakeFailure.QUOTE_FAILED,
    "evidence-unavailable": HandshakeFailure.EVIDENCE_UNAVAILABLE,
    "disclose": HandshakeFailure.DISCLOSURE_REFUSED,
}


@dataclass
class SessionContext:
    """What every session of one server shares."""

    config: BridgeConfig
    channel: ChannelConfig
    upstream: Upstream
    metrics: BridgeMetrics
    handshake_slots: HandshakeSlots
    api_key_digests: tuple[bytes, ...] = field(repr=False)
    budget: BufferBudget
    overload: OverloadReport
    streams: BufferBudget
    fresh_quotes: FreshQuoteLimiter = field(default_factory=lambda: FreshQuoteLimiter(6, 2))
    dispatch: DispatchContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.dispatch = DispatchContext(
            self.config, self.upstream, self.metrics, self.api_key_digests, self.overload
        )


def close_reason(text: str) -> str:
    """``text`` cut to fit a WebSocket close frame (123 bytes of UTF-8), never mid-character."""
    return text.encode("utf-8")[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")


# Refusals whose text says what the client should change; it names only public values (the
# audience is measured into RTMR3, suites and versions are protocol constants): protocol.md §9.
_EXPLAINED_REFUSALS: Final = frozenset({"audience", "suite", "version"})


def handshake_refusal_reason(exc: ChannelError) -> str:
    """The close reason for a refused hello: ``check: text`` where explained, else the check."""
    if exc.check in _EXPLAINED_REFUSALS:
        return close_reason(f"{exc.check}: {exc.reason}")
    return close_reason(exc.check)


def disclosure_refusal_reason(required: tuple[str, ...], allowed: tuple[str, ...]) -> str:
    """``disclosure refused: required=a,b allowed=c,d``, names sorted, within 123 bytes.

    It tells a refused client which fields this bridge needs in clear and which it accepts.
    The required list comes first and is never cut (field names are short); allowed names
    that do not fit are left out whole, so no name is ever shown truncated.
    """
    reason = f"{DISCLOSURE_REFUSED_PREFIX} required={','.join(sorted(required))} allowed="
    shown: list[str] = []
    for name in sorted(allowed):
        if len((reason + ",".join([*shown, name])).encode("utf-8")) > MAX_CLOSE_REASON_BYTES:
            break
        shown.append(name)
    return close_reason(reason + ",".join(shown))


# RFC 6455 section 5.2: a server's frame header is at most 10 bytes (no mask); 14 with one.
_MAX_FRAME_HEADER: Final = 14
# Enum members read on every flush: module globals (an Enum class lookup runs Python code).
_WS_OPEN: Final = State.OPEN
_SENT: Final = Direction.BRIDGE_TO_CLIENT


def _takes_writes(ws: ServerConnection) -> bool:
    """Whether the connection is open, not closing and not paused for its buffer to drain."""
    return ws.protocol.state is _WS_OPEN and not ws.paused and not ws.transport.is_closing()


def _writes_without_waiting(ws: ServerConnection, size: int) -> bool:
    """Whether ``size`` more bytes can be framed and handed to the socket now, with no wait.

    websockets' ``send_context`` waits only when the connection is not open (for its closing)
    or when the write fills the transport's buffer past its high-water mark (for it to drain).
    When neither can happen, its only work is the write itself.
    """
    if not _takes_writes(ws):
        return False
    _, high = ws.transport.get_write_buffer_limits()
    return ws.transport.get_write_buffer_size() + size <= high


_FINAL_BINARY: Final = 0x82  # FIN set, opcode 0x2 (RFC 6455 section 5.2)
_LENGTH_16: Final = struct.Struct("!BBH")
_LENGTH_64: Final = struct.Struct("!BBQ")


def binary_frame_header(length: int) -> bytes:
    """The header of an unmasked, final binary frame (a server's) of ``length`` payload
    bytes, as websockets serializes it (RFC 6455 section 5.2); no extension applies."""
    if length < 126:
        return bytes((_FINAL_BINARY, length))
    if length < 65536:
        return _LENGTH_16.pack(_FINAL_BINARY, 126, length)
    return _LENGTH_64.pack(_FINAL_BINARY, 127, length)


def _forget_frames(error: BaseException) -> None:
    """Drop the tracebacks of an error the channel core keeps (and of what it chained).

    They hold the session's frames, which hold the session: kept by the core, they would
    make a reference cycle that lives until a full garbage collection, with everything the
    session still references.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


class Session:
    """One client connection. ``await run()``; the server calls ``begin_shutdown``/``abort``.

    ``source`` is the client's source as admission counts it (``bridge.admission``): the peer
    address, or the client address a trusted proxy reported. Per-source limits key on it.
    """

    def __init__(self, websocket: ServerConnection, context: SessionContext, source: str) -> None:
        self._ws = websocket
        self._ctx = context
        self._config = context.config
        self._metrics = context.metrics
        self.source = source
        self._conn = BridgeConnection(context.channel)
        self._buffers = context.budget.session(context.config.max_session_buffered_bytes, source)
        self._streams = context.streams.session(context.config.max_streams_per_session, source)
        self._dispatcher = Dispatcher(
            self, context.dispatch, self._buffers, source, self._idle, self._streams
        )
        self._established = False
        self._shutting_down = False
        self._background: set[asyncio.Task[None]] = set()
        self.finished = asyncio.Event()

    def __repr__(self) -> str:
        return f"Session(source={self.source!r}, streams={self._dispatcher.active})"

    @property
    def shutting_down(self) -> bool:
        """True once the server asked this session to wind down."""
        return self._shutting_down

    @property
    def conn(self) -> BridgeConnection:
        """The session's channel core (``bridge.streaming.Outbox``)."""
        return self._conn

    async def run(self) -> None:
        """Serve the connection until it ends; never raises for anything the peer does.

        Whatever ends it, the session's streams are cancelled, every buffered request byte is
        given back to the budget, and the WebSocket is closed (or, past the send timeout,
        aborted) before this returns.
        """
        try:
            if await self._handshake():
                self._metrics.sessions_active.inc()
                try:
                    await self._serve()
                finally:
                    self._metrics.sessions_active.dec()
        except WebSocketClosed:
            pass
        except Exception as exc:
            log_unexpected(_log, "session failed unexpectedly", exc, LogKind.SESSION_FAILED)
            self._metrics.error(ErrorKind.INTERNAL)
            await self._close_websocket(1011, "internal error")
        finally:
            await self._dispatcher.cancel_all()
            self._release_everything()
            await self._close_websocket(WS_GOING_AWAY, "bridge closing")
            self.finished.set()

    # -- handshake ------------------------------------------------------------------------------

    async def _handshake(self) -> bool:
        deadline = asyncio.get_running_loop().time() + self._config.handshake_timeout
        try:
            async with asyncio.timeout_at(deadline):
                message = await self._ws.recv()
        except TimeoutError:
            return await self._refuse(HandshakeFailure.TIMEOUT, WS_POLICY_VIOLATION, "timeout")
        except WebSocketClosed:
            self._metrics.handshake_failed(HandshakeFailure.CLIENT_CLOSED)
            return False
        if isinstance(message, str):
            return await self._refuse(HandshakeFailure.MALFORMED, WS_UNSUPPORTED_DATA, "binary")
        try:
            hello = ClientHello.decode(message)
        except ChannelError as exc:
            reason = _HANDSHAKE_REASONS.get(exc.check, HandshakeFailure.MALFORMED)
            return await self._refuse(reason, exc.ws_close_code, handshake_refusal_reason(exc))
        disclose = set(hello.disclose)
        if (
            not disclose <= set(self._config.disclose_allowed)
            or not set(self._config.disclose_required) <= disclose
        ):
            refusal = disclosure_refusal_reason(
                self._config.disclose_required, self._config.disclose_allowed
            )
            return await self._refuse(
                HandshakeFailure.DISCLOSURE_REFUSED, WS_POLICY_VIOLATION, refusal
            )
        if self._shutting_down:
            return await self._refuse(HandshakeFailure.OVERLOADED, WS_GOING_AWAY, "shutting down")
        if not hello.fresh:
            return await self._answer_with_attested_key(message)
        slots = self._ctx.handshake_slots
        overload = slots.take(self.source)
        if overload is not None:
            self._ctx.overload.refused(overload, self.source)
            return await self._refuse(
                HandshakeFailure.OVERLOADED, WS_TRY_AGAIN_LATER, overload.close_reason()
            )
        wait = self._ctx.fresh_quotes.try_acquire(self.source)
        if wait is not None:
            slots.give(self.source)
            return await self._refuse(
                HandshakeFailure.FRESH_QUOTE_LIMITED,
                WS_TRY_AGAIN_LATER,
                f"{FRESH_QUOTE_LIMIT_PREFIX}: retry after {retry_after_seconds(wait)}s",
            )
        self._metrics.handshakes_in_progress.inc()
        started = time.perf_counter()
        # The core calls the evidence provider (the quote) from here: blocking, so a thread.
        # A thread cannot be cancelled; the slot is held until it really ends, even when the
        # client is dropped at the deadline, so the cap bounds the quotes actually running.
        work = asyncio.ensure_future(asyncio.to_thread(self._conn.receive_data, message))
        work.add_done_callback(lambda _: self._handshake_done(slots))
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(work)
        except TimeoutError:
            return await self._refuse(HandshakeFailure.TIMEOUT, WS_POLICY_VIOLATION, "timeout")
        except ChannelError as exc:
            return await self._refuse_handshake(exc)
        return await self._handshake_answered(started)

    async def _answer_with_attested_key(self, message: bytes) -> bool:
        # No quote, nothing blocking: a signature and key agreement, on the loop.
        started = time.perf_counter()
        try:
            self._conn.receive_data(message)
        except ChannelError as exc:
            return await self._refuse_handshake(exc)
        return await self._handshake_answered(started)

    async def _refuse_handshake(self, exc: ChannelError) -> bool:
        PEER_EVENTS.log(_log, LogKind.HANDSHAKE_REFUSED, logging.INFO, "handshake refused: %s", exc)
        reason = _HANDSHAKE_REASONS.get(exc.check, HandshakeFailure.MALFORMED)
        return await self._refuse(reason, exc.ws_close_code, handshake_refusal_reason(exc))

    async def _handshake_answered(self, started: float) -> bool:
        self._metrics.handshake_ok(time.perf_counter() - started)
        self._conn.events_received()  # HandshakeComplete: nothing to act on
        self._established = True
        await self.flush()
        if self.shutting_down:  # shutdown began while the quote was being made
            await self._close_channel()
            return False
        return True

    def _handshake_done(self, slots: HandshakeSlots) -> None:
        self._metrics.handshakes_in_progress.dec()
        slots.give(self.source)

    async def _refuse(self, reason: HandshakeFailure, code: int, text: str) -> bool:
        self._metrics.handshake_failed(reason)
        await self._close_websocket(code, close_reason(text))
        return False

    # -- records --------------------------------------------------------------------------------

    async def _serve(self) -> None:
        idle = self._config.idle_timeout
        while True:
            dispatcher = self._dispatcher
            if dispatcher.expire_pending():
                await self.flush()
            now = time.monotonic()
            if dispatcher.active:
                timeout = idle
            else:
                timeout = dispatcher.last_activity + idle - now
                if timeout <= 0:
                    self._metrics.error(ErrorKind.IDLE_TIMEOUT)
                    await self._close_channel()
                    return
            body_deadline = dispatcher.next_deadline()
            if body_deadline is not None:
                timeout = min(timeout, body_deadline - now)
            try:
                async with asyncio.timeout(max(timeout, 0)):
                    message = await self._ws.recv()
            except TimeoutError:
                continue  # re-evaluated at the top: streams may still be running
            except WebSocketClosed:
                try:
                    self._conn.receive_eof()  # truncation unless CLOSE was exchanged
                except ChannelError as exc:
                    _forget_frames(exc)
                return
            dispatcher.last_activity = time.monotonic()
            if isinstance(message, str):
                self._metrics.error(ErrorKind.PROTOCOL)
                await self._close_websocket(WS_UNSUPPORTED_DATA, "shroud/1 is binary only")
                return
            self._metrics.record(Direction.CLIENT_TO_BRIDGE, len(message))
            try:
                self._conn.receive_data(message)
            except ChannelError as exc:
                PEER_EVENTS.log(
                    _log,
                    LogKind.CONNECTION_FAILED,
                    logging.INFO,
                    "connection failed: %s",
                    exc.check,
                )
                kind = (
                    ErrorKind.RECORD_AUTH
                    if isinstance(exc, IntegrityError)
                    else (ErrorKind.PROTOCOL)
                )
                self._metrics.error(kind)
                await self._close_websocket(exc.ws_close_code, exc.check[:120])
                _forget_frames(exc)
                return
            for event in self._conn.events_received():
                self._on_event(event)
            await self.flush()
            if self._conn.close_expected():
                await self._close_websocket(WS_NORMAL, "")
                return

    def _on_event(self, event: Event) -> None:
        dispatcher = self._dispatcher
        if isinstance(event, DataReceived):
            dispatcher.on_data(event)
        elif isinstance(event, RequestReceived):
            dispatcher.on_request(event)
        elif isinstance(event, StreamEnded):
            dispatcher.on_end(event.stream_id)
        elif isinstance(event, StreamReset):
            dispatcher.on_reset(event.stream_id)
        elif isinstance(event, ConnectionClosed):
            # The core already queued its CLOSE answer; unfinished work cannot be delivered.
            dispatcher.cancel_running()

    async def flush(self) -> None:
        """Send what the core sealed, in order; past ``send_timeout`` abort the connection.

        The records are taken from the core and written in one synchronous step (see the
        module docstring); each stays its own WebSocket message. A client that stops reading
        fills the socket buffers and the wait for them to drain would last; so would
        websockets' keepalive pings and close. The deadline turns that into an aborted
        connection (raised as WebSocketClosed), which ends the session and its streams.
        """
        messages = self._conn.data_to_send()
        if not messages:
            return
        size = sum(map(len, messages))
        if _writes_without_waiting(self._ws, size + _MAX_FRAME_HEADER * len(messages)):
            # The common case, a token or a few: framed and handed to the socket at once.
            # Nothing here can wait, so there is no deadline to arm and no context to enter
            # (what ``send_context`` adds is for a connection that is closing or full).
            self._write(messages, size)
        else:
            await self._send_waiting(messages)

    def send_now(self) -> bool:
        """Write what the core sealed now, if the WebSocket is open and not full; True when it
        can take more at once (``bridge.streaming.Outbox``: the token path's write).

        False leaves the records in the core, or (when this write filled the socket buffer
        past its high-water mark) says that the caller must ``drain`` before writing again: a
        write past the mark is at most what one upstream read brought.
        """
        ws = self._ws
        if not _takes_writes(ws):
            return False
        messages = self._conn.data_to_send()
        if messages:
            self._write(messages, sum(map(len, messages)))
        return not ws.paused

    async def drain(self) -> None:
        """Send what the core still holds and wait until the WebSocket takes more; past
        ``send_timeout`` abort the connection (``bridge.streaming.Outbox``)."""
        await self._send_waiting(self._conn.data_to_send())

    def _write(self, messages: list[bytes], size: int) -> None:
        ws = self._ws
        protocol = ws.protocol
        if protocol.extensions or protocol.debug or protocol.expect_continuation_frame:
            for message in messages:  # one WebSocket message per record (§3.1)
                protocol.send_binary(message)
            ws.send_data()
        else:
            # The same bytes, framed here: websockets builds and checks a Frame object per
            # message, which costs more than sealing the record. Anything websockets
            # queued comes first (nothing, normally: it writes what it queues at once).
            parts = protocol.data_to_send()
            for message in messages:  # one WebSocket message per record (§3.1)
                parts.append(binary_frame_header(len(message)))
                parts.append(message)
            ws.transport.write(b"".join(parts))
        # Counted once the records are on their way: the count is not on the token's path.
        self._metrics.record(_SENT, size, count=len(messages))

    async def _send_waiting(self, messages: list[bytes]) -> None:
        """websockets' own send path: written at once when open, then the wait for the
        socket to drain, within ``send_timeout``."""
        ws = self._ws
        try:
            async with asyncio.timeout(self._config.send_timeout):
                async with ws.send_context():
                    for message in messages:
                        ws.protocol.send_binary(message)
        except TimeoutError:
            self._send_timed_out()
            raise WebSocketClosed(None, None) from None
        if messages:
            self._metrics.record(_SENT, sum(map(len, messages)), count=len(messages))

    def abandon(self, error: ChannelError) -> None:
        """Nothing more can be sealed on this connection (``bridge.streaming.Outbox``): close
        the WebSocket with the error's code, which ends the session and its streams; the
        client sees the connection end (its streams fail) instead of waiting for answers."""
        self._spawn(self._close_websocket(error.ws_close_code, error.check[:120]))

    async def _close_websocket(self, code: int, reason: str) -> None:
        """Close the WebSocket; past ``send_timeout`` abort the TCP connection instead."""
        try:
            async with asyncio.timeout(self._config.send_timeout):
                await self._ws.close(code, reason)
        except TimeoutError:
            self._send_timed_out()
        except Exception:
            self._ws.transport.abort()

    def _send_timed_out(self) -> None:
        if not self._ws.transport.is_closing():
            self._metrics.error(ErrorKind.SEND_TIMEOUT)
            PEER_EVENTS.log(
                _log,
                LogKind.SEND_TIMEOUT,
                logging.INFO,
                "client %s did not read for %.0f s: connection aborted",
                self.source,
                self._config.send_timeout,
            )
        self._ws.transport.abort()

    # -- ending ---------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Take no new streams; send CLOSE once the in-flight ones are done.

        A connection still before or in its handshake is closed at once (1001).
        """
        self._shutting_down = True
        self._dispatcher.shutting_down = True
        if not self._established:
            self._spawn(self._close_websocket(WS_GOING_AWAY, "bridge closing"))
        elif not self._dispatcher.active:
            self._schedule_close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _idle(self) -> None:
        """The last stream ended while shutting down: time to close."""
        self._schedule_close()

    def _schedule_close(self) -> None:
        if self._established:
            self._spawn(self._close_channel())

    async def abort(self) -> None:
        """Shutdown deadline passed: cancel the remaining streams and close (within the send
        timeout, then the connection is aborted)."""
        self._shutting_down = True
        self._dispatcher.shutting_down = True
        await self._dispatcher.cancel_all()
        await self._close_channel()

    async def _close_channel(self) -> None:
        with contextlib.suppress(ChannelError):
            self._conn.close(CLOSE_GOING_AWAY, "bridge closing")
        with contextlib.suppress(WebSocketClosed):
            await self.flush()
        await self._close_websocket(WS_GOING_AWAY, "bridge closing")

    def _release_everything(self) -> None:
        """Free every request byte this session holds and give its budget share back."""
        self._dispatcher.detach()
        self._buffers.close()
        self._streams.close()
