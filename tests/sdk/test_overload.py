"""Overload through the real SDK: typed errors that subclass the openai class a user catches,
``Retry-After`` honoured by openai's own retries, bodies refused before anything is sent, and
the SDK's own buffering bounded when the application stops reading.

Each bound is met for real: an in-process bridge (production server and session code on
127.0.0.1) configured with a small limit, and a real ``shroud_sdk.OpenAI`` client.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import shroud_sdk
from attestation.policy import Policy
from bridge.providers.simulated import SimulatedQuoteProvider
from shroud_sdk.refusals import OverloadLimit
from shroud_sdk.session import STREAM_BUFFER_RECORDS
from shroud_sdk.verifier import AttestationVerifier
from tests.e2e.fake_upstream import FakeUpstream
from tests.sdk.harness import AUDIENCE, ThreadBridge, thread_bridge

MODEL = "shroud-demo-echo"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def _client(bridge: ThreadBridge, **options: Any) -> shroud_sdk.OpenAI:
    settings: dict[str, Any] = {"policy": bridge.policy, **options}
    return shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", audience=AUDIENCE, **settings)


def _async_client(bridge: ThreadBridge) -> shroud_sdk.AsyncOpenAI:
    return shroud_sdk.AsyncOpenAI(
        bridge_url=bridge.url, api_key="k", policy=bridge.policy, audience=AUDIENCE, max_retries=0
    )


def _refusals(bridge: ThreadBridge, limit: OverloadLimit) -> float:
    assert bridge.server is not None
    assert bridge.server.metrics is not None
    value = bridge.server.metrics.registry.get_sample_value(
        "shroud_bridge_overload_refusals_total", {"limit": limit.value}
    )
    return value or 0.0


def _error_count(bridge: ThreadBridge, kind: str) -> float:
    assert bridge.server is not None
    assert bridge.server.metrics is not None
    value = bridge.server.metrics.registry.get_sample_value(
        "shroud_bridge_errors_total", {"kind": kind}
    )
    return value or 0.0


@pytest.fixture
def one_session_bridge(tmp_path: Path) -> Iterator[ThreadBridge]:
    with thread_bridge(tmp_path / "bridge", args=["--max-sessions", "1"]) as bridge:
        yield bridge


def test_a_full_bridge_is_a_typed_busy_error_not_a_bare_connection_error(
    one_session_bridge: ThreadBridge,
) -> None:
    with socket.create_connection(("127.0.0.1", one_session_bridge.port)):  # the one session
        time.sleep(0.2)  # let the bridge accept it
        with (
            _client(one_session_bridge, max_retries=0) as client,
            pytest.raises(shroud_sdk.BridgeBusyError) as caught,
        ):
            client.chat.completions.create(model=MODEL, messages=HELLO)
    error = caught.value
    assert isinstance(error, openai.InternalServerError)  # what a user catches for a 503
    assert isinstance(error, shroud_sdk.OverloadError)
    assert (error.status_code, error.limit, error.retry_after) == (503, OverloadLimit.SESSIONS, 1)
    assert error.code == "sessions"
    assert error.response.headers["retry-after"] == "1"
    assert not error.authenticated  # refused before any key was agreed
    assert "as many open connections as it accepts" in str(error)
    assert _refusals(one_session_bridge, OverloadLimit.SESSIONS) == 1


def test_openai_retries_a_full_bridge_after_its_retry_after(
    one_session_bridge: ThreadBridge,
) -> None:
    holder = socket.create_connection(("127.0.0.1", one_session_bridge.port))
    time.sleep(0.2)
    threading.Timer(0.3, holder.close).start()  # the session ends while the client waits
    started = time.monotonic()
    with _client(one_session_bridge, max_retries=2) as client:
        reply = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert "hello" in (reply.choices[0].message.content or "")
    assert _refusals(one_session_bridge, OverloadLimit.SESSIONS) >= 1
    # openai waited the bridge's Retry-After (1 s), not its own 0.5 s first backoff.
    assert time.monotonic() - started >= 0.9


def test_a_bridge_full_through_every_retry_is_still_a_typed_busy_error(
    one_session_bridge: ThreadBridge,
) -> None:
    """openai retries the refusal (waiting its Retry-After) and, its retries used up, raises
    the typed class: on every openai major, through the SDK client's request wrapper."""
    with socket.create_connection(("127.0.0.1", one_session_bridge.port)):  # the one session
        time.sleep(0.2)  # let the bridge accept it
        started = time.monotonic()
        with (
            _client(one_session_bridge, max_retries=1) as client,
            pytest.raises(shroud_sdk.BridgeBusyError) as caught,
        ):
            client.chat.completions.create(model=MODEL, messages=HELLO)
        elapsed = time.monotonic() - started
    assert caught.value.limit is OverloadLimit.SESSIONS
    assert _refusals(one_session_bridge, OverloadLimit.SESSIONS) == 2  # the try and one retry
    assert elapsed >= 0.9  # the retry waited the bridge's Retry-After (1 s)


