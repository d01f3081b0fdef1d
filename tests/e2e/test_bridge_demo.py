"""End to end: a real ``python -m bridge`` subprocess (simulated TDX, demo model) on loopback,
driven by the channel core over a real WebSocket with a verifier that really verifies."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from attestation.simulated import SimulatedTdx
from bridge.server import MAX_MESSAGE_SIZE
from shroud_sdk.channel.usage import SignedUsage, Usage, verify_usage
from shroud_sdk.errors import HandshakeError, IntegrityError
from tests.bridgeproc import BridgeProcess
from tests.e2e.client import ChannelClient, chat_body, sse_data

pytestmark = pytest.mark.slow


async def _client(bridge: BridgeProcess, **options: object) -> ChannelClient:
    return await ChannelClient.connect(
        bridge.url,
        audience=bridge.audience,
        root_pem=bridge.root_pem,
        **options,  # type: ignore[arg-type]
    )


async def test_plain_completion_returns_reply_and_signed_usage(demo_bridge: BridgeProcess) -> None:
    client = await _client(demo_bridge)
    try:
        response = await client.request(
            "POST", "/v1/chat/completions", body=chat_body("the secret plan")
        )
    finally:
        await client.close()
    assert response.status == 200
    assert response.ended
    document = response.json()
    assert isinstance(document, dict)
    assert "the secret plan" in document["choices"][0]["message"]["content"]
    assert response.usage is not None
    assert dataclasses.asdict(response.usage.usage) == document["usage"]


async def test_streamed_completion_passes_sse_and_hides_injected_usage_chunk(
    demo_bridge: BridgeProcess,
) -> None:
    client = await _client(demo_bridge)
    try:
        response = await client.request(
            "POST", "/v1/chat/completions", body=chat_body("stream me", stream=True)
        )
    finally:
        await client.close()
    assert response.status == 200
    assert (response.header("content-type") or "").startswith("text/event-stream")
    events = sse_data(response.body)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    # The client did not ask for include_usage: the bridge asked upstream for it (to sign
    # usage) and must not show the extra usage-only chunk.
    assert all(c["choices"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert "stream me" in text
    assert response.usage is not None
    assert response.usage.usage.completion_tokens > 0


async def test_streamed_completion_keeps_usage_chunk_the_client_asked_for(
    demo_bridge: BridgeProcess,
) -> None:
    client = await _client(demo_bridge)
    try:
        body = chat_body("count me", stream=True, stream_options={"include_usage": True})
        response = await client.request("POST", "/v1/chat/completions", body=body)
    finally:
        await client.close()
    usage_chunks = [e for e in sse_data(response.body) if isinstance(e, dict) and e.get("usage")]
    assert len(usage_chunks) == 1
    assert response.usage is not None
    assert dataclasses.asdict(response.usage.usage) == usage_chunks[0]["usage"]


async def test_model_listing(demo_bridge: BridgeProcess) -> None:
    client = await _client(demo_bridge)
    try:
        listing = await client.request("GET", "/v1/models")
        one = await client.request("GET", "/v1/models/shroud-demo-echo")
    finally:
        await client.close()
    assert listing.status == 200
    assert one.status == 200
    document = listing.json()
    assert isinstance(document, dict)
    assert document["data"][0]["id"] == "shroud-demo-echo"


async def test_concurrent_streams_on_one_session(demo_bridge: BridgeProcess) -> None:
    client = await _client(demo_bridge)
    try:
        ids = [
            await client.start("POST", "/v1/chat/completions", body=chat_body(f"request {i}"))
            for i in range(12)
        ]
        responses = await asyncio.gather(*(client.response(sid) for sid in ids))
    finally:
        await client.close()
    for i, response in enumerate(responses):
        assert response.status == 200
        document = response.json()
        assert isinstance(document, dict)
        assert f"request {i}" in document["choices"][0]["message"]["content"]


async def test_many_sessions_at_once(demo_bridge: BridgeProcess) -> None:
    async def one(i: int) -> str:
        client = await _client(demo_bridge)
        try:
            response = await client.request(
                "POST", "/v1/chat/completions", body=chat_body(f"session {i}")
            )
        finally:
            await client.close()
        document = response.json()
        assert isinstance(document, dict)
        content: str = document["choices"][0]["message"]["content"]
        return content

    replies = await asyncio.gather(*(one(i) for i in range(8)))
    assert all(f"session {i}" in reply for i, reply in enumerate(replies))


async def test_usage_signature_verifies_and_fails_when_altered(
    demo_bridge: BridgeProcess,
) -> None:
    client = await _client(demo_bridge)
    try:
        response = await client.request("POST", "/v1/chat/completions", body=chat_body("bill me"))
    finally:
        await client.close()
    signed = response.usage
    assert signed is not None
    key, transcript = client.handshake.usage_key, client.handshake.transcript_hash
    verify_usage(key, transcript, response.stream_id, signed)  # the operator's check passes
    inflated = SignedUsage(
        Usage(
            signed.usage.prompt_tokens,
            signed.usage.completion_tokens + 1,
            signed.usage.total_tokens + 1,
        ),
        signed.signature,
    )
    with pytest.raises(IntegrityError):
        verify_usage(key, transcript, response.stream_id, inflated)
    with pytest.raises(IntegrityError):
        verify_usage(key, transcript, response.stream_id + 2, signed)  # moved to another stream


async def test_disclosed_model_that_differs_from_the_body_is_rejected(
    demo_bridge: BridgeProcess,
) -> None:
    client = await _client(demo_bridge, disclose=frozenset({"model", "max_tokens"}))
    try:
        body = chat_body("hi", max_tokens=5)
        lying = await client.request(
            "POST",
            "/v1/chat/completions",
            body=body,
            disclosed={"model": "cheap-model", "max_tokens": 5},
        )
        hidden_limit = await client.request(
            "POST",
            "/v1/chat/completions",
            body=body,
            disclosed={"model": "shroud-demo-echo", "max_tokens": None},
        )
        honest = await client.request("POST", "/v1/chat/completions", body=body)
    finally:
        await client.close()
    for refused, field in ((lying, "model"), (hidden_limit, "max_tokens")):
        assert refused.status == 400
        error = refused.json()
        assert isinstance(error, dict)
        assert error["error"]["code"] == "disclosure_mismatch"
        assert error["error"]["param"] == field
    assert honest.status == 200


async def test_path_outside_the_allowlist_gets_openai_shaped_404(
    demo_bridge: BridgeProcess,
) -> None:
    client = await _client(demo_bridge)
    try:
        response = await client.request("GET", "/v1/files")
        traversal = await client.request("GET", "/v1/models/../files")
    finally:
        await client.close()
    for refused in (response, traversal):
        assert refused.status == 404
        error = refused.json()
        assert isinstance(error, dict)
        assert error["error"]["code"] == "path_not_allowed"


async def test_oversized_frame_closes_only_that_connection(demo_bridge: BridgeProcess) -> None:
    victim = await _client(demo_bridge)
    bystander = await _client(demo_bridge)
    try:
        await victim.ws.send(b"\x01" * (MAX_MESSAGE_SIZE + 1))
        async with asyncio.timeout(10):
            await victim.connection_done.wait()
        assert victim.ws.close_code == 1009  # message too big, before any decoding
        response = await bystander.request("GET", "/v1/models")
        assert response.status == 200
    finally:
        await victim.close()
        await bystander.close()


async def test_forged_record_closes_only_that_connection(demo_bridge: BridgeProcess) -> None:
    victim = await _client(demo_bridge)
    bystander = await _client(demo_bridge)
    try:
        await victim.ws.send(bytes(64))  # not a record sealed with the session's key
        async with asyncio.timeout(10):
            await victim.connection_done.wait()
        assert victim.ws.close_code in (4002, 4003)
        response = await bystander.request("GET", "/v1/models")
        assert response.status == 200
    finally:
        await victim.close()
        await bystander.close()


async def test_malformed_client_hello_is_refused_with_handshake_code(
    demo_bridge: BridgeProcess,
) -> None:
    async with connect(demo_bridge.url, compression=None) as ws:
        await ws.send(b"\xa1\x61x\x01")  # CBOR, but not a ClientHello
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4001


async def test_wrong_audience_is_refused(demo_bridge: BridgeProcess) -> None:
    with pytest.raises(ConnectionClosed) as caught:
        await ChannelClient.connect(
            demo_bridge.url, audience="other.example", root_pem=demo_bridge.root_pem
        )
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 4001


async def test_evidence_from_an_untrusted_root_is_refused(
    demo_bridge: BridgeProcess,
) -> None:
    stranger = SimulatedTdx.generate(b"another platform", now=int(time.time())).root_pem
    with pytest.raises(HandshakeError, match="verification failed"):
        await ChannelClient.connect(
            demo_bridge.url, audience=demo_bridge.audience, root_pem=stranger
        )


async def test_metrics_count_without_content_or_keys(demo_bridge: BridgeProcess) -> None:
    secret = "zebra-unicorn-4711"
    client = await _client(demo_bridge)
    try:
        await client.request(
            "POST",
            "/v1/chat/completions",
            headers=[("authorization", f"Bearer key-{secret}")],
            body=chat_body(secret),
        )
        await client.request("GET", f"/v1/{secret}")
    finally:
        await client.close()
    async with httpx2.AsyncClient(trust_env=False) as http:
        text = (await http.get(demo_bridge.metrics_url)).text
    assert secret not in text
    assert secret not in demo_bridge.log_text()
    assert 'shroud_bridge_handshakes_total{reason="",result="ok"}' in text
    assert 'path="/v1/chat/completions",status="200"' in text
    assert 'path="other",status="404"' in text


async def test_healthz_answers_plain_http(demo_bridge: BridgeProcess) -> None:
    async with httpx2.AsyncClient(trust_env=False) as http:
        response = await http.get(demo_bridge.health_url)
    assert response.status_code == 200
    assert response.text == "ok\n"


def test_bridge_warns_loudly_about_simulation_and_any_key(demo_bridge: BridgeProcess) -> None:
    log = demo_bridge.log_text()
    assert "SIMULATED TDX QUOTE PROVIDER" in log
    assert "accepts ANY client API key" in log
