"""Each in-channel bound met by a real client against the bridge server in-process: the
unfinished-streams cap, the buffered-bytes budget per session, per source and global, the
request-body timeout, everything freed (without waiting for the garbage collector) when a
session ends, and a stream's task that fails (unexpectedly, by a stray cancellation, or past
what the connection can seal) still telling the client so. The subprocess attacks with memory
measurements are in tests/stress."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from attestation.simulated import SimulatedTdx
from bridge import listener
from bridge.config import parse_args
from bridge.providers.simulated import SimulatedQuoteProvider
from bridge.server import BridgeServer
from bridge.upstream import UpstreamRequest
from shroud_sdk.channel.constants import RESET_INTERNAL_ERROR
from shroud_sdk.channel.records import Limits
from shroud_sdk.errors import RekeyRequiredError
from tests.e2e.client import ChannelClient, Response, chat_body

AUDIENCE = "limits.test.local"
KIB = 1024
PLATFORM = SimulatedTdx.generate(b"server limit tests", now=int(time.time()))


async def _server(*extra: str) -> BridgeServer:
    config = parse_args(
        [
            "--quote-provider",
            "simulated",
            "--listen",
            "127.0.0.1:0",
            "--audience",
            AUDIENCE,
            "--metrics-listen",
            "off",
            "--max-handshakes-per-source",
            "1000",
            *extra,
        ],
        environ={},
    )
    server = BridgeServer(config, quote_provider=SimulatedQuoteProvider(PLATFORM.td()))
    await server.start()
    return server


@pytest.fixture
async def small_budget() -> AsyncIterator[BridgeServer]:
    server = await _server(
        "--max-request-body",
        str(64 * KIB),
        "--max-session-buffered-bytes",
        str(100 * KIB),
        "--max-source-buffered-bytes",
        str(150 * KIB),
        "--max-buffered-bytes",
        str(200 * KIB),
        "--max-unfinished-streams",
        "4",
        "--request-body-timeout",
        "1",
    )
    yield server
    await server.shutdown(grace=1)


async def _client(server: BridgeServer, source: str = "127.0.0.1") -> ChannelClient:
    return await ChannelClient.connect(
        server.url, audience=AUDIENCE, root_pem=PLATFORM.root_pem, local_address=source
    )


def _sample(server: BridgeServer, name: str, labels: dict[str, str] | None = None) -> float:
    assert server.metrics is not None
    return server.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def _held(server: BridgeServer) -> float:
    return _sample(server, "shroud_bridge_buffered_request_bytes")


def _refusal(response: Response) -> tuple[int, str | None, str]:
    document = json.loads(response.body)
    return response.status, response.header("retry-after"), document["error"]["code"]


async def _half_open(client: ChannelClient, size: int) -> int:
    sid = await client.start("POST", "/v1/chat/completions", end=False)
    if size:
        await client.send_body(sid, b"a" * size)
    return sid


async def _barrier(client: ChannelClient) -> None:
    """Records are processed in order: once this is answered, all sent before it was read."""
    await client.request("GET", "/v1/models")


async def test_unfinished_streams_past_the_cap_get_429(small_budget: BridgeServer) -> None:
    client = await _client(small_budget)
    try:
        sids = [await _half_open(client, 0) for _ in range(5)]
        refused = await client.response(sids[4])
        assert _refusal(refused) == (429, "1", "unfinished_streams")
        assert refused.header("x-shroud-overload") == "unfinished_streams"
        for sid in sids[:4]:  # the others are still open, waiting for their bodies
            assert not client._streams[sid].done.is_set()
    finally:
        await client.close()


async def test_a_session_past_its_share_gets_429_and_keeps_the_rest(
    small_budget: BridgeServer,
) -> None:
    client = await _client(small_budget)
    try:
        first = await _half_open(client, 60 * KIB)
        second = await _half_open(client, 60 * KIB)  # 120 KiB > the 100 KiB session share
        refused = await client.response(second)
        assert _refusal(refused) == (429, "1", "session_buffered_bytes")
        await _barrier(client)
        assert 60 * KIB < _held(small_budget) < 70 * KIB  # the refused body was given back
        await client.send_body(first, b"", end=True)
        assert (await client.response(first)).status == 400  # not JSON: reached the checks
        assert _held(small_budget) == 0
    finally:
        await client.close()


async def test_a_source_past_its_share_gets_429_across_its_sessions(
    small_budget: BridgeServer,
) -> None:
    one, two = await _client(small_budget), await _client(small_budget)
    try:
        await _half_open(one, 60 * KIB)
        await _half_open(one, 30 * KIB)
        await _barrier(one)
        refused = await two.response(await _half_open(two, 61 * KIB))  # 151 KiB > 150 KiB
        assert _refusal(refused) == (429, "1", "source_buffered_bytes")
    finally:
        await one.close()
        await two.close()


async def test_the_global_budget_refuses_every_source_with_503(small_budget: BridgeServer) -> None:
    first, second = await _client(small_budget), await _client(small_budget, "127.0.0.2")
    third = await _client(small_budget, "127.0.0.3")
    try:
        for client in (first, second):
            await _half_open(client, 50 * KIB)
            await _half_open(client, 45 * KIB)
            await _barrier(client)
        refused = await third.response(await _half_open(third, 20 * KIB))  # 210 KiB > 200 KiB
        assert _refusal(refused) == (503, "1", "buffered_bytes")
        assert _sample(
            small_budget, "shroud_bridge_overload_refusals_total", {"limit": "buffered_bytes"}
        )
    finally:
        for client in (first, second, third):
            await client.close()


async def test_a_body_that_never_ends_gets_408_and_its_bytes_back(
    small_budget: BridgeServer,
) -> None:
    client = await _client(small_budget)
    try:
        sid = await _half_open(client, 10 * KIB)
        await _barrier(client)
        assert _held(small_budget) > 10 * KIB
        timed_out = await client.response(sid, seconds=10)
        assert timed_out.status == 408
        assert json.loads(timed_out.body)["error"]["code"] == "request_body_timeout"
        assert _held(small_budget) == 0
    finally:
        await client.close()


async def _ends_freed_without_the_collector(
    server: BridgeServer, end: Callable[[ChannelClient], Awaitable[None]]
) -> None:
    """Hold request bytes on a session, ``end`` it, and check that the session and its bytes
    are gone with the garbage collector off: freed when it ends, not at the next collection."""
    gc.collect()
    gc.disable()
    try:
        client = await _client(server)
        for _ in range(3):
            await _half_open(client, 30 * KIB)
        await _barrier(client)
        (session,) = server._sessions
        ended = weakref.ref(session)
        del session
        assert _held(server) > 90 * KIB
        await end(client)
        assert await _until(lambda: ended() is None)
        assert _held(server) == 0
    finally:
        gc.enable()


async def test_a_vanished_client_gives_everything_back_without_the_garbage_collector(
    small_budget: BridgeServer,
) -> None:
    async def vanish(client: ChannelClient) -> None:
        client.ws.transport.abort()  # no CLOSE: the connection just ends
        client._reader.cancel()

    await _ends_freed_without_the_collector(small_budget, vanish)


async def test_a_forged_record_ends_the_session_and_frees_it_without_the_collector(
    small_budget: BridgeServer,
) -> None:
    async def forge(client: ChannelClient) -> None:
        record = client.conn._sealer.seal(2, 1, b"x")  # type: ignore[union-attr]
        await client.ws.send(record[:-1] + bytes([record[-1] ^ 1]))  # authentication fails
        await asyncio.wait_for(client.connection_done.wait(), 10)

    await _ends_freed_without_the_collector(small_budget, forge)


class _FailingOnce:
    """An upstream ``send`` that raises ``error`` the first time, then defers to the real."""

    def __init__(
        self,
        real: Callable[[UpstreamRequest], AbstractAsyncContextManager[Any]],
        error: BaseException,
    ):
        self.real = real
        self.error: BaseException | None = error

    def __call__(self, request: UpstreamRequest) -> AbstractAsyncContextManager[Any]:
        error, self.error = self.error, None
        if error is not None:
            raise error
        return self.real(request)


# A CancelledError the stream's task is handed (a future cancelled inside a library), not a
# cancellation of the task, used to end the stream in silence, as if the client had reset it.
@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (RuntimeError("secret-prompt-in-an-exception"), "failed unexpectedly: RuntimeError"),
        (asyncio.CancelledError("secret-prompt-in-a-cancel"), "ended by a stray cancellation"),
    ],
    ids=["unexpected-failure", "stray-cancellation"],
)
async def test_a_failed_stream_is_reset_and_logs_no_content(
    caplog: pytest.LogCaptureFixture, error: BaseException, logged: str
) -> None:
    server = await _server()
    try:
        assert server._upstream is not None
        server._upstream.send = _FailingOnce(  # type: ignore[method-assign,assignment]
            server._upstream.send, error
        )
        client = await _client(server)
        try:
            with caplog.at_level(logging.INFO):
                failed = await client.request(
                    "POST", "/v1/chat/completions", body=chat_body(), seconds=10
                )
            assert failed.reset is not None  # answered at once, never left hanging
            assert failed.reset.code == RESET_INTERNAL_ERROR
            assert _sample(server, "shroud_bridge_streams_active") == 0
            after = await client.request("POST", "/v1/chat/completions", body=chat_body())
            assert after.status == 200  # the session goes on
        finally:
            await client.close()
    finally:
        await server.shutdown(grace=1)
    assert f"stream 1 {logged}" in caplog.text
    assert "secret-prompt" not in caplog.text


async def test_a_connection_that_cannot_seal_any_more_is_closed_not_left_waiting() -> None:
    # Two records per direction (protocol.md §8): the request's HEADERS and END fit, and so do
    # the answer's HEADERS and first DATA, but not its END, nor a RESET or CLOSE. The stream
    # used to end in silence on an open connection; now the connection ends, and the client
    # learns of it at once.
    server = await _server()
    try:
        context = server._context
        assert context is not None
        context.channel = dataclasses.replace(context.channel, limits=Limits(max_records=2))
        client = await _client(server)
        try:
            response = await client.request("GET", "/v1/models", seconds=10)
            await asyncio.wait_for(client.connection_done.wait(), 10)
            assert not response.ended  # neither END nor RESET could be sealed
            assert response.reset is None
            assert isinstance(client.failure, ConnectionClosed)
            assert client.failure.rcvd is not None
            assert client.failure.rcvd.code == RekeyRequiredError.ws_close_code
            assert await _until(lambda: _sample(server, "shroud_bridge_sessions_active") == 0)
        finally:
            await client.close()
    finally:
        await server.shutdown(grace=1)


async def test_an_oversized_upgrade_request_is_dropped(small_budget: BridgeServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", small_budget.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bridge\r\n")
        for _ in range(12):  # 12 x 3 KiB of headers, never finished
            writer.write(b"X-Pad: " + b"a" * 3072 + b"\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""  # dropped, unanswered
    finally:
        writer.close()
    gate = small_budget._gate
    assert gate is not None
    assert await _until(lambda: gate.admission.open_connections == 0)


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_requests_in_flight_are_bounded_per_source_and_in_all_and_given_back() -> None:
    # Half-open requests hold their place from HEADERS on, like requests being proxied.
    server = await _server(
        "--max-streams", "4", "--max-source-streams", "3", "--max-unfinished-streams", "8"
    )
    one = await _client(server)
    two, three = await _client(server, "127.0.0.2"), await _client(server, "127.0.0.3")
    try:
        for _ in range(3):
            await _half_open(one, 0)
        refused = await one.response(await _half_open(one, 0))
        assert _refusal(refused) == (429, "1", "source_streams")
        second = await _half_open(two, 0)
        await _barrier(one)  # one and two hold 4: the barrier on `one` is refused, but read
        refused = await three.response(await _half_open(three, 0))
        assert _refusal(refused) == (503, "1", "streams")
        await two.reset(second)
        for _ in range(6):  # completed requests give their place back
            assert (await three.request("GET", "/v1/models")).status == 200
        await one.close()
        await _until(lambda: server._context.streams.used == 0)
        for _ in range(3):
            await _half_open(three, 0)
        await _barrier(two)
        assert server._context.streams.used == 3
    finally:
        for client in (one, two, three):
            await client.close()
        await server.shutdown(grace=1)


async def test_refused_connections_linger_only_up_to_their_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener, "REFUSAL_LINGER", 60.0)  # without the bound: all 60 s
    server = await _server("--max-sessions", "1")
    held = await _client(server)
    extra = 40
    # One at a time: a burst past the listen backlog would have the kernel reset some.
    opened = [
        await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(listener.MAX_LINGERING_REFUSALS + extra)
    ]
    gate = server._gate
    assert gate is not None
    try:
        # Well within the handshake timeout (10 s), which would end them all anyway.
        assert await _until(
            lambda: len(gate.connections) <= 1 + listener.MAX_LINGERING_REFUSALS, 3
        ), f"{len(gate.connections)} connections open"
        assert gate.lingering == listener.MAX_LINGERING_REFUSALS
        answers = [await reader.read(1024) for reader, _ in opened[:extra]]
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers)  # every one answered
    finally:
        for _, writer in opened:
            writer.transport.abort()
        await held.close()
        await server.shutdown(grace=1)
    assert await _until(lambda: gate.lingering == 0)
