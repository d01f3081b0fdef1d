"""LlamaIndex's OpenAILike and OpenAI LLMs, sync and async, through a real bridge.

The current llama-index-llms-openai requires openai<3, so these run in the openai-2 venv
(``make unit-openai2``); under openai 3.x pip can only install a 2024 release of it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import shroud_sdk
from tests.integrations.conftest import ECHO, assert_attested

pytest.importorskip(
    "llama_index.llms.openai_like",
    reason="llama-index-llms-openai(-like) is not installed: its current release requires "
    "openai<3, so `make unit-openai2` runs these tests",
)
from llama_index.core.base.llms.types import ChatMessage
from llama_index.llms.openai import OpenAI
from llama_index.llms.openai_like import OpenAILike

_Make = Callable[[shroud_sdk.ShroudClients], "OpenAI | OpenAILike"]


def _ask(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def _openai_like(shroud: shroud_sdk.ShroudClients) -> OpenAILike:
    return OpenAILike(
        model="shroud-demo-echo",
        api_base=shroud.base_url,
        api_key=shroud.api_key,
        http_client=shroud.http_client,
        async_http_client=shroud.async_http_client,
        is_chat_model=True,
        context_window=8192,
        max_retries=0,
    )


def _openai(shroud: shroud_sdk.ShroudClients) -> OpenAI:
    # LlamaIndex's OpenAI class knows only OpenAI's model names; the test upstream answers any.
    return OpenAI(
        model="gpt-4o-mini",
        api_base=shroud.base_url,
        api_key=shroud.api_key,
        http_client=shroud.http_client,
        async_http_client=shroud.async_http_client,
        max_retries=0,
    )


@pytest.mark.parametrize("make", [_openai_like, _openai], ids=["OpenAILike", "OpenAI"])
def test_llamaindex_sync_chat_and_stream(shroud: shroud_sdk.ShroudClients, make: _Make) -> None:
    llm = make(shroud)
    assert llm.chat(_ask("hello LlamaIndex")).message.content == ECHO.format("hello LlamaIndex")
    deltas = [r.delta or "" for r in llm.stream_chat(_ask("stream LlamaIndex"))]
    assert len(deltas) > 2
    assert "".join(deltas) == ECHO.format("stream LlamaIndex")
    assert_attested(shroud, sync=True)


@pytest.mark.parametrize("make", [_openai_like, _openai], ids=["OpenAILike", "OpenAI"])
async def test_llamaindex_async_chat_and_stream(
    ashroud: shroud_sdk.ShroudClients, make: _Make
) -> None:
    llm = make(ashroud)
    answer = await llm.achat(_ask("async LlamaIndex"))
    assert answer.message.content == ECHO.format("async LlamaIndex")
    deltas = [r.delta or "" async for r in await llm.astream_chat(_ask("async stream"))]
    assert len(deltas) > 2
    assert "".join(deltas) == ECHO.format("async stream")
    assert_attested(ashroud, sync=False)