def test_a_source_opening_connections_too_fast_gets_a_typed_rate_limit(tmp_path: Path) -> None:
    args = ["--max-handshakes-per-source", "0.05"]
    with thread_bridge(tmp_path / "bridge", args=args) as bridge:
        with _client(bridge, max_retries=0) as first:
            first.models.list()
        with (
            _client(bridge, max_retries=0) as second,
            pytest.raises(shroud_sdk.BridgeRateLimitError) as caught,
        ):
            second.models.list()
    error = caught.value
    assert isinstance(error, openai.RateLimitError)
    assert error.limit is OverloadLimit.HANDSHAKES_PER_SOURCE
    assert 1 <= error.retry_after <= 20
    assert second.transport.session.handshakes == 0  # refused at the upgrade: no hello sent


class _SlowQuotes(SimulatedQuoteProvider):
    """Quotes that take a while, so one handshake holds the only slot."""

    started = threading.Event()

    def get_quote(self, report_data: bytes) -> bytes:
        type(self).started.set()
        time.sleep(1.5)
        return super().get_quote(report_data)


def test_busy_handshake_slots_close_with_1013_and_become_a_typed_error(tmp_path: Path) -> None:
    args = ["--max-concurrent-handshakes", "1"]
    with thread_bridge(tmp_path / "bridge", provider_cls=_SlowQuotes, args=args) as bridge:
        # A policy asking for a quote per handshake: those take the bridge's handshake slots.
        data = bridge.policy.model_dump(exclude={"custom_checks"})
        fresh = Policy(**{**data, "fresh_quote": True})
        first = _client(bridge, max_retries=0, policy=fresh)
        second = _client(bridge, max_retries=0, policy=fresh)
        with first, second:
            _SlowQuotes.started.clear()  # the bridge's own attested key was quoted at start
            background = threading.Thread(target=first.models.list)
            background.start()
            assert _SlowQuotes.started.wait(10)
            with pytest.raises(shroud_sdk.BridgeBusyError) as caught:
                second.models.list()
            background.join(10)
    assert caught.value.limit is OverloadLimit.HANDSHAKE_CAPACITY
    assert not caught.value.authenticated


def test_a_refused_fresh_quote_is_its_own_typed_error_and_not_retried(tmp_path: Path) -> None:
    """Both 1013 refusals in one place: the fresh-quote limit ("fresh quote rate limit: ...")
    is ``FreshQuoteRateLimitedError``, not an overload, and openai does not retry it (on every
    openai major: before 2.31 the SDK's client keeps openai from retrying it)."""
    with thread_bridge(tmp_path / "bridge", args=["--fresh-quotes-per-minute", "0"]) as bridge:
        data = bridge.policy.model_dump(exclude={"custom_checks"})
        fresh = Policy(**{**data, "fresh_quote": True})
        with (
            _client(bridge, policy=fresh) as client,  # default max_retries (2)
            pytest.raises(openai.APIConnectionError) as caught,
        ):
            client.models.list()
    error = caught.value
    assert isinstance(error, shroud_sdk.FreshQuoteRateLimitedError), repr(error)
    assert error.retry_after is not None
    assert client.transport.session.handshakes == 1  # one hello: not retried


