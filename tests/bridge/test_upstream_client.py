"""The bridge's upstream client against raw HTTP/1.1 servers on loopback: every broken answer
ends in an ``UpstreamError`` (never a wait that outlasts the upstream), and a well-formed one
is read to its end."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import bridge.upstream
from bridge.upstream import (
    UPSTREAM_READ_SIZE,
    Upstream,
    UpstreamConnectError,
    UpstreamRequest,
    UpstreamResponse,
    UpstreamTimeoutError,
    forward_response_headers,
    limit_read_size,
)
from tests.deploy.tls import DeployPki, make_pki

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
REQUEST = UpstreamRequest("GET", "/v1/models", (), b"")


@contextlib.asynccontextmanager
async def _upstream_at(
    serve: Script, *, read_timeout: float = 300, pool_size: int = 0
) -> AsyncIterator[Upstream]:
    """An ``Upstream`` to a loopback server running ``serve`` on each connection."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = Upstream(
        f"http://127.0.0.1:{port}/v1", read_timeout=read_timeout, pool_size=pool_size
    )
    try:
        yield upstream
    finally:
        await upstream.aclose()
        server.close()


class _AnswerThenStall:
    """A server for ``_upstream_at``: on each connection (counted), it reads the request
    head, writes ``answer``, then reads nothing and closes only after 5 s."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.answer)
            await writer.drain()
            await asyncio.sleep(5)
        writer.close()


@contextlib.asynccontextmanager
async def _serving(
    script: Script, *, read_timeout: float = 300, pool_size: int = 0
) -> AsyncIterator[Upstream]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await script(reader, writer)
        finally:
            writer.close()

    # By default a read timeout far beyond the tests' own deadlines: only the client's
    # handling of the broken answer, never the timeout, can end a read here.
    async with _upstream_at(serve, read_timeout=read_timeout, pool_size=pool_size) as upstream:
        yield upstream


async def _body(response: UpstreamResponse, got: list[bytes] | None = None) -> bytes:
    """The whole body, read as the bridge reads it (``relay_body``, every read taken at once);
    each read's bytes are also appended to ``got``."""
    reads = [] if got is None else got

    def take(chunk: bytes) -> bool:
        reads.append(chunk)
        return True

    await response.relay_body(take, _nothing_to_drain)
    return b"".join(reads)


async def _nothing_to_drain() -> None:
    return None


async def _read_all(upstream: Upstream, headers_read: asyncio.Event | None = None) -> bytes:
    async with asyncio.timeout(10), upstream.send(REQUEST) as response:
        if headers_read is not None:
            headers_read.set()
        return await _body(response)


async def test_a_malformed_chunk_after_the_headers_fails_the_body() -> None:
    headers_read = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"5\r\nhello\r\n")
        await writer.drain()
        await headers_read.wait()  # the client parsed the headers: the break comes later
        writer.write(b"not a chunk\r\n\r\n")
        await writer.drain()
        await reader.read()  # the connection stays open until the client drops it

    async with _serving(script) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream, headers_read)
        assert failure.value.after_headers  # RESET for the client, never a truncated answer


async def test_a_body_read_until_the_connection_closes_ends_normally() -> None:
    # A body with neither length nor chunking ends with the connection: not a truncation.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\none ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"two")
        await writer.drain()

    async with _serving(script) as upstream:
        assert await _read_all(upstream) == b"one two"


async def test_a_chunked_body_cut_short_fails_after_the_headers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"5\r\nhello\r\n")
        await writer.drain()

    async with _serving(script) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream)
        assert failure.value.after_headers


@pytest.mark.parametrize("status", [b"600", b"099"])
async def test_a_status_outside_100_to_599_is_a_broken_upstream(status: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 " + status + b" X\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()

    async with _serving(script) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream)
        assert not failure.value.after_headers  # the bridge answers 502 itself


def test_a_forwarded_request_keeps_its_path_headers_and_body_out_of_its_repr() -> None:
    request = UpstreamRequest(
        "POST",
        "/v1/chat/completions?user=secret-path",
        (("x-secret-header", "secret-header-value"),),
        b'{"messages": [{"content": "secret-prompt"}]}',
    )
    shown = repr(request)
    assert "POST" in shown
    for secret in ("secret-path", "secret-header-value", "secret-prompt"):
        assert secret not in shown


