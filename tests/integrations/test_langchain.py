"""LangChain's ChatOpenAI, sync and async, through a real bridge (docs/frameworks.md recipe)."""

from __future__ import annotations

import pytest

import shroud_sdk
from tests.integrations.conftest import ECHO, assert_attested

pytest.importorskip(
    "langchain_openai", reason="langchain-openai is not installed (make setup installs it)"
)
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

MODEL = "shroud-demo-echo"


def _llm(shroud: shroud_sdk.ShroudClients) -> ChatOpenAI:
    # The recipe: both http clients, and the unroutable base URL.
    return ChatOpenAI(
        model=MODEL,
        base_url=shroud.base_url,
        api_key=SecretStr(shroud.api_key),
        http_client=shroud.http_client,
        http_async_client=shroud.async_http_client,
        max_retries=0,
    )


def test_langchain_sync_chat_and_stream(shroud: shroud_sdk.ShroudClients) -> None:
    llm = _llm(shroud)
    assert llm.invoke("hello from LangChain").content == ECHO.format("hello from LangChain")
    chunks = [str(c.content) for c in llm.stream("streamed from LangChain")]
    assert len(chunks) > 2
    assert "".join(chunks) == ECHO.format("streamed from LangChain")
    assert_attested(shroud, sync=True)


async def test_langchain_async_chat_and_stream(ashroud: shroud_sdk.ShroudClients) -> None:
    llm = _llm(ashroud)
    answer = await llm.ainvoke("async LangChain")
    assert answer.content == ECHO.format("async LangChain")
    chunks = [str(c.content) async for c in llm.astream("async stream")]
    assert len(chunks) > 2
    assert "".join(chunks) == ECHO.format("async stream")
    assert_attested(ashroud, sync=False)
