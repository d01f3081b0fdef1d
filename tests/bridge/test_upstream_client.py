"""The bridge's upstream client against raw HTTP/1.1 servers on loopback: every broken answer
ends in an ``UpstreamError`` (never a wait that outlasts the upstream), and a well-formed one
is read to its end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bridge.upstream import (
    UPSTREAM_READ_SIZE,
    Upstream,
    UpstreamConnectError,
    UpstreamRequest,
    limit_read_size,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
REQUEST = UpstreamRequest("GET", "/v1/models", (), b"")


@contextlib.asynccontextmanager
async def _serving(script: Script) -> AsyncIterator[Upstream]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # A read timeout far beyond the tests' own deadlines: only the client's handling of the
    # broken answer, never the timeout, can end a read here.
    upstream = Upstream(f"http://127.0.0.1:{port}/v1", read_timeout=300)
    try:
        yield upstream
    finally:
        await upstream.aclose()
        server.close()


async def _read_all(upstream: Upstream, headers_read: asyncio.Event | None = None) -> bytes:
    async with asyncio.timeout(10), upstream.send(REQUEST) as response:
        if headers_read is not None:
            headers_read.set()
        return b"".join([chunk async for chunk in response.chunks()])


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
    # The guard against a body aiohttp forgets must not fail one whose end is the close.
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
