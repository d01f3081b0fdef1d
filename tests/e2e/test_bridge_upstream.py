"""End to end against a scriptable upstream: API keys, header hygiene, limits, timeouts,
failures mid-stream and cancellation, with the bridge as a real subprocess."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from shroud_sdk.channel.constants import RESET_INTERNAL_ERROR
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient, Response, chat_body, sse_data
from tests.e2e.fake_upstream import USAGE, FakeUpstream

pytestmark = pytest.mark.slow

API_KEY = "sk-test-0123456789abcdef"
OTHER_KEY = "sk-test-fedcba9876543210"
AUTH = [("authorization", f"Bearer {API_KEY}")]
MAX_BODY = 4096
MAX_STREAMS = 3


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def bridge(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    args = [
        "--upstream-read-timeout",
        "2",
        "--max-request-body",
        str(MAX_BODY),
        "--max-streams-per-session",
        str(MAX_STREAMS),
        "--disclose-allowed",
        "model",
        "--disclose-allowed",
        "max_tokens",
    ]
    # Keys through the environment, as the docs recommend (argv is public).
    env = {"SHROUD_BRIDGE_API_KEYS": f"{API_KEY},{OTHER_KEY}"}
    with running_bridge(
        tmp_path_factory.mktemp("upstream-bridge"),
        upstream=upstream.base_url,
        args=args,
        env=env,
    ) as process:
        yield process


async def _client(bridge: BridgeProcess, **options: object) -> ChannelClient:
    return await ChannelClient.connect(
        bridge.url,
        audience=bridge.audience,
        root_pem=bridge.root_pem,
        **options,  # type: ignore[arg-type]
    )


def _error_code(body: bytes) -> str:
    document = json.loads(body)
    assert set(document["error"]) == {"message", "type", "param", "code"}
    code: str = document["error"]["code"]
    return code


async def _request_once(
    bridge: BridgeProcess, method: str, path: str, *, headers: list[tuple[str, str]], body: bytes
) -> Response:
    """One request on a connection of its own, closed afterwards; the response."""
    client = await _client(bridge)
    try:
        return await client.request(method, path, headers=headers, body=body)
    finally:
        await client.close()


async def test_missing_or_wrong_api_key_gets_401(bridge: BridgeProcess) -> None:
    client = await _client(bridge)
    try:
        missing = await client.request("POST", "/v1/chat/completions", body=chat_body(model="echo"))
        wrong = await client.request(
            "POST",
            "/v1/chat/completions",
            headers=[("authorization", "Bearer sk-test-not-a-valid-key-00")],
            body=chat_body(model="echo"),
        )
        prefix = await client.request(
            "POST",
            "/v1/chat/completions",
            headers=[("authorization", f"Bearer {API_KEY[:-1]}")],
            body=chat_body(model="echo"),
        )
        right = await client.request(
            "POST",
            "/v1/chat/completions",
            headers=[("authorization", f"Bearer {OTHER_KEY}")],
            body=chat_body(model="echo"),
        )
    finally:
        await client.close()
    for refused in (missing, wrong, prefix):
        assert refused.status == 401
        assert _error_code(refused.body) == "invalid_api_key"
    assert right.status == 200


async def test_client_key_and_hop_by_hop_headers_are_not_forwarded(
    bridge: BridgeProcess,
) -> None:
    response = await _request_once(
        bridge,
        "POST",
        "/v1/chat/completions",
        headers=[
            *AUTH,
            ("connection", "keep-alive, x-secret"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("accept-encoding", "gzip"),
            ("x-request-tag", "kept"),
        ],
        body=chat_body(model="echo"),
    )
    document = response.json()
    assert isinstance(document, dict)
    received = document["received_headers"]
    assert "authorization" not in received
    assert "proxy-authorization" not in received
    assert received.get("accept-encoding") == "identity"  # no compression before encryption
    assert received.get("x-request-tag") == "kept"
    assert response.header("x-upstream") == "fake"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT"])
async def test_trace_and_connect_are_never_forwarded(bridge: BridgeProcess, method: str) -> None:
    # The fake upstream echoes the headers it received, as a TRACE answer does: forwarded, the
    # bridge's own upstream credentials would reach the client.
    response = await _request_once(
        bridge, method, "/v1/chat/completions", headers=AUTH, body=chat_body(model="echo")
    )
    assert response.status == 405
    assert _error_code(response.body) == "method_not_allowed"
    assert b"received_headers" not in response.body


async def test_disclosed_max_tokens_bounds_the_upstream_request(bridge: BridgeProcess) -> None:
    client = await _client(bridge, disclose=frozenset({"model", "max_tokens"}))
    try:
        response = await client.request(
            "POST",
            "/v1/chat/completions",
            headers=AUTH,
            body=chat_body(model="echo", max_tokens=5, max_completion_tokens=500),
        )
    finally:
        await client.close()
    assert response.status == 200
    document = response.json()
    assert isinstance(document, dict)
    assert document["received_body"]["max_tokens"] == 5
    # vLLM prefers max_completion_tokens: it must not exceed what was disclosed.
    assert document["received_body"]["max_completion_tokens"] == 5


async def test_disclosure_set_beyond_the_operator_rules_is_refused(bridge: BridgeProcess) -> None:
    with pytest.raises(ConnectionClosed) as caught:
        await _client(bridge, disclose=frozenset({"stream"}))
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 1008
    assert caught.value.rcvd.reason == "disclosure refused: required= allowed=max_tokens,model"


async def test_oversized_body_gets_413(bridge: BridgeProcess) -> None:
    client = await _client(bridge)
    try:
        sid = await client.start("POST", "/v1/chat/completions", headers=AUTH, end=False)
        for _ in range(3):
            await client.send_body(sid, b"x" * 2000)
        response = await client.response(sid)
        assert response.status == 413
        assert _error_code(response.body) == "request_too_large"
        await client.send_body(sid, b"more", end=True)  # dropped, not an error
        after = await client.request("GET", "/v1/models", headers=AUTH)
        assert after.status == 200  # the connection survived
    finally:
        await client.close()


# Before any response header the bridge answers itself: too slow is 504; a status that passes
# the HTTP parser but that no HTTP server may send (600; the channel carries 100..599 only)
# is 502; it used to be refused by the core and dropped without a word to the client.
@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("slow", 504, "upstream_timeout"),
        ("bad-status", 502, "upstream_unavailable"),
        ("long-header", 502, "upstream_unavailable"),
        ("large-head", 502, "upstream_unavailable"),
    ],
)
async def test_an_upstream_failing_before_its_headers_gets_the_bridge_answer(
    bridge: BridgeProcess, model: str, status: int, code: str
) -> None:
    response = await _request_once(
        bridge, "POST", "/v1/chat/completions", headers=AUTH, body=chat_body(model=model)
    )
    assert response.status == status
    assert _error_code(response.body) == code


async def test_upstream_failing_midstream_resets_the_stream(bridge: BridgeProcess) -> None:
    response = await _request_once(
        bridge,
        "POST",
        "/v1/chat/completions",
        headers=AUTH,
        body=chat_body(model="fail-midstream", stream=True),
    )
    assert response.status == 200
    assert b"partial" in response.body
    # Not a silent truncation: the stream ends with RESET, never END.
    assert response.reset is not None
    assert not response.ended


async def test_a_malformed_chunk_after_the_headers_resets_the_stream(
    bridge: BridgeProcess, upstream: FakeUpstream
) -> None:
    # The break arrives in a later read than the headers. (aiohttp's C parser, the bridge's
    # client before, then failed the connection but never the response body, and stopped the
    # read timeout too: the bridge waited on that body forever, the client with it.)
    upstream.bad_chunk_release.clear()
    client = await _client(bridge)
    try:
        sid = await client.start(
            "POST",
            "/v1/chat/completions",
            headers=AUTH,
            body=chat_body(model="bad-chunk", stream=True),
        )
        assert b"partial" in await client.first_chunk(sid)
        upstream.bad_chunk_release.set()
        response = await client.response(sid, seconds=15)
        assert response.reset is not None  # not a silent truncation, and not a hang
        assert response.reset.code == RESET_INTERNAL_ERROR
        assert not response.ended
        after = await client.request(
            "POST", "/v1/chat/completions", headers=AUTH, body=chat_body(model="echo")
        )
        assert after.status == 200  # the session goes on
    finally:
        upstream.bad_chunk_release.set()
        await client.close()


async def test_streamed_sse_bytes_pass_through_unchanged(bridge: BridgeProcess) -> None:
    response = await _request_once(
        bridge,
        "POST",
        "/v1/chat/completions",
        headers=AUTH,
        body=chat_body(model="stream", stream=True),
    )
    expected = b"".join(
        b"data: " + json.dumps({"choices": [{"delta": {"content": w}}]}).encode() + b"\n\n"
        for w in ("one", " two", " three")
    )
    assert response.body == expected + b"data: [DONE]\n\n"
    assert sse_data(response.body)[-1] == "[DONE]"
    assert response.usage is not None
    assert response.usage.usage.total_tokens == USAGE["total_tokens"]


# "endless" streams until the bridge lets go; "stall" sends nothing after its first event, so
# only an explicit cancellation (not a failed write) ends it, and well before the 2 s upstream
# read timeout.
@pytest.mark.parametrize(("model", "within"), [("endless", 10.0), ("stall", 1.5)])
async def test_client_reset_cancels_the_upstream_request(
    bridge: BridgeProcess, upstream: FakeUpstream, model: str, within: float
) -> None:
    disconnected = {
        "endless": upstream.endless_disconnected,
        "stall": upstream.stall_disconnected,
    }[model]
    disconnected.clear()
    client = await _client(bridge)
    try:
        sid = await client.start(
            "POST", "/v1/chat/completions", headers=AUTH, body=chat_body(model=model)
        )
        await client.first_chunk(sid)
        await client.reset(sid)
        assert await asyncio.to_thread(disconnected.wait, within)
    finally:
        await client.close()


async def test_client_disconnect_cancels_the_upstream_request(
    bridge: BridgeProcess, upstream: FakeUpstream
) -> None:
    upstream.stall_disconnected.clear()
    client = await _client(bridge)
    sid = await client.start(
        "POST", "/v1/chat/completions", headers=AUTH, body=chat_body(model="stall")
    )
    await client.first_chunk(sid)
    client.ws.transport.abort()  # the client vanishes: no CLOSE, no WebSocket close
    # Well before the 2 s upstream read timeout, with no write that could fail first.
    assert await asyncio.to_thread(upstream.stall_disconnected.wait, 1.5)
    await client.close()


async def test_streams_over_the_session_cap_get_429_with_retry_after(
    bridge: BridgeProcess,
) -> None:
    client = await _client(bridge)
    try:
        running = [
            await client.start(
                "POST", "/v1/chat/completions", headers=AUTH, body=chat_body(model="endless")
            )
            for _ in range(MAX_STREAMS)
        ]
        for sid in running:
            await client.first_chunk(sid)
        refused = await client.request(
            "POST", "/v1/chat/completions", headers=AUTH, body=chat_body(model="echo")
        )
        assert refused.status == 429
        assert refused.header("retry-after") == "1"
        for sid in running:
            await client.reset(sid)
        await asyncio.sleep(0.2)
        again = await client.request(
            "POST", "/v1/chat/completions", headers=AUTH, body=chat_body(model="echo")
        )
        assert again.status == 200
    finally:
        await client.close()