async def test_upstream_reads_ask_for_at_most_64_kib_and_never_more_than_before() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        assert transport.max_size > UPSTREAM_READ_SIZE  # type: ignore[attr-defined]
        limit_read_size(transport)
        assert transport.max_size == UPSTREAM_READ_SIZE  # type: ignore[attr-defined]
        limit_read_size(transport, 1 << 20)  # a larger size is not taken
        assert transport.max_size == UPSTREAM_READ_SIZE  # type: ignore[attr-defined]
        limit_read_size(object())  # a transport without the attribute keeps its default
    finally:
        transport.close()
        server.close()


async def test_a_sized_body_cut_short_fails_after_the_headers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await writer.drain()

    async with _serving(script) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream)
        assert failure.value.after_headers


async def test_a_read_timeout_mid_body_is_an_upstream_timeout_after_the_headers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # then silence, the connection open

    async with _serving(script, read_timeout=0.3) as upstream:
        got: list[bytes] = []

        async def read() -> None:
            async with asyncio.timeout(10), upstream.send(REQUEST) as response:
                await _body(response, got)

        with pytest.raises(UpstreamTimeoutError) as failure:
            await read()
        assert failure.value.after_headers
        assert got == [b"hello"]


async def _relay_all(
    upstream: Upstream, on_chunk: Callable[[bytes], bool], drain: Callable[[], Awaitable[None]]
) -> None:
    async with asyncio.timeout(10), upstream.send(REQUEST) as response:
        await response.relay_body(on_chunk, drain)


async def test_a_full_consumer_stops_the_reading_until_its_drain_returned() -> None:
    flooded = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        for _ in range(2000):  # far more than socket buffers and one read hold
            writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        flooded.set()

    calls: list[int] = []
    draining = asyncio.Event()
    release = asyncio.Event()

    def on_chunk(chunk: bytes) -> bool:
        assert not draining.is_set() or release.is_set()  # never called while it drains
        calls.append(len(chunk))
        return len(calls) < 3  # full after the third read

    async def drain() -> None:
        draining.set()
        await release.wait()

    async with _serving(script) as upstream:
        relaying = asyncio.ensure_future(_relay_all(upstream, on_chunk, drain))
        await draining.wait()
        await asyncio.sleep(0.3)  # time for the upstream to send whatever it could
        assert len(calls) == 3
        assert not flooded.is_set()  # the upstream is held back: nobody reads it
        assert max(calls) <= UPSTREAM_READ_SIZE
        release.set()
        await relaying
    assert sum(calls) == 2000 * 4096
    assert flooded.is_set()


async def test_the_read_timeout_does_not_run_while_the_consumer_drains() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"3\r\none\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"3\r\ntwo\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    got: list[bytes] = []

    def on_chunk(chunk: bytes) -> bool:
        got.append(chunk)
        return len(got) > 1

    async def slow_drain() -> None:  # the client is slow, not the upstream
        await asyncio.sleep(0.8)

    async with _serving(script, read_timeout=0.3) as upstream:
        await _relay_all(upstream, on_chunk, slow_drain)
    assert b"".join(got) == b"onetwo"


async def test_what_a_consumer_raises_ends_the_body_and_drops_the_connection() -> None:
    closed = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        await writer.drain()
        await asyncio.sleep(0.1)  # the body in a read of its own, in the read callback
        writer.write(b"3\r\none\r\n")
        await writer.drain()
        await reader.read()  # until the client drops the connection
        closed.set()

    def on_chunk(chunk: bytes) -> bool:
        raise LookupError("the channel refused")

    async def drain() -> None:
        raise AssertionError("never needed")

    async with _serving(script) as upstream:
        with pytest.raises(LookupError):
            await _relay_all(upstream, on_chunk, drain)
        async with asyncio.timeout(5):
            await closed.wait()


@pytest.mark.parametrize(
    "header",
    [
        ("x-evil", "ok\r\nx-injected: 1"),
        ("x-evil\r\nx-injected", "1"),
        ("bad name", "1"),
        ("x-evil", "a\x00b"),
    ],
)
async def test_a_header_that_would_break_the_request_is_never_written(
    header: tuple[str, str],
) -> None:
    await _never_written(UpstreamRequest("POST", "/v1/chat/completions", (header,), b"{}"))


