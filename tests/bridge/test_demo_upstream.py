"""The demo upstream, driven by the real ``openai`` client and raw HTTP over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from bridge.demo_upstream import (
    DEMO_MODEL_DESCRIPTION,
    DEMO_MODEL_ID,
    DemoUpstream,
    demo_reply,
    tokenize,
)

QUESTION = "What is the capital of France?"
EXPECTED = f'Shroud demo model here. You said: "{QUESTION}"'


@pytest.fixture
async def demo() -> AsyncIterator[DemoUpstream]:
    async with DemoUpstream(max_body=64 * 1024, clock=lambda: 1_700_000_000.0) as upstream:
        yield upstream


def _messages(text: str = QUESTION) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_reply_quotes_the_last_user_message() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second  part"}]},
    ]
    assert demo_reply(messages) == 'Shroud demo model here. You said: "second part"'
    assert "did not say" in demo_reply([{"role": "system", "content": "x"}])


def test_tokens_rejoin_to_the_text() -> None:
    text = '  Shroud demo  model\n"quoted" '
    assert "".join(tokenize(text)) == text
    assert tokenize("a b") == ["a", " b"]


async def test_openai_sync_client_plain_completion(demo: DemoUpstream) -> None:
    def call() -> openai.types.chat.ChatCompletion:
        with openai.OpenAI(base_url=demo.base_url, api_key="x", max_retries=0) as client:
            return client.chat.completions.create(model=DEMO_MODEL_ID, messages=_messages())

    completion = await asyncio.to_thread(call)
    assert completion.choices[0].message.content == EXPECTED
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == DEMO_MODEL_ID
    assert completion.created == 1_700_000_000
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(tokenize("Be brief.")) + len(tokenize(QUESTION))
    assert completion.usage.completion_tokens == len(tokenize(EXPECTED))
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_openai_sync_client_lists_the_demo_model(demo: DemoUpstream) -> None:
    def call() -> list[openai.types.Model]:
        with openai.OpenAI(base_url=demo.base_url, api_key="x", max_retries=0) as client:
            return [*client.models.list(), client.models.retrieve(DEMO_MODEL_ID)]

    listed, retrieved = await asyncio.to_thread(call)
    assert listed.id == retrieved.id == DEMO_MODEL_ID
    assert listed.model_extra is not None
    assert listed.model_extra["description"] == DEMO_MODEL_DESCRIPTION
    assert "demo" in DEMO_MODEL_DESCRIPTION.lower()


async def test_openai_sync_client_streams_token_by_token(demo: DemoUpstream) -> None:
    def call() -> list[openai.types.chat.ChatCompletionChunk]:
        with openai.OpenAI(base_url=demo.base_url, api_key="x", max_retries=0) as client:
            stream = client.chat.completions.create(
                model=DEMO_MODEL_ID,
                messages=_messages(),
                stream=True,
                stream_options={"include_usage": True},
            )
            return list(stream)

    chunks = await asyncio.to_thread(call)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces == tokenize(EXPECTED)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(pieces)
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


async def test_async_client_stream_without_usage_and_many_requests_on_one_pool(
    demo: DemoUpstream,
) -> None:
    async with openai.AsyncOpenAI(base_url=demo.base_url, api_key="x", max_retries=0) as client:
        for i in range(3):
            stream = await client.chat.completions.create(
                model=DEMO_MODEL_ID,
                messages=_messages(f"question {i}"),
                stream=True,
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            assert text == f'Shroud demo model here. You said: "question {i}"'


async def test_max_tokens_truncates_with_finish_reason_length(demo: DemoUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=demo.base_url, api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model=DEMO_MODEL_ID,
            messages=_messages(),
            max_tokens=3,
        )
        assert completion.choices[0].message.content == "".join(tokenize(EXPECTED)[:3])
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 3
        stream = await client.chat.completions.create(
            model=DEMO_MODEL_ID,
            messages=_messages(),
            max_completion_tokens=2,
            stream=True,
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(
            tokenize(EXPECTED)[:2]
        )
        assert chunks[-1].choices[0].finish_reason == "length"


async def test_unknown_model_is_an_openai_not_found_error(demo: DemoUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=demo.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=_messages())
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": DEMO_MODEL_ID}, "messages"),
        ({"model": DEMO_MODEL_ID, "messages": []}, "messages"),
        ({"model": DEMO_MODEL_ID, "messages": [{"role": "hacker", "content": "x"}]}, "messages[0]"),
        ({"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": 5}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            {
                "model": DEMO_MODEL_ID,
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 0,
            },
            "max_tokens",
        ),
        ({"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {
                "model": DEMO_MODEL_ID,
                "messages": [{"role": "user", "content": "x"}],
                "stream": "yes",
            },
            "stream",
        ),
        (
            {
                "model": DEMO_MODEL_ID,
                "messages": [{"role": "user", "content": "x"}],
                "stream_options": {},
            },
            "stream_options",
        ),
    ],
)
async def test_bad_request_gets_openai_error_json(
    demo: DemoUpstream, body: dict[str, object], param: str
) -> None:
    async with httpx.AsyncClient(base_url=demo.base_url) as client:
        response = await client.post("/chat/completions", json=body)
    assert response.status_code in (400, 404)
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


async def test_unparseable_json_is_a_400(demo: DemoUpstream) -> None:
    async with httpx.AsyncClient(base_url=demo.base_url) as client:
        response = await client.post("/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert "parse the JSON" in response.json()["error"]["message"]


async def test_unknown_path_and_wrong_method(demo: DemoUpstream) -> None:
    async with httpx.AsyncClient(base_url=demo.base_url) as client:
        missing = await client.get("/files")
        wrong = await client.get("/chat/completions")
        no_model = await client.get("/models/other")
    assert missing.status_code == 404
    assert wrong.status_code == 405
    assert no_model.status_code == 404
    assert all("error" in r.json() for r in (missing, wrong, no_model))


async def test_oversized_body_is_a_413(demo: DemoUpstream) -> None:
    async with httpx.AsyncClient(base_url=demo.base_url) as client:
        response = await client.post("/chat/completions", content=b"x" * (64 * 1024 + 1))
    assert response.status_code == 413


async def _raw(demo: DemoUpstream, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    await writer.wait_closed()
    return data


async def test_chunked_request_body_is_refused(demo: DemoUpstream) -> None:
    answer = await _raw(
        demo,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 411 ")


async def test_duplicate_content_length_is_refused(demo: DemoUpstream) -> None:
    answer = await _raw(
        demo,
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    )
    assert answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/models HTTP/2\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nbad\r\n\r\n",
    ],
)
async def test_malformed_head_is_a_400(demo: DemoUpstream, request_bytes: bytes) -> None:
    assert (await _raw(demo, request_bytes)).startswith(b"HTTP/1.1 400 ")


async def test_oversized_head_is_a_431(demo: DemoUpstream) -> None:
    answer = await _raw(demo, b"GET /v1/models HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_sse_wire_format_ends_with_done(demo: DemoUpstream) -> None:
    body = json.dumps({"model": DEMO_MODEL_ID, "messages": _messages("hi"), "stream": True})
    async with (
        httpx.AsyncClient(base_url=demo.base_url) as client,
        client.stream("POST", "/chat/completions", content=body) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    first = json.loads(lines[0][len("data: ") :])
    assert first["object"] == "chat.completion.chunk"


async def test_client_disconnect_mid_stream_does_not_break_the_server() -> None:
    async with DemoUpstream(token_delay=0.01) as demo:
        body = json.dumps({"model": DEMO_MODEL_ID, "messages": _messages(), "stream": True})
        reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body.encode())
        )
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()
        async with openai.AsyncOpenAI(base_url=demo.base_url, api_key="x", max_retries=0) as c:
            models = await c.models.list()
        assert [m.id for m in models.data] == [DEMO_MODEL_ID]


async def test_absurdly_nested_json_is_a_400_not_a_crash(demo: DemoUpstream) -> None:
    async with httpx.AsyncClient(base_url=demo.base_url) as client:
        response = await client.post("/chat/completions", content=b"[" * 50_000)
    assert response.status_code == 400
