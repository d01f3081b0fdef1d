"""Hostile request content against a real bridge subprocess: bodies that crash parsers or
parse two ways get a 400 and the stream is answered; nothing a request says (path, query,
prompt) reaches the bridge's output unless the operator asks for an access log."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest

import shroud_sdk
from shroud_sdk.verifier import AttestationVerifier
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient, chat_body
from tests.e2e.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _transport(bridge: BridgeProcess) -> shroud_sdk.ShroudTransport:
    return shroud_sdk.ShroudTransport(
        bridge.url, AttestationVerifier(bridge.policy), allow_simulated=True
    )


def test_fifty_thousand_brackets_get_400_and_the_connection_goes_on(
    demo_bridge: BridgeProcess,
) -> None:
    transport = _transport(demo_bridge)
    with httpx2.Client(transport=transport, timeout=5.0) as http:
        url = transport.base_url + "/chat/completions"
        # Answered within the 5 s read timeout, with an OpenAI-shaped 400 (it used to be a
        # RecursionError in the bridge, no answer and a leaked stream slot).
        response = http.post(url, content=b"[" * 50_000)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request_body"
        assert "nests too deeply" in response.json()["error"]["message"]
        again = http.post(url, content=chat_body("after the attack"))
        assert again.status_code == 200
    assert demo_bridge.metric("shroud_bridge_streams_active") == 0


async def test_a_duplicated_disclosed_key_gets_400(demo_bridge: BridgeProcess) -> None:
    client = await ChannelClient.connect(
        demo_bridge.url,
        audience=demo_bridge.audience,
        root_pem=demo_bridge.root_pem,
        disclose=frozenset({"max_tokens"}),
    )
    try:
        # Disclosed (and checked against the last occurrence): 2. Run by an upstream that
        # keeps the first occurrence: 100000.
        body = (
            b'{"model":"shroud-demo-echo","max_tokens":100000,'
            b'"messages":[{"role":"user","content":"hi"}],"max_tokens":2}'
        )
        response = await client.request(
            "POST", "/v1/chat/completions", body=body, disclosed={"max_tokens": 2}
        )
        assert response.status == 400
        error = json.loads(response.body)["error"]
        assert error["code"] == "invalid_request_body"
        assert "repeats a key" in error["message"]
    finally:
        await client.close()


# -- what the bridge writes to its output ------------------------------------------------------


async def _exercise(bridge: BridgeProcess, marker: str) -> None:
    """Requests whose path, query and prompt carry ``marker``: answered, refused, failed."""
    async with shroud_sdk.AsyncOpenAI(
        bridge_url=bridge.url, api_key=f"key-{marker}", policy=bridge.policy_path, max_retries=0
    ) as client:
        reply = await client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": f"prompt-{marker}"}],
            extra_query={"q": f"query-{marker}"},
        )
        assert reply is not None
        with pytest.raises(openai.NotFoundError):  # a path outside the allowlist
            await client.get(f"/not-allowed-{marker}?q=query-{marker}", cast_to=object)
        deep = await client._client.post(  # a body the bridge cannot check: 400
            f"{client.transport.base_url}/chat/completions?q=query-{marker}",
            content=b"[" * 5000,
        )
        assert deep.status_code == 400
        with pytest.raises(openai.APIStatusError):  # the upstream too slow: 504
            await client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": f"prompt-{marker}"}]
            )
        # The upstream breaks its answer: RESET when the break comes after the headers were
        # read, 502 when the same read brought both (either way never a truncated answer).
        with pytest.raises((openai.APIConnectionError, openai.InternalServerError)):
            await client.models.retrieve(f"model-{marker}")


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_no_path_query_or_prompt_reaches_the_bridge_output(
    upstream: FakeUpstream, tmp_path: Path, level: str
) -> None:
    marker = secrets.token_hex(6)
    args = ["--upstream-read-timeout", "1"]
    env = {"SHROUD_BRIDGE_LOG_LEVEL": level}
    with running_bridge(tmp_path, upstream=upstream.base_url, args=args, env=env) as bridge:
        await _exercise(bridge, marker)
        bridge.terminate()
        output = bridge.log_text()
    assert "upstream request failed" in output  # the failures were logged...
    assert marker not in output  # ...without the path, query, prompt or key


async def test_the_access_log_is_an_explicit_opt_in(upstream: FakeUpstream, tmp_path: Path) -> None:
    marker = secrets.token_hex(6)
    args = ["--upstream-read-timeout", "1", "--log-request-paths"]
    with running_bridge(tmp_path, upstream=upstream.base_url, args=args) as bridge:
        await _exercise(bridge, marker)
        bridge.terminate()
        output = bridge.log_text()
    assert f"query-{marker}" in output  # paths and queries, when asked for...
    assert f"prompt-{marker}" not in output  # ...and never bodies or keys
    assert f"key-{marker}" not in output