async def test_too_many_streams_on_one_connection_is_an_authenticated_rate_limit(
    tmp_path: Path,
) -> None:
    with FakeUpstream() as upstream:
        args = ["--max-streams-per-session", "1", "--upstream", upstream.base_url]
        with thread_bridge(tmp_path / "bridge", args=args) as bridge:
            async with _async_client(bridge) as client:
                held = await client.chat.completions.create(
                    model="stall", messages=HELLO, stream=True
                )
                with pytest.raises(shroud_sdk.BridgeRateLimitError) as caught:
                    await client.chat.completions.create(model="echo", messages=HELLO)
                await held.close()
    error = caught.value
    assert error.limit is OverloadLimit.STREAMS_PER_SESSION
    assert error.authenticated  # answered inside the attested channel
    assert error.code == "streams_per_session"


def test_an_ambiguous_body_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with thread_bridge(tmp_path / "bridge") as bridge:
        transport = shroud_sdk.ShroudTransport(
            bridge.url,
            AttestationVerifier(bridge.policy),
            allow_simulated=True,
            disclose=["max_tokens"],
            audience=AUDIENCE,
        )
        with httpx2.Client(transport=transport) as http:
            url = transport.base_url + "/chat/completions"
            duplicated = b'{"model":"m","max_tokens":100000,"max_tokens":2}'
            with pytest.raises(shroud_sdk.InvalidRequestBodyError) as caught:
                http.post(url, content=duplicated)
            assert caught.value.code == "duplicate_key"
            with pytest.raises(shroud_sdk.InvalidRequestBodyError) as caught:
                http.post(url, content=b"[" * 50_000)
            assert caught.value.code == "too_deep"
            assert isinstance(caught.value, ValueError)
        assert transport.session.handshakes == 0  # nothing left the process


async def test_the_sdk_stops_reading_when_the_application_does(tmp_path: Path) -> None:
    """An unread response stays in the network, not in the SDK: at most STREAM_BUFFER_RECORDS
    records wait for the application; the bridge then meets its send timeout and drops the
    connection, and the application, resuming, gets a typed error instead of a truncation."""
    with FakeUpstream() as upstream:
        args = ["--upstream", upstream.base_url, "--send-timeout", "1"]
        with thread_bridge(tmp_path / "bridge", args=args) as bridge:
            async with _async_client(bridge) as client:
                stream = await client.chat.completions.create(
                    model="flood", messages=HELLO, stream=True
                )
                chunks = aiter(stream)
                await anext(chunks)
                deadline = time.monotonic() + 30
                while _error_count(bridge, "send_timeout") == 0 and time.monotonic() < deadline:
                    link = client.transport.session._link
                    assert link is not None
                    held = max((len(inbox) for inbox in link.streams.values()), default=0)
                    assert held <= STREAM_BUFFER_RECORDS
                    await asyncio.sleep(0.1)
                assert _error_count(bridge, "send_timeout") == 1
                with pytest.raises(openai.APIConnectionError):
                    async for _ in chunks:
                        pass


def test_the_sync_sdk_stops_reading_when_the_application_does(tmp_path: Path) -> None:
    """The same bound for the sync client, which reads on the caller's thread: records the
    application holds in a batch count as unread, and the loop's reader stops at the bound."""
    with FakeUpstream() as upstream:
        args = ["--upstream", upstream.base_url, "--send-timeout", "1"]
        with (
            thread_bridge(tmp_path / "bridge", args=args) as bridge,
            _client(bridge, max_retries=0) as client,
        ):
            stream = client.chat.completions.create(model="flood", messages=HELLO, stream=True)
            chunks = iter(stream)
            next(chunks)
            deadline = time.monotonic() + 30
            while _error_count(bridge, "send_timeout") == 0 and time.monotonic() < deadline:
                link = client.transport.session.async_session._link
                assert link is not None
                held = max((len(inbox) for inbox in list(link.streams.values())), default=0)
                assert held <= STREAM_BUFFER_RECORDS
                time.sleep(0.1)
            assert _error_count(bridge, "send_timeout") == 1
            with pytest.raises(openai.APIConnectionError):
                for _ in chunks:
                    pass