async def _never_written(request: UpstreamRequest) -> None:
    """``request`` fails before its headers (the bridge answers 502 itself), and not one byte
    of it reaches the upstream."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.read(65536))
        writer.close()

    async with _upstream_at(serve) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            async with upstream.send(request):
                pass
        assert not failure.value.after_headers
        await asyncio.sleep(0.1)
        assert heads == []


async def _count_connections(sequence: Callable[[Upstream], Awaitable[None]]) -> int:
    """How many connections ``sequence`` opens to a keep-alive server."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    async with _upstream_at(serve) as upstream:
        await sequence(upstream)
    return connections


async def test_a_connection_idle_too_long_is_closed_instead_of_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge.upstream, "IDLE_CONNECTION_SECONDS", 0.2)

    async def twice(pause: float, upstream: Upstream) -> None:
        assert await _read_all(upstream) == b"ok"
        await asyncio.sleep(pause)
        assert await _read_all(upstream) == b"ok"

    assert await _count_connections(functools.partial(twice, 0.0)) == 1
    assert await _count_connections(functools.partial(twice, 0.4)) == 2


async def test_connections_are_reused_and_bounded_by_the_pool() -> None:
    connections = 0
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections, requests
        connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                requests += 1
                await asyncio.sleep(0.05)  # concurrent requests overlap
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async with _upstream_at(serve, pool_size=2) as upstream:
        bodies = await asyncio.gather(*(_read_all(upstream) for _ in range(6)))
        assert bodies == [b"ok"] * 6
        assert requests == 6
        assert connections == 2  # never more than the pool, each carrying several requests


async def test_an_interim_answer_is_skipped_and_bytes_after_the_response_are_not_its_body() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra"
        )
        await writer.drain()
        await reader.read()

    async with _serving(script) as upstream, asyncio.timeout(10), upstream.send(REQUEST) as answer:
        assert answer.status == 200
        assert ("link", "</x>") not in answer.headers
        assert await _body(answer) == b"ok"


async def test_the_body_is_not_read_before_its_consumer_is_attached() -> None:
    flooded = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (8 << 20))
        for _ in range(128):
            writer.write(b"x" * (64 << 10))
            await writer.drain()
        flooded.set()

    async with _serving(script) as upstream, asyncio.timeout(10), upstream.send(REQUEST) as answer:
        await asyncio.sleep(0.3)  # the relay is still sending the HEADERS record, say
        assert not flooded.is_set()  # held back by the unread socket, not buffered here
        assert len(await _body(answer)) == 8 << 20
    assert flooded.is_set()


@contextlib.asynccontextmanager
async def _tls_server(pki: DeployPki) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client refused the certificate
        finally:
            writer.close()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_an_https_upstream_is_reached_over_tls_with_its_certificate_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path / "trusted")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_cert))  # the default trust store, here
    async with _tls_server(pki) as port:
        upstream = Upstream(f"https://localhost:{port}/v1")
        try:
            assert await _read_all(upstream) == b"secret"
        finally:
            await upstream.aclose()


