"""pydantic-ai's OpenAI chat model, through a real bridge.

pydantic-ai is async inside (``run_sync`` drives the same code on an event loop of its own),
so it takes the async Shroud client. The current pydantic-ai-slim[openai] requires
openai>=3.31, so these run in the openai-3 venv.
"""

from __future__ import annotations

import asyncio

import pytest

import shroud_sdk
from tests.integrations.conftest import ECHO, assert_attested

pytest.importorskip(
    "pydantic_ai.models.openai",
    reason="pydantic-ai-slim[openai] is not installed: its current release requires "
    "openai>=3.31, so `make unit` runs these tests",
)
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider


def _agent(shroud: shroud_sdk.ShroudClients) -> Agent[None, str]:
    model = OpenAIChatModel(
        "shroud-demo-echo", provider=OpenAIProvider(openai_client=shroud.async_openai)
    )
    return Agent(model)


async def test_pydantic_ai_chat_and_stream(ashroud: shroud_sdk.ShroudClients) -> None:
    agent = _agent(ashroud)
    result = await agent.run("hello pydantic-ai")
    assert result.output == ECHO.format("hello pydantic-ai")
    async with agent.run_stream("stream pydantic-ai") as streamed:
        deltas = [d async for d in streamed.stream_text(delta=True, debounce_by=None)]
    assert len(deltas) > 1
    assert "".join(deltas) == ECHO.format("stream pydantic-ai")
    assert_attested(ashroud, sync=False)


def test_pydantic_ai_run_sync(shroud: shroud_sdk.ShroudClients) -> None:
    # run_sync drives the async client on this thread's event loop; close it there too.
    assert _agent(shroud).run_sync("hello sync").output == ECHO.format("hello sync")
    assert_attested(shroud, sync=False)
    asyncio.get_event_loop().run_until_complete(shroud.aclose())
