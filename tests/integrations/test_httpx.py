"""Plain httpx and httpx2 clients on Shroud transports: chat and SSE stream, sync and async.

The lowest layer any framework builds on: ``httpx.Client(transport=...)`` with the
transport's ``base_url``, as docs/frameworks.md shows for code that speaks HTTP itself.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import pytest

import shroud_sdk
from attestation.policy import Policy
from tests.bridgeproc import BridgeProcess
from tests.integrations.conftest import API_KEY, ECHO

FLAVOURS = {
    "httpx": (httpx, shroud_sdk.LegacyShroudTransport, shroud_sdk.AsyncLegacyShroudTransport),
    "httpx2": (httpx2, shroud_sdk.ShroudTransport, shroud_sdk.AsyncShroudTransport),
}


def _body(text: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "shroud-demo-echo",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }


def _sse_text(lines: list[str]) -> str:
    text: list[str] = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            delta = json.loads(line[6:])["choices"]
            text.extend(c["delta"].get("content") or "" for c in delta)
    return "".join(text)


@pytest.mark.parametrize("name", FLAVOURS)
def test_plain_http_client_chat_and_stream(bridge: BridgeProcess, name: str) -> None:
    module, transport_cls, _ = FLAVOURS[name]
    transport = transport_cls(
        bridge.url, shroud_sdk.AttestationVerifier(Policy.load(bridge.policy_path))
    )
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with module.Client(transport=transport, base_url=transport.base_url, headers=headers) as http:
        answer = http.post("/chat/completions", json=_body("plain http"))
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == ECHO.format("plain http")
        with http.stream("POST", "/chat/completions", json=_body("sse", stream=True)) as streamed:
            lines = list(streamed.iter_lines())
        assert lines[-1] == "data: [DONE]" or lines[-2:] == ["data: [DONE]", ""]
        assert _sse_text(lines) == ECHO.format("sse")
        assert transport.attestation is not None
        assert transport.session.handshakes == 1


@pytest.mark.parametrize("name", FLAVOURS)
async def test_plain_async_http_client_chat_and_stream(bridge: BridgeProcess, name: str) -> None:
    module, _, transport_cls = FLAVOURS[name]
    transport = transport_cls(
        bridge.url, shroud_sdk.AttestationVerifier(Policy.load(bridge.policy_path))
    )
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with module.AsyncClient(
        transport=transport, base_url=transport.base_url, headers=headers
    ) as http:
        answer = await http.post("/chat/completions", json=_body("async http"))
        assert answer.json()["choices"][0]["message"]["content"] == ECHO.format("async http")
        async with http.stream(
            "POST", "/chat/completions", json=_body("async sse", stream=True)
        ) as s:
            lines = [line async for line in s.aiter_lines()]
        assert _sse_text(lines) == ECHO.format("async sse")
        assert transport.session.handshakes == 1
