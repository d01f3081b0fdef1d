"""Request dispatch: what the bridge does with each request stream of one session.

A request's HEADERS, DATA and END arrive from the channel shell (``bridge.session``) as core
events. Before anything reaches the upstream, in this order: the shutdown state (503), the
path allowlist (404), the API key from the tunnelled ``Authorization`` header compared in
constant time (401), the streams-per-session cap and the unfinished-streams cap (429 with
Retry-After), the requests-in-flight budget per source and in all (429/503), the
buffered-bytes budget (``bridge.buffer_budget``: 429/503) and the body size (413) as the body
arrives, the body deadline (408), and at END the disclosed metadata against
the decrypted body and the body's JSON strictness (400). A disclosed ``max_tokens`` /
``max_completion_tokens`` then bounds the upstream request, and streamed chat and completion
requests are asked for a usage chunk (read and dropped by ``bridge.usage_meter``).

An admitted request becomes a task running ``bridge.streaming.relay``; whatever ends it, its
buffered bytes go back to the budget and the client gets an answer, a RESET or the end of the
connection (``Dispatcher._settle``); only a deliberate cancellation (the client's RESET, the
connection or session ending) skips that, because the client already knows.

Deliberately not here: the WebSocket, the handshake and the order of sends (``bridge.session``),
connection admission (``bridge.admission``), HTTP (``bridge.upstream``), turning the answer into
records (``bridge.streaming``). Nothing here logs or counts request or response content.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from websockets.exceptions import ConnectionClosed as WebSocketClosed

from bridge import errors
from bridge.buffer_budget import SessionBuffers
from bridge.config import BridgeConfig
from bridge.log_throttle import PEER_EVENTS, LogKind
from bridge.logs import log_unexpected
from bridge.metrics import BridgeMetrics, ErrorKind, StreamOutcome
from bridge.overload import OverloadReport
from bridge.streaming import Outbox, relay
from bridge.upstream import Upstream
from shroud_sdk.channel.connection import BridgeConnection
from shroud_sdk.channel.constants import RESET_INTERNAL_ERROR
from shroud_sdk.channel.events import DataReceived, RequestReceived
from shroud_sdk.errors import ChannelError
from shroud_sdk.json_body import JsonBodyError, parse_json_body
from shroud_sdk.refusals import Overload, OverloadLimit

_log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS: Final = 1
# Paths whose streamed responses follow OpenAI's chat/completions SSE shape, where the bridge
# may ask the upstream for a final usage chunk (stream_options.include_usage).
_USAGE_INJECTION_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/completions"})
_TOKEN_LIMIT_FIELDS: Final = ("max_tokens", "max_completion_tokens")
# Methods never forwarded, whatever the path: a TRACE answer reflects the request the upstream
# received, which carries the bridge's own upstream credentials (--upstream-api-key) that the
# client must never see; CONNECT asks the upstream to open a tunnel elsewhere. Neither is part
# of the OpenAI API.
_NEVER_FORWARDED: Final = frozenset({"TRACE", "CONNECT"})


# -- request checks (pure) ---------------------------------------------------------------------


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
    path: str, body: bytes, disclosed: Mapping[str, object], *, max_containers: int
) -> PreparedBody | errors.ErrorResponse:
    """Check disclosed metadata against ``body``; bound tokens; ask for usage on streams.

    Each disclosed field must equal the body's top-level field of the same name (None when the
    body lacks it). A JSON body with a repeated key, nested too deeply or holding more than
    ``max_containers`` objects and arrays is refused (400), and so is a non-empty body that is
    not a JSON object when any field is disclosed. The container bound bounds the parse, which
    runs on the worker's event loop: its time is every other stream's stall. A disclosed
    ``max_tokens`` or ``max_completion_tokens`` then also caps the other field, so an upstream
    that prefers one of them (vLLM prefers ``max_completion_tokens``) cannot generate more than
    was disclosed.
    """
    parsed: Any = None
    if body:
        try:
            parsed = parse_json_body(body, max_containers=max_containers)
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


# -- one session's streams ----------------------------------------------------------------------


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


class _Detached:
    """The outbox of a dispatcher whose session ended: every use says the connection is gone."""

    @property
    def conn(self) -> BridgeConnection:
        raise WebSocketClosed(None, None)

    async def flush(self) -> None:
        raise WebSocketClosed(None, None)

    def send_now(self) -> bool:
        raise WebSocketClosed(None, None)

    async def drain(self) -> None:
        raise WebSocketClosed(None, None)

    def abandon(self, error: ChannelError) -> None:
        return None


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class DispatchContext:
    """What the dispatchers of one bridge process share."""

    config: BridgeConfig
    upstream: Upstream
    metrics: BridgeMetrics
    api_key_digests: tuple[bytes, ...] = field(repr=False)
    overload: OverloadReport


class Dispatcher:
    """The request streams of one session: bodies arriving, and the tasks proxying them.

    The channel shell feeds it core events (``on_request``, ``on_data``, ``on_end``,
    ``on_reset``) and flushes afterwards; answers the dispatcher makes itself are only queued
    in the core. ``on_idle`` is called (soon, on the loop) when the last stream ends while the
    session is shutting down.
    """

    def __init__(
        self,
        outbox: Outbox,
        context: DispatchContext,
        buffers: SessionBuffers,
        source: str,
        on_idle: Callable[[], None],
        streams: SessionBuffers,
    ) -> None:
        self._outbox = outbox
        self._ctx = context
        self._config = context.config
        self._metrics = context.metrics
        self._buffers = buffers
        # One unit per request from its HEADERS until it is done: what it holds then is an
        # upstream connection (a descriptor), a task and a share of the upstream's capacity.
        self._streams = streams
        self._source = source
        self._on_idle = on_idle
        self._pending: dict[int, _PendingRequest] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.shutting_down = False
        self.last_activity = time.monotonic()

    @property
    def active(self) -> int:
        """Requests being proxied right now."""
        return len(self._tasks)

    def next_deadline(self) -> float | None:
        """The earliest body deadline of a request still arriving (monotonic), if any."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def on_request(self, request: RequestReceived) -> None:
        """A request's HEADERS: refuse it at once, or hold it while its body arrives."""
        answer: errors.ErrorResponse | None = None
        limit: OverloadLimit | None = None
        if self._config.log_request_paths:
            _log.info("stream %d: %s %s", request.stream_id, request.method, request.path)
        if self.shutting_down:
            limit = OverloadLimit.SHUTTING_DOWN
        elif request.method in _NEVER_FORWARDED:
            self._metrics.error(ErrorKind.METHOD_NOT_ALLOWED)
            answer = errors.method_not_allowed()
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
        elif (limit := self._streams.charge(1)) is None:
            size = _head_size(request)
            limit = self._buffers.charge(size)
            if limit is None:
                deadline = time.monotonic() + self._config.request_body_timeout
                self._pending[request.stream_id] = _PendingRequest(request, deadline, size)
                return
            self._streams.release(1)
        if limit is not None:
            answer = self._overloaded(limit)
        assert answer is not None
        self._answer(request, answer)

    def on_data(self, event: DataReceived) -> None:
        """Body bytes: held and charged, or the request refused (413, 429, 503)."""
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
            self._streams.release(1)
            self._answer(pending.request, answer)
            return
        pending.chunks.append(event.data)
        pending.size += size
        pending.charged += size

    def on_end(self, stream_id: int) -> None:
        """The client's END: the request is complete; proxy it."""
        pending = self._pending.pop(stream_id, None)
        if pending is not None:
            body = b"".join(pending.chunks)
            pending.chunks.clear()
            task = asyncio.create_task(self._proxy(pending.request, body, pending.charged))
            self._tasks[stream_id] = task

    def on_reset(self, stream_id: int) -> None:
        """The client's RESET: drop the body, or cancel the proxying (the upstream stops)."""
        pending = self._pending.pop(stream_id, None)
        if pending is not None:
            self._buffers.release(pending.charged)
            self._streams.release(1)
            self._metrics.stream_finished(pending.request.path, StreamOutcome.CLIENT_RESET)
        running = self._tasks.get(stream_id)
        if running is not None:
            running.cancel()  # closes the upstream response: the upstream stops generating

    def cancel_running(self) -> None:
        """The connection closed: unfinished work cannot be delivered."""
        for task in self._tasks.values():
            task.cancel()

    async def cancel_all(self) -> None:
        """Cancel every running stream and wait for them to end."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def detach(self) -> None:
        """The session ended (its streams were cancelled): forget every request still arriving
        (the session's budget shares are closed apart) and the session itself, so that no
        reference cycle keeps the session alive until the next garbage collection."""
        self._pending.clear()
        self._outbox = _Detached()
        self._on_idle = _nothing

    def expire_pending(self) -> bool:
        """Answer 408 to requests whose body did not end in time; True if any was."""
        if not self._pending:
            return False
        now = time.monotonic()
        late = [sid for sid, p in self._pending.items() if p.deadline <= now]
        for sid in late:
            pending = self._pending.pop(sid)
            self._buffers.release(pending.charged)
            self._streams.release(1)
            self._metrics.error(ErrorKind.REQUEST_BODY_TIMEOUT)
            self._answer(pending.request, errors.request_timeout(self._config.request_body_timeout))
        return bool(late)

    def _overloaded(self, limit: OverloadLimit) -> errors.ErrorResponse:
        overload = Overload(limit, RETRY_AFTER_SECONDS)
        self._ctx.overload.refused(overload, self._source)
        return errors.overloaded(overload)

    def _answer(self, request: RequestReceived, answer: errors.ErrorResponse) -> None:
        """Queue a bridge-made response on the stream (the caller flushes).

        When sent before the client's END, the stream's remaining body is dropped on arrival.
        """
        sid = request.stream_id
        conn = self._outbox.conn
        try:
            conn.send_response(sid, answer.status, answer.headers)
            conn.send_data(sid, answer.body)
            conn.end_stream(sid)
        except ChannelError as exc:
            PEER_EVENTS.log(
                _log,
                LogKind.STREAM_UNANSWERABLE,
                logging.INFO,
                "could not answer stream %d: %s",
                sid,
                exc.check,
            )
            return
        self._metrics.response_sent(request.path, answer.status)
        self._metrics.stream_finished(request.path, StreamOutcome.REFUSED)

    async def _proxy(self, request: RequestReceived, body: bytes, charged: int) -> None:
        """The stream's task: forward the request, then make sure the stream is answered.

        Every way out but a deliberate cancellation (the client's RESET, the connection or the
        session ending, which the client sees for itself) goes through :meth:`_settle`.
        """
        sid = request.stream_id
        outcome = StreamOutcome.UPSTREAM_ERROR
        forwarding = self._forward(request, body)
        del body  # held by the forwarding alone, which lets it go once it is sent
        self._metrics.streams_active.inc()
        try:
            try:
                outcome = await forwarding
            except asyncio.CancelledError:
                if _cancelled_on_purpose():
                    outcome = StreamOutcome.CLIENT_RESET
                    raise
                # A CancelledError nobody asked for (a future cancelled inside a library):
                # a failure like any other, never a silent end of the stream.
                self._failed(f"stream {sid} ended by a stray cancellation")
            except WebSocketClosed:
                outcome = StreamOutcome.CLIENT_RESET  # the connection ended under us
                return
            except Exception as exc:
                # Including a ChannelError: the core refused to send something (an answer it
                # cannot carry, a per-direction limit); the connection may well be open.
                self._failed(f"stream {sid} failed unexpectedly", exc)
            await self._settle(sid)
        finally:
            self._tasks.pop(sid, None)
            self._buffers.release(charged)
            self._streams.release(1)
            self._metrics.streams_active.dec()
            if outcome is not StreamOutcome.REFUSED:
                self._metrics.stream_finished(request.path, outcome)
            self.last_activity = time.monotonic()
            if self.shutting_down and not self._tasks:
                asyncio.get_running_loop().call_soon(self._on_idle)

    async def _forward(self, request: RequestReceived, body: bytes) -> StreamOutcome:
        prepared = prepare_body(
            request.path,
            body,
            request.disclosed,
            max_containers=self._config.max_json_containers,
        )
        del body
        if isinstance(prepared, errors.ErrorResponse):
            self._metrics.error(
                ErrorKind.DISCLOSURE_MISMATCH
                if prepared.code == "disclosure_mismatch"
                else ErrorKind.INVALID_BODY
            )
            self._answer(request, prepared)
            await self._outbox.flush()
            return StreamOutcome.REFUSED
        return await relay(
            self._outbox,
            self._ctx.upstream,
            self._metrics,
            request,
            prepared.body,
            usage_injected=prepared.usage_injected,
        )

    def _failed(self, what: str, exc: BaseException | None = None) -> None:
        if exc is None:
            PEER_EVENTS.log(_log, LogKind.STREAM_FAILED, logging.ERROR, "%s", what)
        else:
            log_unexpected(_log, what, exc, LogKind.STREAM_FAILED)
        self._metrics.error(ErrorKind.INTERNAL)

    async def _settle(self, sid: int) -> None:
        """The client learns that the stream is over, whatever ended its task.

        A stream still owed its END or RESET gets RESET (whatever it had sent: the client
        learns at once that this response is over, and the stream's slot is freed). When not
        even RESET can be sealed (the connection reached a per-direction limit, or is failing),
        the connection is ended, so the client sees it end instead of waiting. Then everything
        sealed is sent: nothing is left queued in the core without a flush to send it.
        """
        try:
            conn = self._outbox.conn
            if conn.owes_end(sid):
                try:
                    conn.reset_stream(sid, RESET_INTERNAL_ERROR, "bridge internal error")
                except ChannelError as exc:
                    PEER_EVENTS.log(
                        _log,
                        LogKind.RESET_IMPOSSIBLE,
                        logging.WARNING,
                        "stream %d: cannot even RESET (%s): closing",
                        sid,
                        exc.check,
                    )
                    self._outbox.abandon(exc)
                    return
            await self._outbox.flush()
        except WebSocketClosed:
            pass  # the connection ended: the client sees that


def _cancelled_on_purpose() -> bool:
    """True when the running task was cancelled (``Task.cancel``), not merely handed a
    CancelledError by something it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
