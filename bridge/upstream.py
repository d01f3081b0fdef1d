"""The bridge's HTTP/1.1 client to its OpenAI-compatible upstream (vLLM, the demo model, ...).

One pool of keep-alive connections per bridge process (worker), no redirects (a 3xx is an
answer like any other), separate connect and read timeouts. The pool is sized to the bridge's
own stream caps (``pool_size``: sessions x streams per session), so an admitted stream never
queues for an upstream connection; the caps, not the pool, bound the load. A connection idle
for ``IDLE_CONNECTION_SECONDS`` is closed rather than reused. A request is sent
with its (already size-checked, already decrypted) body in one write; ``https`` upstreams are
reached over TLS with the system's trust store and the host's name checked.

The response body is handed over from the connection's own callback (``relay_body``): each
socket read's body bytes (``httptools``, llhttp: chunked framing removed), joined into one
chunk, are passed to the caller's ``on_chunk`` while the read is still being handled, so a
token goes from the upstream's socket to the client's without a task switch. ``on_chunk``
answers whether it may be called again at once; when it may not (the client is not reading
fast enough), the connection stops reading the upstream (``pause_reading``), the caller's
``drain`` runs, and reading resumes: at most one read's body (64 KiB) is ever held beyond
what the caller accepted. Reads ask ``recv`` for at most 64 KiB (see ``UPSTREAM_READ_SIZE``).

Why not aiohttp any more (issue 11): it hands body bytes to a task, which costs a task wake
per token (about 21 us of 139 us per token from readable to written, measured cold), and
offers no public body callback. Why not httpx2: ``benchmarks/upstream_clients.py``.

Failures: a connect failure or an answer that breaks HTTP before its headers is
``UpstreamConnectError``, a connect or read timeout (``read_timeout``: the longest wait for
the next bytes while the bridge is reading) ``UpstreamTimeoutError``; ``after_headers`` says
whether a response had started. A body that is malformed, or cut short (the connection closed
inside a sized or chunked body), is an error after the headers, never a normal end: the
client must see RESET, not a truncated answer. A body without length or chunking ends with the
upstream's orderly close (a reset, or the bridge closing the connection, is a cut). More than
``MAX_HEAD_BYTES`` in a row that are not body (headers, interim answers, chunk framing,
trailers) is a broken upstream; trailers are never forwarded. Leaving ``send``'s context
before the body ended (the client reset the stream or went away, the task was cancelled)
closes the upstream connection, which is how vLLM learns to stop generating.

Headers: hop-by-hop headers, the client's ``Authorization`` and ``Cookie`` are never forwarded
(the client's key is for the bridge; the upstream's key, if any, is the bridge's own
configuration; a cookie is the client's state with some other service), and
``Accept-Encoding: identity`` is forced, because compressing secrets before encrypting them would
leak their content through record lengths (the CRIME/BREACH family). Nothing is added that the
client did not send but ``Host``, ``Content-Length`` and those two (no ``User-Agent``,
``Accept`` or ``Content-Type`` of the client library's own). A header name that is not an
HTTP token, or a value with CR, LF or NUL, is never written (502).

Path mapping: the tunnelled path is the OpenAI path (``/v1/chat/completions``) and the upstream
is configured as the OpenAI base URL (``http://vllm:8000/v1``), so a base URL ending in ``/v1``
has that suffix dropped before the path is appended: ``http://vllm:8000/v1/chat/completions``.

Deliberately not here: deciding which paths are allowed, authentication and metadata checks
(``bridge.dispatch``), turning chunks into records (``bridge.streaming``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httptools

# RFC 9110 section 7.6.1 (Connection) and the headers it traditionally names, plus framing
# headers that the bridge recomputes on each side of the tunnel.
HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Request headers the client may not pass to the upstream, beyond the hop-by-hop ones.
_DROPPED_REQUEST_HEADERS: Final = frozenset({"authorization", "accept-encoding", "cookie"})
_OPENAI_PREFIX: Final = "/v1"
# Response headers only the bridge itself may set (e.g. x-shroud-overload on its refusals).
BRIDGE_HEADER_PREFIX: Final = "x-shroud-"
# The most one socket read of an upstream connection asks for. asyncio's selector transport
# asks recv() for 256 KiB (its ``max_size`` class attribute), and glibc serves a buffer that
# large with mmap, mremap and munmap on every read: 26 us warm, 48 us after 1 ms idle, against
# 3 / 12 us for 64 KiB, on each token of a paced stream. 64 KiB still takes a burst of events
# in one read, and a record holds less than that anyway.
UPSTREAM_READ_SIZE: Final = 64 * 1024


class UpstreamError(Exception):
    """The upstream request failed; ``after_headers`` tells whether a response had started."""

    def __init__(self, message: str, *, after_headers: bool) -> None:
        super().__init__(message)
        self.after_headers = after_headers


class UpstreamConnectError(UpstreamError):
    """Could not connect, or the upstream broke HTTP (answer: 502)."""


class UpstreamTimeoutError(UpstreamError):
    """Connect or read timeout (answer: 504 before headers)."""


# RFC 9110 section 15: a status code is three digits, 100 to 599 in use; an answer outside
# that range is a broken upstream (502), and the channel could not carry it anyway.
_STATUS_RANGE: Final = range(100, 600)


@dataclass(frozen=True)
class UpstreamRequest:
    """What the bridge forwards: method, OpenAI path (with query), client headers, body."""

    method: str
    # Decrypted: the path and query, the client's headers and the prompt's body must never show
    # up in a repr (tracebacks, debuggers, logs), as the log policy keeps them out of logs.
    path: str = field(repr=False)
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes = field(repr=False)


def upstream_url(base_url: str, path: str) -> str:
    """Where ``path`` (an OpenAI path such as ``/v1/models``) goes on ``base_url``."""
    base = base_url.rstrip("/")
    if base.endswith(_OPENAI_PREFIX) and (
        path == _OPENAI_PREFIX or path.startswith((_OPENAI_PREFIX + "/", _OPENAI_PREFIX + "?"))
    ):
        base = base[: -len(_OPENAI_PREFIX)]
    return base + path


def forward_request_headers(
    headers: Iterable[tuple[str, str]], upstream_api_key: str | None
) -> list[tuple[str, str]]:
    """Client headers minus hop-by-hop, Authorization, Cookie; plus identity encoding and the
    bridge's own upstream key when configured."""
    out = [
        (name, value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP_HEADERS | _DROPPED_REQUEST_HEADERS
    ]
    out.append(("accept-encoding", "identity"))
    if upstream_api_key is not None:
        out.append(("authorization", f"Bearer {upstream_api_key}"))
    return out


def forward_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream response headers minus hop-by-hop ones and the bridge's own ``x-shroud-*``
    (an upstream must not pass its answer off as a bridge refusal), names lower-cased."""
    return [
        (name.lower(), value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP_HEADERS
        and not name.lower().startswith(BRIDGE_HEADER_PREFIX)
        and "\r" not in value
        and "\n" not in value
    ]


def _describe(exc: BaseException) -> str:
    """The exception's type, and the OS error behind it if any: never its message, which may
    quote the request URL (path, query) or bytes of the upstream's answer."""
    cause: BaseException | None = exc
    for _ in range(8):  # a chain of causes is short; never follow a cycle forever
        if cause is None or isinstance(cause, OSError):
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno:
        # The errno's own text: asyncio's message for a failed connect names the address.
        return f"{type(exc).__name__} ({os.strerror(cause.errno)})"
    if isinstance(cause, OSError) and cause.strerror:
        return f"{type(exc).__name__} ({cause.strerror})"
    return type(exc).__name__


def limit_read_size(transport: object, size: int = UPSTREAM_READ_SIZE) -> None:
    """Make ``transport`` ask for at most ``size`` bytes per socket read.

    It relies on asyncio's socket transports reading ``self.max_size`` bytes per ``recv``; a
    transport without that attribute (another event loop, TLS's wrapper) keeps its default,
    and a smaller one is never raised.
    """
    current = getattr(transport, "max_size", None)
    if isinstance(current, int) and current > size:
        transport.max_size = size  # type: ignore[attr-defined]


# RFC 9110 section 5.6.2: a method and a header name are tokens; a request target is visible
# ASCII (RFC 9112 section 3.2); a header value never holds CR, LF or NUL (section 5.5).
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(r"[\x21-\x7e]+")
_FORBIDDEN_IN_VALUE: Final = re.compile(r"[\r\n\x00]")
_FRAMING_HEADERS: Final = frozenset({b"content-length", b"transfer-encoding"})
_SWITCHING_PROTOCOLS: Final = 101
# How long a pooled connection may sit idle before it is closed instead of used: below the
# keep-alive timeouts of common upstream servers (uvicorn, which vLLM runs on: 5 s), so the
# bridge rarely sends a request on a connection the server is closing at that very moment.
IDLE_CONNECTION_SECONDS: Final = 4.0
# The most bytes an upstream may send in a row that are not body: the status line and headers
# (interim answers included), chunk framing, trailers. llhttp sets no limit, and httptools
# joins a header's pieces in memory; without one, an upstream that never ends its headers
# (or its trailers, or its 100 Continue answers) would grow the bridge's memory without bound
# while every read kept the read timeout away. An OpenAI server's head is well under 2 KiB.
MAX_HEAD_BYTES: Final = 64 * 1024

OnChunk = Callable[[bytes], bool]
"""Called with each read's body bytes; returns whether it may be called again at once."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the upstream, carrying one exchange at a time.

    Everything happens in the transport's callbacks: the parser's callbacks note the status,
    headers and body pieces of one read, and the read's body goes to the attached ``OnChunk``
    (or is held, reading paused, until one is attached). The awaiting side (``request``,
    ``wait``) is only woken for what it must act on: headers, a full ``OnChunk``, the end, an
    error.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        on_lost: Callable[[_Connection], None],
    ) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self.lost = False
        self.counted = True  # counted in the pool's open connections until lost
        self._parser = httptools.HttpResponseParser(self)
        self._head_bytes = 0
        self._busy = False
        self._head_only = False
        self._interim = False
        self._switching = False
        self.headers_done = False
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._framed = False
        self._parts: list[bytes] = []
        self._held: list[bytes] = []
        self._on_chunk: OnChunk | None = None
        self._blocked = False
        self._paused = False
        self.complete = False
        self._keep_alive = False
        self._trailing = False
        self._closing = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0

    @property
    def usable(self) -> bool:
        """Whether the connection is still open and not being closed."""
        return not self.lost and not self._closing

    @property
    def connected(self) -> bool:
        """Whether the transport was ever made (then ``connection_lost`` will follow)."""
        return self._transport is not None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        limit_read_size(transport)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            # Bytes nobody asked for: whatever they are, this connection's framing is lost.
            self.close()
            return
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._switching = True
        except httptools.HttpParserError as exc:
            if self.complete:  # garbage after a whole response: it stands, the connection not
                self._trailing = True
            else:
                self._parts.clear()
                self._fail(UpstreamConnectError(_describe(exc), after_headers=self.headers_done))
                return
        if self._switching and not self.complete:
            # The channel carries HTTP answers, not another protocol: a broken upstream.
            self._fail(UpstreamConnectError("switching protocols", after_headers=False))
            return
        parts = self._parts
        if parts:
            chunk = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
            self._head_bytes = 0
            self._deliver(chunk)
        elif not self.complete:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(UpstreamConnectError("head too large", after_headers=self.headers_done))
                return
        if self.complete:
            self._ended()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_timer()
        if self._busy and not self.complete and self._error is None:
            if self.headers_done and not self._framed and exc is None and not self._closing:
                # A body without length or chunking ends with the connection (RFC 9112 6.3),
                # when the upstream closed it: not a reset, nor the bridge's own close.
                self.complete = True
                self._ended()
            else:
                cause = _describe(exc) if exc is not None else "connection closed"
                self._fail(UpstreamConnectError(cause, after_headers=self.headers_done))
        self._on_lost(self)

    # -- httptools' callbacks -------------------------------------------------------------------

    # Once the response is complete, whatever follows it (before the next request) is not
    # part of it: never delivered, and the connection is not reused.
    def on_message_begin(self) -> None:
        if self.complete:
            self._trailing = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete or self.headers_done:
            return  # trailers are not forwarded: the headers went to the client already
        self.raw_headers.append((name, value))
        if name.lower() in _FRAMING_HEADERS:
            self._framed = True

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (100, 103...): the final one follows
            self._switching = status == _SWITCHING_PROTOCOLS
            self._interim = True
            self.raw_headers = []
            self._framed = False
            return
        self.status = status
        self.headers_done = True
        if self._head_only:
            self.complete = True  # a HEAD answer has no body, whatever its headers say
        else:
            self._pause()  # the body waits for its OnChunk; what this read brought is held
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._parts.append(body)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive()

    # -- the exchange ---------------------------------------------------------------------------

    async def request(self, head: bytes, *, head_only: bool) -> None:
        """Write one request; return once the final response's headers are in."""
        assert self._transport is not None
        if not self.usable:
            # Lost between its connect and this request (a reset that came first): nothing
            # would ever wake the wait below but the read timeout.
            raise UpstreamConnectError("connection closed", after_headers=False)
        self._busy = True
        self._head_only = head_only
        self._transport.write(head)
        self._last_read = self._loop.time()
        self._arm_timer()
        await self._until(lambda: self.headers_done)

    def attach(self, on_chunk: OnChunk) -> None:
        """Hand the body to ``on_chunk`` from now on; what came with the headers first."""
        self._on_chunk = on_chunk
        held = self._held
        if held:
            chunk = held[0] if len(held) == 1 else b"".join(held)
            held.clear()
            if not on_chunk(chunk):
                self._blocked = True
                return
        self.resume()

    async def wait(self) -> None:
        """Return when the body ended or ``OnChunk`` asked for a pause; raise its error."""
        await self._until(lambda: self._blocked or self.complete)

    def resume(self) -> None:
        """``OnChunk`` can take more: read the upstream again."""
        self._blocked = False
        if self._paused and not self.complete and self._error is None and not self.lost:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()
            self._last_read = self._loop.time()  # the wait was the client's, not the upstream's
            self._arm_timer()

    def finish(self) -> bool:
        """End the exchange; True when the connection can carry another one."""
        reusable = (
            self.complete
            and self._keep_alive
            and not self._head_only
            and self._error is None
            and not self.lost
            and not self._closing
            and not self._trailing
            and not self._held
            # An answer that came before the request was all written: the upstream did not
            # read the body it answered, so whatever it makes of the rest is not framed by us.
            and self._transport is not None
            and not self._transport.get_write_buffer_size()
        )
        self._cancel_timer()
        self._busy = False
        self._on_chunk = None
        if reusable:
            self._reset()
            self.idle_since = self._loop.time()
            if self._paused:
                self._paused = False
                assert self._transport is not None
                self._transport.resume_reading()  # an idle connection still sees its close
        return reusable

    def close(self) -> None:
        """Drop the connection (the upstream sees it close; connection_lost follows)."""
        self._closing = True
        if self._transport is not None and not self.lost:
            self._transport.close()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if ready():
                return
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head_bytes = 0
        self._head_only = self._interim = self._switching = self.headers_done = False
        self.status = 0
        self.raw_headers = []
        self._framed = self._blocked = self.complete = self._keep_alive = False

    def _deliver(self, chunk: bytes) -> None:
        on_chunk = self._on_chunk
        if on_chunk is None:
            self._held.append(chunk)  # reading is paused until attach: one read at most
            return
        try:
            more = on_chunk(chunk)
        except Exception as exc:  # raised where the body is awaited, as if raised there
            self._fail(exc)
            return
        if not more:
            self._blocked = True
            self._pause()
            self._wake()

    def _ended(self) -> None:
        self._cancel_timer()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        # Not skipped once complete: OnChunk may fail on the read that ended the body.
        if self._error is not None:
            return
        self._error = error
        self._cancel_timer()
        self._wake()
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause(self) -> None:
        if not self._paused and self._transport is not None and not self.lost:
            self._paused = True
            self._transport.pause_reading()

    # The read timeout: one timer per wait, not re-armed per read; when it fires early (bytes
    # came since), it is set again for the last read's deadline.
    def _arm_timer(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_read + self._read_timeout, self._timed)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed(self) -> None:
        self._timer = None
        if not self._busy or self.complete or self._error is not None or self._paused:
            return  # paused: the client is slow, not the upstream (resume sets it again)
        due = self._last_read + self._read_timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._timed)
            return
        self._fail(UpstreamTimeoutError("read timeout", after_headers=self.headers_done))


