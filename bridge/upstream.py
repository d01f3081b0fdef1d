"""The bridge's HTTP client to its OpenAI-compatible upstream (vLLM, the demo model, ...).

One ``aiohttp.ClientSession`` per bridge process (worker), no redirects, separate connect and
read timeouts. Its connection pool is sized to the bridge's own stream caps
(``pool_size``: sessions x streams per session), so an admitted stream never queues for an
upstream connection; the caps, not the pool, bound the load. A request is sent with its
(already size-checked, already decrypted) body; the response body is handed over as it
arrives, **one chunk per socket read** (``content.readany()``, as ``iter_any()`` yields it:
everything aiohttp's C parser has buffered, chunked framing removed), so the SSE events one
read brought become one record and nothing waits for more data. Closing the response context
(because the client reset the stream or went away) closes the upstream connection, which is how
vLLM learns to stop generating.

Why aiohttp (issue 11): ``benchmarks/upstream_clients.py`` reads the same SSE streams with
httpx2 (the client before), aiohttp and a small h11 reader; aiohttp used a third of httpx2's
CPU per event and merged what each read brought, httpx2 handed over every chunked-encoding
chunk separately (one record each) under a cancel scope per read.

Headers: hop-by-hop headers, the client's ``Authorization`` and ``Cookie`` are never forwarded
(the client's key is for the bridge; the upstream's key, if any, is the bridge's own
configuration; a cookie is the client's state with some other service), and
``Accept-Encoding: identity`` is forced, because compressing secrets before encrypting them would
leak their content through record lengths (the CRIME/BREACH family). Nothing is added that the
client did not send but ``Host``, ``Content-Length`` and those two (no ``User-Agent``,
``Accept`` or ``Content-Type`` of aiohttp's own).

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
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp.http import HttpProcessingError
from yarl import URL

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


class UpstreamResponse:
    """A streaming upstream response: ``status``, filtered ``headers`` and ``chunks()``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status: int = response.status
        self.headers: tuple[tuple[str, str], ...] = tuple(
            forward_response_headers(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in response.raw_headers
            )
        )

    def chunks(self) -> AsyncIterator[bytes]:
        """The body bytes, one chunk per read; ``UpstreamError(after_headers=True)`` on failure.

        A body cut short (the connection closed inside a chunked or sized body) is an error,
        never a normal end: the client must see RESET, not a truncated answer.
        """
        return _BodyChunks(self._response.content)


class _BodyChunks:
    """``content.iter_any()`` with upstream errors, as one iterator (one per token resumed):
    neither aiohttp's iterator nor an async generator around it in between."""

    __slots__ = ("_content",)

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content

    def __aiter__(self) -> _BodyChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except TimeoutError as exc:
            raise UpstreamTimeoutError(_describe(exc), after_headers=True) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(_describe(exc), after_headers=True) from exc
        if not chunk:  # the end of the body (readany returns b"" only there)
            raise StopAsyncIteration
        return chunk


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


def _fail_body_with_its_connection(response: aiohttp.ClientResponse) -> Callable[[], None]:
    """Make a body whose connection failed to parse it fail too; return the undo.

    aiohttp's C parser, failing on body bytes that came in a later read than the headers (a
    malformed chunk), closes the connection and records the error on it, but never on the
    response's body stream, and stops the read timeout: the body reader would wait forever
    (aiohttp 3.14.5; its pure-Python parser does fail the body). So when the connection is
    lost with a parse error while the body is unfinished, the body gets that error, and the
    reader raises as for any broken body (``UpstreamConnectError``, after headers: RESET).
    """
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is None:
        return _nothing
    body = response.content

    def check(closed: asyncio.Future[None] | None = None) -> None:
        if closed is not None:
            _retrieve(closed)
        error = protocol.exception()
        if (
            isinstance(error, HttpProcessingError)
            and not body.is_eof()
            and body.exception() is None
        ):
            failure = aiohttp.ClientPayloadError("upstream response malformed")
            failure.__cause__ = error
            body.set_exception(failure)

    closed = protocol.closed
    if closed is None:  # lost already
        check()
        return _nothing
    closed.add_done_callback(check)

    def unwatch() -> None:
        # The pooled connection outlives the response: forget the response, and leave one
        # callback that retrieves how the connection ended (never one per response).
        closed.remove_done_callback(check)
        closed.remove_done_callback(_retrieve)
        closed.add_done_callback(_retrieve)

    return unwatch


def _retrieve(closed: asyncio.Future[None]) -> None:
    """Mark how a connection ended as seen: a connection lost with an error is reported
    through its response, never as an unretrieved future's exception in the log."""
    if not closed.cancelled():
        closed.exception()


def _nothing() -> None:
    return None


def limit_read_size(transport: object, size: int = UPSTREAM_READ_SIZE) -> None:
    """Make ``transport`` ask for at most ``size`` bytes per socket read.

    It relies on asyncio's socket transports reading ``self.max_size`` bytes per ``recv``; a
    transport without that attribute (another event loop, TLS's wrapper) keeps its default,
    and a smaller one is never raised.
    """
    current = getattr(transport, "max_size", None)
    if isinstance(current, int) and current > size:
        transport.max_size = size  # type: ignore[attr-defined]


class Upstream:
    """The pooled HTTP client to one upstream base URL.

    ``pool_size`` bounds the connections open to the upstream at once (0: no bound); the
    server passes the most streams it admits, so the pool never makes an admitted stream wait.
    The session is created on first use, inside the running event loop.
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
        self.base_url = base_url
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, connect=None, sock_read=read_timeout
        )
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Upstream(base_url={self.base_url!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0),
                timeout=self._timeout,
                auto_decompress=False,
                trust_env=False,  # never route confidential traffic through an env proxy
                # Send what the client sent: no invented User-Agent, Accept or Content-Type.
                skip_auto_headers=("user-agent", "content-type", "accept"),
            )
        return self._session

    @contextlib.asynccontextmanager
    async def send(self, request: UpstreamRequest) -> AsyncIterator[UpstreamResponse]:
        """Send ``request``; yield the response once its headers arrived.

        Raises ``UpstreamConnectError`` / ``UpstreamTimeoutError`` (``after_headers=False``)
        when no response started. Leaving the context closes the upstream response, also
        when the body was not read to the end (that is the cancellation path).
        """
        headers = forward_request_headers(request.headers, self._api_key)
        body = request.body if request.body or request.method != "GET" else None
        try:
            response = await self._client().request(
                request.method,
                URL(upstream_url(self.base_url, request.path), encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
            )
        except TimeoutError as exc:
            raise UpstreamTimeoutError(_describe(exc), after_headers=False) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamConnectError(_describe(exc), after_headers=False) from exc
        if response.status not in _STATUS_RANGE:
            response.close()
            raise UpstreamConnectError("status out of range", after_headers=False)
        connection = response.connection
        if connection is not None:
            # Per response, not per connection: aiohttp opens pooled connections out of sight
            # (the headers' read keeps the default; every body read after it is smaller).
            limit_read_size(connection.transport)
        unwatch = _fail_body_with_its_connection(response)
        try:
            yield UpstreamResponse(response)
        finally:
            unwatch()
            if not response.content.at_eof():
                response.close()  # an unread body: drop the connection, the upstream stops
            response.release()

    async def aclose(self) -> None:
        """Close every pooled upstream connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None
