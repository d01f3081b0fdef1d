"""A response the bridge abandons mid-way (authenticated RESET) through the real ``openai`` client.

The bridge resets a stream when its upstream fails after the response headers went out. Users
of a drop-in ``openai`` client must get an ``openai`` exception that says so
(``StreamResetError``, an ``APIConnectionError``), carrying the RESET code and reason, distinct
from tampering (``StreamIntegrityError``), never retried (the request reached the model), and
never a partial answer that looks complete. Sync and async, streamed and not.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import shroud_sdk
from shroud_sdk.channel.constants import RESET_INTERNAL_ERROR
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.fake_upstream import FakeUpstream

# The fake upstream sends one SSE event ("partial") and then drops its connection.
FAILING_MODEL = "fail-midstream"


def _ask() -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": "this answer will be cut"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def failing_bridge(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    with running_bridge(tmp_path_factory.mktemp("reset"), upstream=upstream.base_url) as b:
        yield b


def _client(bridge: BridgeProcess) -> shroud_sdk.OpenAI:
    # Default max_retries (2): the test shows openai does not retry a reset request.
    return shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=bridge.policy_path)


def _async_client(bridge: BridgeProcess) -> shroud_sdk.AsyncOpenAI:
    return shroud_sdk.AsyncOpenAI(bridge_url=bridge.url, api_key="k", policy=bridge.policy_path)


def _assert_is_a_reset(error: BaseException) -> None:
    assert isinstance(error, shroud_sdk.StreamResetError), repr(error)
    assert isinstance(error, openai.APIConnectionError)
    assert not isinstance(error, shroud_sdk.StreamIntegrityError)  # not tampering
    assert error.reset_code == RESET_INTERNAL_ERROR
    assert "upstream failed mid-response" in error.reason
    assert "incomplete" in str(error)


def test_upstream_failure_mid_stream_raises_stream_reset_error(
    failing_bridge: BridgeProcess, upstream: FakeUpstream
) -> None:
    parts: list[str] = []
    with _client(failing_bridge) as client:
        stream = client.chat.completions.create(model=FAILING_MODEL, messages=_ask(), stream=True)
        with pytest.raises(shroud_sdk.StreamResetError) as info:  # noqa: PT012 (reads the body)
            for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
        _assert_is_a_reset(info.value)
        assert parts == ["partial"]  # what arrived, then an exception: never a clean end
        assert client.last_usage is None  # no END, so no verified usage either
        # The connection itself is fine: the next request reuses the attested session.
        assert client.models.list().data
        assert client.transport.session.handshakes == 1


def test_upstream_failure_without_stream_raises_and_is_not_retried(
    failing_bridge: BridgeProcess, upstream: FakeUpstream
) -> None:
    with _client(failing_bridge) as client:
        before = upstream.requests
        with pytest.raises(shroud_sdk.StreamResetError) as info:
            client.chat.completions.create(model=FAILING_MODEL, messages=_ask())
        _assert_is_a_reset(info.value)
        # The request reached the model: openai's max_retries must not send it again.
        assert upstream.requests == before + 1


async def test_async_upstream_failure_mid_stream_raises_stream_reset_error(
    failing_bridge: BridgeProcess,
) -> None:
    parts: list[str] = []
    async with _async_client(failing_bridge) as client:
        stream = await client.chat.completions.create(
            model=FAILING_MODEL, messages=_ask(), stream=True
        )
        with pytest.raises(shroud_sdk.StreamResetError) as info:  # noqa: PT012 (reads the body)
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
        _assert_is_a_reset(info.value)
        assert parts == ["partial"]
        assert client.last_usage is None


async def test_async_upstream_failure_without_stream_raises_and_is_not_retried(
    failing_bridge: BridgeProcess, upstream: FakeUpstream
) -> None:
    async with _async_client(failing_bridge) as client:
        before = upstream.requests
        with pytest.raises(shroud_sdk.StreamResetError) as info:
            await client.chat.completions.create(model=FAILING_MODEL, messages=_ask())
        _assert_is_a_reset(info.value)
        assert upstream.requests == before + 1


def test_reset_reason_with_control_characters_is_not_printed_raw() -> None:
    # The reason is the bridge's text: authenticated, but still not ours to print raw.
    request = httpx2.Request("GET", "http://127.0.0.1:1/v1/models")
    error = shroud_sdk.StreamResetError(
        code=2, reason="bad\x1b[2Jthing" + "x" * 500, request=request
    )
    assert "\x1b" not in str(error)
    assert len(str(error)) < 300
    assert error.reason.startswith("bad\x1b")  # the original stays available to code
