"""LiteLLM as a client (``litellm.completion`` / ``acompletion``), through a real bridge.

LiteLLM takes an ``openai`` client per call (``client=``); handed ours, every request is
attested and encrypted. It runs in both the openai-3 and the openai-2 venvs.
"""

from __future__ import annotations

from typing import Any

import pytest

import shroud_sdk
from tests.integrations.conftest import ECHO, assert_attested

pytest.importorskip("litellm", reason="litellm is not installed (make setup installs it)")
import litellm


def _ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_litellm_sync_chat_and_stream(shroud: shroud_sdk.ShroudClients) -> None:
    options: dict[str, Any] = {
        "model": "openai/shroud-demo-echo",
        "api_base": shroud.base_url,
        "api_key": shroud.api_key,
        "client": shroud.openai,
    }
    answer = litellm.completion(messages=_ask("hello LiteLLM"), **options)
    assert answer.choices[0].message.content == ECHO.format("hello LiteLLM")
    chunks = litellm.completion(messages=_ask("stream LiteLLM"), stream=True, **options)
    deltas = [c.choices[0].delta.content or "" for c in chunks]
    assert "".join(deltas) == ECHO.format("stream LiteLLM")
    assert_attested(shroud, sync=True)


async def test_litellm_async_chat_and_stream(ashroud: shroud_sdk.ShroudClients) -> None:
    options: dict[str, Any] = {
        "model": "openai/shroud-demo-echo",
        "api_base": ashroud.base_url,
        "api_key": ashroud.api_key,
        "client": ashroud.async_openai,
    }
    answer = await litellm.acompletion(messages=_ask("async LiteLLM"), **options)
    assert answer.choices[0].message.content == ECHO.format("async LiteLLM")
    chunks = await litellm.acompletion(messages=_ask("async stream"), stream=True, **options)
    deltas = [c.choices[0].delta.content or "" async for c in chunks]
    assert "".join(deltas) == ECHO.format("async stream")
    assert_attested(ashroud, sync=False)
