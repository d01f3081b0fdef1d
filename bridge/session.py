"""One shroud/1 session: drives a ``BridgeConnection`` over one WebSocket connection.

The channel core is sans-I/O; this is its asyncio shell on the bridge. A session:

1. waits (at most ``handshake_timeout``) for the ClientHello, checks the client's disclosure set
   against the operator's rules (closing with 1008 and a reason listing the required and
   allowed fields when it does not fit them), then answers in the evidence mode the client
   asked for (docs/protocol.md section 3.6): in attested-key mode at once, on the event loop
   (a signature, no quote); in fresh mode only with one of the server's handshake slots (else
   1013: quote generation is the expensive step; a source holds at most half of them,
   ``bridge.admission``) and within the source's fresh-quote budget (else 1013, "fresh quote
   rate limit: retry after <n>s"), in a worker thread, because the quote provider blocks;
2. then reads records, turning each request stream into a task that proxies it to the upstream
   (``bridge.upstream``) and streams the response back, many streams at once;
3. ends on the client's CLOSE, a channel error (the WebSocket is closed with the error's code),
   the idle timeout (no streams and no message for ``idle_timeout``), or the server's shutdown
   (no new streams; CLOSE once the in-flight ones finished).

Per request, before anything reaches the upstream: path allowlist (404), API key from the
tunnelled ``Authorization`` header compared in constant time (401), streams-per-session cap
(429 with Retry-After), body size (413), and the disclosed metadata against the decrypted body
(400). The disclosed ``max_tokens``/``max_completion_tokens`` bound the upstream request, and
usage read from the upstream answer is signed into the stream's END.

Every record goes out through one lock, in the order the core sealed it: records carry implicit
sequence numbers, so two tasks must never interleave their sends. Nothing here logs or counts
request or response content.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed as WebSocketClosed

from bridge import errors
from bridge.admission import HandshakeSlots
from bridge.buffer_budget import BufferBudget
from bridge.config import BridgeConfig
from bridge.fresh_quotes import FreshQuoteLimiter, retry_after_seconds
from bridge.logs import log_unexpected
from bridge.metrics import BridgeMetrics, Direction, ErrorKind, HandshakeFailure, StreamOutcome
from bridge.overload import OverloadReport
from bridge.upstream import Upstream, UpstreamError, UpstreamRequest, UpstreamTimeoutError
from shroud_sdk.channel.connection import BridgeConfig as ChannelConfig
from shroud_sdk.channel.connection import BridgeConnection
from shroud_sdk.channel.constants import CLOSE_GOING_AWAY, RESET_INTERNAL_ERROR
from shroud_sdk.channel.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from shroud_sdk.channel.handshake import ClientHello
from shroud_sdk.channel.usage import Usage
from shroud_sdk.errors import ChannelError, IntegrityError
from shroud_sdk.json_body import JsonBodyError, parse_json_body
from shroud_sdk.refusals import WS_TRY_AGAIN_LATER, Overload, OverloadLimit

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
RETRY_AFTER_SECONDS: Final = 1
# Paths whose streamed responses follow OpenAI's chat/completions SSE shape, where the bridge
# may ask the upstream for a final usage chunk (stream_options.include_usage).
_USAGE_INJECTION_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/completions"})
_TOKEN_LIMIT_FIELDS: Final = ("max_tokens", "max_completion_tokens")
# A non-SSE response is kept (up to this size) to read its "usage" at the end.
_MAX_USAGE_BODY: Final = 8 * 1024 * 1024
# An SSE event larger than this is forwarded unparsed (its usage, if any, is not read).
_MAX_SSE_EVENT: Final = 1024 * 1024
_SSE_SEPARATOR: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# An SSE event is parsed only if it may carry a usage object: a "usage" key not followed by
# null (upstreams that were asked for usage send "usage": null in every chunk but the last).
# A key spelled with JSON escapes is not recognised, so such an upstream's usage is not read.
_MAY_CARRY_USAGE: Final = re.compile(rb'"usage"(?!\s*:\s*null\b)')

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
    fresh_quotes: FreshQuoteLimiter = field(default_factory=lambda: FreshQuoteLimiter(6, 2))


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


# -- request checks (pure) ------------------------------------------------------------------


def api_key_digests(keys: Iterable[str]) -> tuple[bytes, ...]:
    """SHA-256 of each configured API key: what :func:`authorized` compares against."""
    return tuple(hashlib.sha256(key.encode("utf-8")).digest() for key in keys)


def authorized(headers: tuple[tuple[str, str], ...], key_digests: tuple[bytes, ...]) -> bool:
    """True if no key is configured, or ``Authorization: Bearer <key>`` names one of them.

    The presented key is hashed and its SHA-256 compared with every configured key's (constant
    time each, equal lengths), so timing says neither which key matched, nor how many, nor how
    long any key is.
    """
    if not key_digests:
        return True
    presented = next((value for name, value in headers if name == "authorization"), "")
    scheme, _, token = presented.partition(" ")
    candidate = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
    match = False
    for digest in key_digests:
        match |= hmac.compare_digest(candidate, digest)
    return match and scheme.lower() == "bearer"


@dataclass(frozen=True)
class PreparedBody:
    """The body to forward, and whether the bridge asked the upstream for a usage chunk."""

    body: bytes
    usage_injected: bool


def _same_value(disclosed: object, actual: object) -> bool:
    # JSON true == 1 in Python; a disclosure only matches a value of the same JSON type.
    if disclosed is None:
        return actual is None
    return type(disclosed) is type(actual) and disclosed == actual


def prepare_body(
    path: str, body: bytes, disclosed: Mapping[str, object]
) -> PreparedBody | errors.ErrorResponse:
    """Check disclosed metadata against ``body``; bound tokens; ask for usage on streams.

    Each disclosed field must equal the body's top-level field of the same name (None when the
    body lacks it). A JSON body with a repeated key or nested too deeply is refused (400), and
    so is a non-empty body that is not a JSON object when any field is disclosed. A disclosed
    ``max_tokens`` or ``max_completion_tokens`` then also caps the other field, so an upstream
    that prefers one of them (vLLM prefers ``max_completion_tokens``) cannot generate more than
    was disclosed.
    """
    parsed: Any = None
    if body:
        try:
            parsed = parse_json_body(body)
        except JsonBodyError as exc:
            return errors.invalid_body(exc.reason)
    document = parsed if isinstance(parsed, dict) else None
    for name, value in disclosed.items():
        actual = document.get(name) if document is not None else None
        if not _same_value(value, actual):
            return errors.disclosure_mismatch(name)
    if document is None:
        if body and disclosed:
            # A disclosed field declared absent cannot be checked in a body that is not a
            # JSON object; the upstream might still read one there.
            return errors.invalid_body("disclosed fields need a JSON object body")
        return PreparedBody(body, usage_injected=False)
    modified = False
    limits = [v for k, v in disclosed.items() if k in _TOKEN_LIMIT_FIELDS and isinstance(v, int)]
    if limits:
        cap = min(limits)
        for name in _TOKEN_LIMIT_FIELDS:
            value = document.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                document[name] = cap
                modified = True
    injected = False
    path_only = path.partition("?")[0]
    if path_only in _USAGE_INJECTION_PATHS and document.get("stream") is True:
        options = document.get("stream_options")
        if options is None or (isinstance(options, dict) and "include_usage" not in options):
            document["stream_options"] = {**(options or {}), "include_usage": True}
            injected = modified = True
    if not modified:
        return PreparedBody(body, usage_injected=False)
    return PreparedBody(json.dumps(document, separators=(",", ":")).encode(), injected)


def usage_from(value: object) -> Usage | None:
    """``Usage`` from an OpenAI ``usage`` object (completion tokens 0 when absent, as for
    embeddings), or None when it is missing or malformed."""
    if not isinstance(value, dict):
        return None
    counts = []
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        count = value.get(name, 0 if name == "completion_tokens" else None)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return None
        counts.append(count)
    try:
        return Usage(*counts)
    except ValueError:
        return None


class UsageMeter:
    """Reads ``usage`` from a response on its way to the client, changing nothing else.

    JSON bodies are passed through chunk by chunk and parsed at the end. SSE bodies are passed
    through event by event (each event's bytes unchanged), and the last event with a ``usage``
    object wins. When the bridge itself injected ``stream_options.include_usage``, the
    usage-only chunk it caused (``"choices": []`` with ``usage``) is dropped so the client sees
    the stream it asked for.
    """

    def __init__(self, *, sse: bool, strip_usage_chunk: bool) -> None:
        self._sse = sse
        self._strip = strip_usage_chunk
        self._buffer = bytearray()
        self._overflow = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take upstream bytes; return the bytes to forward now."""
        if not self._sse:
            if not self._overflow:
                self._buffer += chunk
                if len(self._buffer) > _MAX_USAGE_BODY:
                    self._overflow = True
                    self._buffer.clear()
            return chunk
        # Hot path (one call per streamed token): no copy of ``chunk`` when it holds whole
        # events and none is dropped, and no JSON parsing of events that carry no usage.
        if self._buffer:
            self._buffer += chunk
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = chunk
        pieces: list[bytes] = []
        kept_from = cut = 0
        for match in _SSE_SEPARATOR.finditer(data):
            end = match.end()
            if _MAY_CARRY_USAGE.search(data, cut, end) and not self._event(data[cut:end]):
                pieces.append(data[kept_from:cut])  # the event is dropped
                kept_from = end
            cut = end
        pieces.append(data[kept_from:cut])
        if cut < len(data):
            self._buffer += data[cut:]
            if len(self._buffer) > _MAX_SSE_EVENT:
                pieces.append(bytes(self._buffer))
                self._buffer.clear()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def finish(self) -> bytes:
        """The upstream body ended; return what is left to forward."""
        if not self._sse:
            if not self._overflow and self._buffer:
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    document = json.loads(self._buffer)
                    if isinstance(document, dict):
                        self.usage = usage_from(document.get("usage"))
            self._buffer.clear()
            return b""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return self._event(rest) if rest.strip() else rest

    def _event(self, event: bytes) -> bytes:
        data = b"\n".join(
            line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
        )
        if not data.startswith(b"{"):
            return event
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return event
        if not isinstance(document, dict):
            return event
        usage = usage_from(document.get("usage"))
        if usage is not None:
            self.usage = usage
            if self._strip and document.get("choices") == []:
                return b""
        return event


# -- the session ------------------------------------------------------------------------------


@dataclass
class _PendingRequest:
    """A request whose body is still arriving; its bytes are charged to the session's share."""

    request: RequestReceived
    deadline: float  # monotonic time by which its END must arrive
    charged: int  # bytes charged to the buffer budget (headers and body so far)
    size: int = 0  # body bytes so far
    chunks: list[bytes] = field(default_factory=list, repr=False)


def _head_size(request: RequestReceived) -> int:
    """What a request's HEADERS record makes the bridge hold (charged to the budget)."""
    return (
        len(request.method)
        + len(request.path)
        + sum(len(name) + len(value) for name, value in request.headers)
    )


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
        self._send_lock = asyncio.Lock()
        self._established = False
        self._shutting_down = False
        self._pending: dict[int, _PendingRequest] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._last_activity = time.monotonic()
        self.finished = asyncio.Event()

    def __repr__(self) -> str:
        return f"Session(source={self.source!r}, streams={len(self._tasks)})"

    @property
    def shutting_down(self) -> bool:
        """True once the server asked this session to wind down."""
        return self._shutting_down

    @property
    def active_streams(self) -> int:
        """Requests being proxied right now."""
        return len(self._tasks)

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
            log_unexpected(_log, "session failed unexpectedly", exc)
            self._metrics.error(ErrorKind.INTERNAL)
            await self._close_websocket(1011, "internal error")
        finally:
            await self._cancel_streams()
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
        _log.info("handshake refused: %s", exc)
        reason = _HANDSHAKE_REASONS.get(exc.check, HandshakeFailure.MALFORMED)
        return await self._refuse(reason, exc.ws_close_code, handshake_refusal_reason(exc))

    async def _handshake_answered(self, started: float) -> bool:
        self._metrics.handshake_ok(time.perf_counter() - started)
        self._conn.events_received()  # HandshakeComplete: nothing to act on
        self._established = True
        await self._flush()
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
            if self._pending and self._expire_pending():
                await self._flush()
            now = time.monotonic()
            if self._tasks:
                timeout = idle
            else:
                timeout = self._last_activity + idle - now
                if timeout <= 0:
                    self._metrics.error(ErrorKind.IDLE_TIMEOUT)
                    await self._close_channel()
                    return
            if self._pending:
                timeout = min(timeout, min(p.deadline for p in self._pending.values()) - now)
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
            self._last_activity = time.monotonic()
            if isinstance(message, str):
                self._metrics.error(ErrorKind.PROTOCOL)
                await self._close_websocket(WS_UNSUPPORTED_DATA, "shroud/1 is binary only")
                return
            self._metrics.record(Direction.CLIENT_TO_BRIDGE, len(message))
            try:
                self._conn.receive_data(message)
            except ChannelError as exc:
                _log.info("connection failed: %s", exc.check)
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
            await self._flush()
            if self._conn.close_expected():
                await self._close_websocket(WS_NORMAL, "")
                return

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, DataReceived):
            self._on_data(event)
        elif isinstance(event, StreamEnded):
            pending = self._pending.pop(event.stream_id, None)
            if pending is not None:
                body = b"".join(pending.chunks)
                pending.chunks.clear()
                task = asyncio.create_task(self._proxy(pending.request, body, pending.charged))
                self._tasks[event.stream_id] = task
        elif isinstance(event, StreamReset):
            pending = self._pending.pop(event.stream_id, None)
            if pending is not None:
                self._buffers.release(pending.charged)
                self._metrics.stream_finished(pending.request.path, StreamOutcome.CLIENT_RESET)
            running = self._tasks.get(event.stream_id)
            if running is not None:
                running.cancel()  # closes the upstream response: the upstream stops generating
        elif isinstance(event, ConnectionClosed):
            # The core already queued its CLOSE answer; unfinished work cannot be delivered.
            for task in self._tasks.values():
                task.cancel()

    def _on_request(self, request: RequestReceived) -> None:
        answer: errors.ErrorResponse | None = None
        limit: OverloadLimit | None = None
        if self._config.log_request_paths:
            _log.info("stream %d: %s %s", request.stream_id, request.method, request.path)
        if self._shutting_down:
            limit = OverloadLimit.SHUTTING_DOWN
        elif self._config.match_allowed_path(request.path) is None:
            self._metrics.error(ErrorKind.PATH_NOT_ALLOWED)
            answer = errors.path_not_allowed()
        elif not authorized(request.headers, self._ctx.api_key_digests):
            answer = errors.unauthorized()
        elif len(self._tasks) + len(self._pending) >= self._config.max_streams_per_session:
            self._metrics.error(ErrorKind.TOO_MANY_STREAMS)
            limit = OverloadLimit.STREAMS_PER_SESSION
        elif len(self._pending) >= self._config.max_unfinished_streams:
            limit = OverloadLimit.UNFINISHED_STREAMS
        else:
            size = _head_size(request)
            limit = self._buffers.charge(size)
            if limit is None:
                deadline = time.monotonic() + self._config.request_body_timeout
                self._pending[request.stream_id] = _PendingRequest(request, deadline, size)
                return
        if limit is not None:
            answer = self._overloaded(limit)
        assert answer is not None
        self._answer(request, answer)

    def _on_data(self, event: DataReceived) -> None:
        pending = self._pending.get(event.stream_id)
        if pending is None:
            return  # answered early (404, 413, 429...): the rest of the body is dropped
        size = len(event.data)
        answer: errors.ErrorResponse | None = None
        if pending.size + size > self._config.max_request_body:
            self._metrics.error(ErrorKind.BODY_TOO_LARGE)
            answer = errors.body_too_large(self._config.max_request_body)
        elif (limit := self._buffers.charge(size)) is not None:
            answer = self._overloaded(limit)
        if answer is not None:
            del self._pending[event.stream_id]
            self._buffers.release(pending.charged)
            self._answer(pending.request, answer)
            return
        pending.chunks.append(event.data)
        pending.size += size
        pending.charged += size

    def _overloaded(self, limit: OverloadLimit) -> errors.ErrorResponse:
        overload = Overload(limit, RETRY_AFTER_SECONDS)
        self._ctx.overload.refused(overload, self.source)
        return errors.overloaded(overload)

    def _expire_pending(self) -> bool:
        """Answer 408 to requests whose body did not end in time; True if any was."""
        now = time.monotonic()
        late = [sid for sid, p in self._pending.items() if p.deadline <= now]
        for sid in late:
            pending = self._pending.pop(sid)
            self._buffers.release(pending.charged)
            self._metrics.error(ErrorKind.REQUEST_BODY_TIMEOUT)
            self._answer(pending.request, errors.request_timeout(self._config.request_body_timeout))
        return bool(late)

    def _answer(self, request: RequestReceived, answer: errors.ErrorResponse) -> None:
        """Send a bridge-made response on the stream (queued; the caller flushes).

        When sent before the client's END, the stream's remaining body is dropped on arrival.
        """
        sid = request.stream_id
        try:
            self._conn.send_response(sid, answer.status, answer.headers)
            self._conn.send_data(sid, answer.body)
            self._conn.end_stream(sid)
        except ChannelError as exc:
            _log.info("could not answer stream %d: %s", sid, exc.check)
            return
        self._metrics.response_sent(request.path, answer.status)
        self._metrics.stream_finished(request.path, StreamOutcome.REFUSED)

    async def _flush(self) -> None:
        """Send what the core sealed, in order; past ``send_timeout`` abort the connection.

        A client that stops reading fills the socket buffers and ``send`` waits; so would
        websockets' keepalive pings and close. The deadline turns that into an aborted
        connection (raised as WebSocketClosed), which ends the session and its streams.
        """
        async with self._send_lock:
            messages = self._conn.data_to_send()
            if not messages:
                return
            self._metrics.record(
                Direction.BRIDGE_TO_CLIENT, sum(map(len, messages)), count=len(messages)
            )
            try:
                async with asyncio.timeout(self._config.send_timeout):
                    for message in messages:  # one WebSocket message per record (protocol.md §3.1)
                        await self._ws.send(message)
            except TimeoutError:
                self._send_timed_out()
                raise WebSocketClosed(None, None) from None

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
            _log.info(
                "client %s did not read for %.0f s: connection aborted",
                self.source,
                self._config.send_timeout,
            )
        self._ws.transport.abort()

    # -- proxying one request --------------------------------------------------------------------

    async def _proxy(self, request: RequestReceived, body: bytes, charged: int) -> None:
        sid = request.stream_id
        outcome = StreamOutcome.COMPLETED
        self._metrics.streams_active.inc()
        try:
            prepared = prepare_body(request.path, body, request.disclosed)
            del body
            if isinstance(prepared, errors.ErrorResponse):
                self._metrics.error(
                    ErrorKind.DISCLOSURE_MISMATCH
                    if prepared.code == "disclosure_mismatch"
                    else ErrorKind.INVALID_BODY
                )
                self._answer(request, prepared)
                outcome = StreamOutcome.REFUSED
                await self._flush()
                return
            outcome = await self._forward(request, prepared)
        except asyncio.CancelledError:
            outcome = StreamOutcome.CLIENT_RESET
            raise
        except (ChannelError, WebSocketClosed):
            outcome = StreamOutcome.CLIENT_RESET  # the connection ended under us
        except Exception as exc:
            # Never a stream left hanging: whatever failed, the client gets an answer or RESET.
            log_unexpected(_log, f"stream {sid} failed unexpectedly", exc)
            self._metrics.error(ErrorKind.INTERNAL)
            outcome = StreamOutcome.UPSTREAM_ERROR
            await self._reset_after_failure(sid)
        finally:
            self._tasks.pop(sid, None)
            self._buffers.release(charged)
            self._metrics.streams_active.dec()
            if outcome is not StreamOutcome.REFUSED:
                self._metrics.stream_finished(request.path, outcome)
            self._last_activity = time.monotonic()
            if self._shutting_down and not self._tasks:
                asyncio.get_running_loop().call_soon(self._schedule_close)

    async def _reset_after_failure(self, sid: int) -> None:
        """After an unexpected failure the stream is RESET, whatever it had sent: the client
        learns at once that this response is over, and the stream's slot is freed."""
        with contextlib.suppress(ChannelError):
            self._conn.reset_stream(sid, RESET_INTERNAL_ERROR, "bridge internal error")
        with contextlib.suppress(WebSocketClosed):
            await self._flush()

    async def _forward(self, request: RequestReceived, prepared: PreparedBody) -> StreamOutcome:
        sid = request.stream_id
        upstream_request = UpstreamRequest(
            request.method, request.path, request.headers, prepared.body
        )
        started = time.perf_counter()
        headers_sent = False
        try:
            async with self._ctx.upstream.send(upstream_request) as response:
                self._metrics.upstream_responded(
                    request.path, time.perf_counter() - started, response.status
                )
                self._conn.send_response(sid, response.status, response.headers)
                headers_sent = True
                await self._flush()
                content_type = dict(response.headers).get("content-type", "")
                meter = UsageMeter(
                    sse=content_type.startswith("text/event-stream"),
                    strip_usage_chunk=prepared.usage_injected,
                )
                async for chunk in response.chunks():
                    out = meter.feed(chunk)
                    if out:
                        self._conn.send_data(sid, out)
                        await self._flush()
                tail = meter.finish()
                if tail:
                    self._conn.send_data(sid, tail)
                self._conn.end_stream(sid, meter.usage)
                await self._flush()
                return StreamOutcome.COMPLETED
        except UpstreamError as exc:
            timeout = isinstance(exc, UpstreamTimeoutError)
            self._metrics.error(
                ErrorKind.UPSTREAM_TIMEOUT if timeout else ErrorKind.UPSTREAM_CONNECT
            )
            _log.warning("upstream request failed: %s", exc)
            if headers_sent:
                # Never a silent truncation: the client sees RESET instead of END.
                self._conn.reset_stream(sid, RESET_INTERNAL_ERROR, "upstream failed mid-response")
            else:
                answer = errors.upstream_timeout() if timeout else errors.upstream_unavailable()
                self._conn.send_response(sid, answer.status, answer.headers)
                self._conn.send_data(sid, answer.body)
                self._conn.end_stream(sid)
                self._metrics.response_sent(request.path, answer.status)
            await self._flush()
            return StreamOutcome.UPSTREAM_ERROR

    # -- ending ---------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Take no new streams; send CLOSE once the in-flight ones are done.

        A connection still before or in its handshake is closed at once (1001).
        """
        self._shutting_down = True
        if not self._established:
            self._spawn(self._close_websocket(WS_GOING_AWAY, "bridge closing"))
        elif not self._tasks:
            self._schedule_close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _schedule_close(self) -> None:
        if self._established:
            self._spawn(self._close_channel())

    async def abort(self) -> None:
        """Shutdown deadline passed: cancel the remaining streams and close (within the send
        timeout, then the connection is aborted)."""
        self._shutting_down = True
        await self._cancel_streams()
        await self._close_channel()

    async def _close_channel(self) -> None:
        with contextlib.suppress(ChannelError):
            self._conn.close(CLOSE_GOING_AWAY, "bridge closing")
        with contextlib.suppress(WebSocketClosed):
            await self._flush()
        await self._close_websocket(WS_GOING_AWAY, "bridge closing")

    async def _cancel_streams(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _release_everything(self) -> None:
        """Free every request byte this session holds and give its budget share back."""
        self._pending.clear()
        self._buffers.close()