async def test_an_https_upstream_with_an_untrusted_certificate_is_never_sent_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_pki(tmp_path / "served")
    trusted = make_pki(tmp_path / "trusted", label="another CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted.ca_cert))
    async with _tls_server(served) as port:
        upstream = Upstream(f"https://localhost:{port}/v1")
        try:
            with pytest.raises(UpstreamConnectError) as failure:
                await _read_all(upstream)
            assert not failure.value.after_headers  # the bridge answers 502 itself
        finally:
            await upstream.aclose()


def _endless(start: bytes, repeated: bytes) -> Script:
    """An upstream that sends ``start``, then ``repeated`` again and again (8 MiB or so), and
    keeps the connection open: only a limit on what it sends can end the answer."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(start)
        with contextlib.suppress(ConnectionError):
            for _ in range((8 << 20) // len(repeated)):
                writer.write(repeated)
                await writer.drain()
            await reader.read()

    return script


@pytest.mark.parametrize(
    ("start", "repeated"),
    [
        (b"HTTP/1.1 200 OK\r\nx-long: ", b"a" * 4096),  # one header that never ends
        (b"HTTP/1.1 200 OK\r\n", b"x-many: b\r\n"),  # headers that never end
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),  # interim answers that never end
    ],
    ids=["long-header", "many-headers", "interim-answers"],
)
async def test_a_head_that_never_ends_fails_before_the_headers(
    start: bytes, repeated: bytes
) -> None:
    # llhttp sets no limit and httptools joins a header's pieces in memory: without the
    # bridge's own limit this answer grows memory until the upstream stops (it does not).
    async with _serving(_endless(start, repeated)) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream)
        assert not failure.value.after_headers  # the bridge answers 502 itself


async def test_trailers_that_never_end_fail_the_body() -> None:
    async with _serving(_endless(SSE_HEAD + b"2\r\nok\r\n0\r\n", b"x-t: b\r\n")) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream)
        assert failure.value.after_headers  # RESET: the body never ended


async def test_trailers_are_neither_headers_nor_body() -> None:
    # All in one read: the trailer is parsed before the caller sees the headers.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"2\r\nok\r\n0\r\nx-trailer: late\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with _serving(script) as upstream, asyncio.timeout(10), upstream.send(REQUEST) as answer:
        assert [name for name, _ in answer.headers] == ["content-type"]
        assert await _body(answer) == b"ok"


async def test_a_body_until_the_close_cut_by_a_reset_fails_after_the_headers() -> None:
    # A body without length or chunking ends with the upstream's close; a TCP reset is a
    # broken connection, not that end: the client must see RESET, not a truncated answer.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with _serving(script) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream)
        assert failure.value.after_headers


async def test_a_body_until_the_close_cut_by_the_bridge_closing_fails_after_the_headers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npartial")
        await writer.drain()
        await reader.read()

    async with _serving(script) as upstream:
        got: list[bytes] = []

        async def read() -> None:
            async with asyncio.timeout(10), upstream.send(REQUEST) as response:

                def take(chunk: bytes) -> bool:
                    got.append(chunk)
                    return False  # so that the drain below runs

                async def shut_down() -> None:
                    await upstream.aclose()  # the bridge shuts down mid-answer

                await response.relay_body(take, shut_down)

        with pytest.raises(UpstreamConnectError) as failure:
            await read()
        assert failure.value.after_headers
        assert got == [b"partial"]


async def test_chunk_framing_spread_over_a_long_body_is_not_a_head_too_large() -> None:
    # The limit is on non-body bytes in a row: 256 KiB of framing (chunk extensions), each
    # piece in its own read between body reads, is an ordinary if verbose body.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        for _ in range(256):
            writer.write(b"1;ext=" + b"e" * 1024 + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.002)
            writer.write(b"x\r\n")
            await writer.drain()
            await asyncio.sleep(0.002)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with _serving(script) as upstream:
        assert await _read_all(upstream) == b"x" * 256


async def test_a_connection_answered_before_its_request_was_written_is_not_reused() -> None:
    # The upstream answers from the head alone and never reads the 32 MiB body (more than the
    # loopback socket buffers hold): the rest of that body would come before the next request.
    serve = _AnswerThenStall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    post = UpstreamRequest("POST", "/v1/completions", (), b"x" * (32 << 20))
    async with _upstream_at(serve) as upstream:
        for _ in range(2):
            async with asyncio.timeout(3), upstream.send(post) as answer:
                assert await _body(answer) == b"ok"
        assert serve.connections == 2


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET /v1/x HTTP/1.1\r\nx-injected: 1\r\n\r\nGET", "/v1/models"),
        ("GET", "/v1/models HTTP/1.1\r\nx-injected: 1"),
        ("GET", "/v1/models\x00"),
        ("GET", "/v1/mo dels"),
    ],
    ids=["method", "target-crlf", "target-nul", "target-space"],
)
async def test_a_request_line_that_would_break_the_request_is_never_written(
    method: str, path: str
) -> None:
    await _never_written(UpstreamRequest(method, path, (), b""))


def test_a_response_header_value_with_cr_or_lf_is_never_forwarded() -> None:
    # llhttp refuses these already; the filter keeps them out of the channel's headers
    # whatever parser sits in front of it.
    forwarded = forward_response_headers(
        [("X-A", "1\r\nx-injected: 1"), ("x-b", "2\rx"), ("x-c", "3\nx"), ("X-D", "ok")]
    )
    assert forwarded == [("x-d", "ok")]


@pytest.mark.parametrize("later", [False, True], ids=["same-read", "while-pooled"])
async def test_bytes_after_a_complete_response_never_reach_the_next_request(later: bool) -> None:
    # A second answer nobody asked for, whole or in part: on a reused connection its rest
    # would be read as the next request's answer. The connection is dropped instead.
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                if first:
                    first = False
                    if later:
                        await writer.drain()
                        await asyncio.sleep(0.1)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.1)
                    writer.write(b"SECRET")  # another request's answer, say
                await writer.drain()
        writer.close()

    async with _upstream_at(serve) as upstream:
        assert await _read_all(upstream) == b"ok"
        await asyncio.sleep(0.15 if later else 0.0)
        assert await _read_all(upstream) == b"ok"
        assert connections == 2


async def test_a_head_answer_has_no_body_whatever_its_length_says() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        await writer.drain()
        await reader.read()  # no body follows, and the connection stays open

    head = UpstreamRequest("HEAD", "/v1/models", (), b"")
    async with _serving(script) as upstream, asyncio.timeout(5), upstream.send(head) as answer:
        assert answer.status == 200
        assert await _body(answer) == b""


async def test_switching_protocols_is_a_broken_upstream() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n"
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        )
        await writer.drain()
        await reader.read()

    async with _serving(script) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream)
        assert not failure.value.after_headers


async def test_an_answer_that_closes_its_connection_is_not_followed_by_another_request() -> None:
    serve = _AnswerThenStall(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")

    async with _upstream_at(serve) as upstream:
        assert await _read_all(upstream) == b"ok"
        async with asyncio.timeout(3):
            assert await _read_all(upstream) == b"ok"
        assert serve.connections == 2


async def test_a_pooled_connection_being_closed_is_not_picked() -> None:
    # The window between a pooled connection's close and its connection_lost (a callback
    # later): a request written there would be dropped with it (502 for the client).
    async def twice(upstream: Upstream) -> None:
        assert await _read_all(upstream) == b"ok"
        upstream._idle[-1].close()  # e.g. the upstream sent bytes nobody asked for
        assert await _read_all(upstream) == b"ok"

    assert await _count_connections(twice) == 2


async def test_a_pool_waiter_woken_then_cancelled_passes_its_turn_on() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    async with _upstream_at(serve, pool_size=1) as upstream:
        async with upstream.send(REQUEST) as answer:
            woken = asyncio.ensure_future(_read_all(upstream))
            waiting = asyncio.ensure_future(_read_all(upstream))
            await asyncio.sleep(0.1)  # both wait for the one connection
            assert await _body(answer) == b"ok"
        # The connection is back and ``woken`` was woken: it is cancelled before it ran.
        woken.cancel()
        async with asyncio.timeout(3):
            assert await waiting == b"ok"


@pytest.mark.parametrize(
    ("answer", "after_headers"),
    [
        (b"content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", False),
        (b"content-length: 3\r\ncontent-length: 5\r\n\r\nabcde", False),
        (b"content-length: 3\r\ncontent-length: 3\r\n\r\nabc", False),
        (b"content-length: -1\r\n\r\nabc", False),
        (b"content-length: 99999999999999999999999\r\n\r\nabc", False),
        (b"transfer-encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc", True),
        (b"transfer-encoding: gzip\r\n\r\nabc", True),  # not chunked, yet framed: no end
        (b"x-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\nok", False),
        (b"content-le", False),  # the connection closes inside the headers
    ],
    ids=[
        "length-and-chunked",
        "two-lengths",
        "the-same-length-twice",
        "negative-length",
        "length-overflow",
        "chunk-size-overflow",
        "transfer-encoding-not-chunked",
        "folded-header",
        "cut-in-the-headers",
    ],
)
async def test_an_ambiguously_framed_answer_is_a_broken_upstream(
    answer: bytes, after_headers: bool
) -> None:
    # Two readings of one answer are how one response's bytes become another's: llhttp's
    # strict mode refuses them, and a lenient parser or flag would fail here.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n" + answer)
        await writer.drain()

    async with _serving(script) as upstream:
        with pytest.raises(UpstreamConnectError) as failure:
            await _read_all(upstream)
        assert failure.value.after_headers is after_headers


async def test_a_connection_lost_before_its_request_fails_at_once() -> None:
    # A reset can be handled between the connect and the request's write; the request must
    # fail then, not wait for a read timeout that is the only thing left to end it.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with _serving(script) as upstream:
        connection = await upstream._connect()
        connection.close()
        await asyncio.sleep(0.05)  # its connection_lost ran
        with pytest.raises(UpstreamConnectError) as failure:
            async with asyncio.timeout(3):
                await connection.request(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
        assert not failure.value.after_headers