class UpstreamResponse:
    """A streaming upstream response: ``status``, filtered ``headers``, then the body through
    ``relay_body``, once."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status: int = connection.status
        self.headers: tuple[tuple[str, str], ...] = tuple(
            forward_response_headers(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in connection.raw_headers
            )
        )

    async def relay_body(self, on_chunk: OnChunk, drain: Callable[[], Awaitable[None]]) -> None:
        """Pass the body to ``on_chunk`` as it is read, from the connection's callback.

        When ``on_chunk`` returns False, reading stops until ``await drain()`` returned. Returns
        at the end of the body; raises ``UpstreamError(after_headers=True)`` when the body is
        malformed, cut short or times out, and whatever ``on_chunk`` or ``drain`` raised.
        """
        connection = self._connection
        connection.attach(on_chunk)
        while True:
            await connection.wait()
            if connection.complete:
                return
            await drain()
            connection.resume()


class Upstream:
    """The pooled HTTP/1.1 client to one upstream base URL.

    ``pool_size`` bounds the connections open to the upstream at once (0: no bound); the
    server passes the most streams it admits, so the pool never makes an admitted stream wait.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        pool_size: int = 0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the upstream must be an http(s) URL")
        self.base_url = base_url
        self._api_key = api_key
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_size = pool_size
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc.rpartition("@")[2]
        self._base_path = parts.path
        self._tls: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        self._idle: list[_Connection] = []
        self._connections: set[_Connection] = set()
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"Upstream(base_url={self.base_url!r})"

    @contextlib.asynccontextmanager
    async def send(self, request: UpstreamRequest) -> AsyncIterator[UpstreamResponse]:
        """Send ``request``; yield the response once its headers arrived.

        Raises ``UpstreamConnectError`` / ``UpstreamTimeoutError`` (``after_headers=False``)
        when no response started. Leaving the context closes the upstream connection unless
        the body was read to its end (that is the cancellation path); a connection whose
        exchange ended cleanly goes back to the pool.
        """
        head = self._request_head(request)
        connection = await self._connection()
        try:
            await connection.request(head, head_only=request.method == "HEAD")
            if connection.status not in _STATUS_RANGE:
                raise UpstreamConnectError("status out of range", after_headers=False)
            yield UpstreamResponse(connection)
        finally:
            if connection.finish():
                self._idle.append(connection)
                self._wake_one()
            else:
                connection.close()

    async def aclose(self) -> None:
        """Close every upstream connection, pooled or in use."""
        for connection in list(self._connections):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # their connection_lost runs

    def _request_head(self, request: UpstreamRequest) -> bytes:
        target = upstream_url(self._base_path, request.path)
        if not _TOKEN.fullmatch(request.method) or not _TARGET.fullmatch(target):
            raise UpstreamConnectError("request line not sendable", after_headers=False)
        lines = [f"{request.method} {target} HTTP/1.1", f"host: {self._host_header}"]
        for name, value in forward_request_headers(request.headers, self._api_key):
            if not _TOKEN.fullmatch(name) or _FORBIDDEN_IN_VALUE.search(value):
                raise UpstreamConnectError("request header not sendable", after_headers=False)
            lines.append(f"{name}: {value}")
        body = request.body
        if body or request.method != "GET":
            lines.append(f"content-length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8") + body

    async def _connection(self) -> _Connection:
        """A pooled connection, or a new one; waits while the pool is full."""
        while True:
            while self._idle:
                connection = self._idle.pop()
                if not connection.usable:
                    continue
                if asyncio.get_running_loop().time() - connection.idle_since < (
                    IDLE_CONNECTION_SECONDS
                ):
                    return connection
                connection.close()
            if not self._pool_size or self._open < self._pool_size:
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: pass the turn on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return await self._connect()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, self._read_timeout, self._lost)
        self._open += 1
        self._connections.add(connection)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(
                    lambda: connection,
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                )
        except BaseException as exc:
            if not connection.connected:  # connection_lost will never come
                self._lost(connection)
            else:
                connection.close()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeoutError(_describe(exc), after_headers=False) from exc
            if isinstance(exc, (OSError, ValueError)):
                raise UpstreamConnectError(_describe(exc), after_headers=False) from exc
            raise
        return connection

    def _lost(self, connection: _Connection) -> None:
        if not connection.counted:
            return
        connection.counted = False
        self._open -= 1
        self._connections.discard(connection)
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return
