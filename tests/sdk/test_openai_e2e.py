"""The real ``openai`` package through ``shroud_sdk`` against a real bridge subprocess.

Plain, streamed and async streamed chat completions, ``models.list()``, raw responses,
concurrent requests over one attested session, the ``openai`` exception class for each bridge
error (401, 404, 429 with Retry-After honoured by ``max_retries``, 502), and verified usage.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import shroud_sdk
from bridge.demo_upstream import DEMO_MODEL_ID
from tests.bridgeproc import BridgeProcess, free_port, running_bridge
from tests.e2e.fake_upstream import FakeUpstream

MODEL = DEMO_MODEL_ID


def _ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def client(bridge: BridgeProcess, no_leaked_threads: None) -> Iterator[shroud_sdk.OpenAI]:
    with shroud_sdk.OpenAI(
        bridge_url=bridge.url, api_key="test-key", policy=bridge.policy_path
    ) as c:
        yield c


def test_is_an_openai_client(client: shroud_sdk.OpenAI) -> None:
    assert isinstance(client, openai.OpenAI)
    assert isinstance(shroud_sdk.AttestationError, type)
    assert issubclass(shroud_sdk.AttestationError, openai.APIConnectionError)
    assert issubclass(shroud_sdk.StreamIntegrityError, openai.APIConnectionError)


def test_plain_chat_completion_is_answered_after_verification(client: shroud_sdk.OpenAI) -> None:
    assert client.transport.session.handshakes == 0  # nothing happens before a request
    completion = client.chat.completions.create(model=MODEL, messages=_ask("hello bridge"))
    assert completion.choices[0].message.content == (
        'Shroud demo model here. You said: "hello bridge"'
    )
    report = client.attestation
    assert report is not None
    assert report.ok
    assert report.simulated
    assert report.tcb_status is not None
    assert report.tcb_status.value == "UpToDate"
    assert report.measurements["mr_td"] in client_policy_mr_td(client)
    assert completion.usage is not None
    assert client.last_usage is not None
    assert client.last_usage.total_tokens == completion.usage.total_tokens


def client_policy_mr_td(client: shroud_sdk.OpenAI) -> frozenset[str]:
    verifier = client.transport.session.config.verifier
    assert isinstance(verifier, shroud_sdk.AttestationVerifier)
    pins = verifier.policy.measurements.mr_td
    assert pins is not None
    return pins


def test_streamed_chat_completion_yields_the_whole_answer(client: shroud_sdk.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=_ask("stream this please"),
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(parts) == 'Shroud demo model here. You said: "stream this please"'
    assert len(parts) > 3  # it really arrived in pieces
    assert client.last_usage is not None


def test_models_list_and_retrieve(client: shroud_sdk.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_with_raw_response_exposes_headers_and_parses(client: shroud_sdk.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=_ask("raw"))
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().choices[0].message.content is not None


def test_concurrent_requests_share_one_attested_session(client: shroud_sdk.OpenAI) -> None:
    def ask(i: int) -> str | None:
        r = client.chat.completions.create(model=MODEL, messages=_ask(f"question {i}"))
        return r.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(16)))
    assert answers == [f'Shroud demo model here. You said: "question {i}"' for i in range(16)]
    assert client.transport.session.handshakes == 1


async def test_async_streamed_completions_run_concurrently(bridge: BridgeProcess) -> None:
    async with shroud_sdk.AsyncOpenAI(
        bridge_url=bridge.url, api_key="k", policy=bridge.policy_path
    ) as client:
        assert isinstance(client, openai.AsyncOpenAI)

        async def ask(i: int) -> str:
            stream = await client.chat.completions.create(
                model=MODEL, messages=_ask(f"async {i}"), stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        answers = await asyncio.gather(*(ask(i) for i in range(8)))
        assert answers == [f'Shroud demo model here. You said: "async {i}"' for i in range(8)]
        assert client.transport.session.handshakes == 1
        assert client.attestation is not None
        assert client.attestation.ok
        plain = await client.chat.completions.create(model=MODEL, messages=_ask("plain"))
        assert plain.choices[0].message.content is not None
        assert client.last_usage is not None


def test_sync_client_works_inside_a_running_event_loop(
    bridge: BridgeProcess, no_leaked_threads: None
) -> None:
    async def inside_loop() -> str | None:
        with shroud_sdk.OpenAI(
            bridge_url=bridge.url, api_key="k", policy=bridge.policy_path
        ) as client:
            r = client.chat.completions.create(model=MODEL, messages=_ask("jupyter"))
            return r.choices[0].message.content

    assert asyncio.run(inside_loop()) == 'Shroud demo model here. You said: "jupyter"'


def test_path_off_the_allowlist_is_not_found_error(client: shroud_sdk.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.files.list()
    assert info.value.status_code == 404


def test_wrong_api_key_is_authentication_error(tmp_path: Path) -> None:
    with (
        running_bridge(
            tmp_path, env={"SHROUD_BRIDGE_API_KEYS": "right-key-0123456789abcdef"}
        ) as keyed,
        shroud_sdk.OpenAI(
            bridge_url=keyed.url, api_key="wrong-key-0123456789abcdef", policy=keyed.policy_path
        ) as c,
    ):
        with pytest.raises(openai.AuthenticationError) as info:
            c.models.list()
        assert info.value.status_code == 401
        good = c.with_options(api_key="right-key-0123456789abcdef")
        assert good.models.list().data[0].id == MODEL


def test_unreachable_upstream_is_a_502_status_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with (
        running_bridge(tmp_path, upstream=dead) as broken,
        shroud_sdk.OpenAI(
            bridge_url=broken.url, api_key="k", policy=broken.policy_path, max_retries=0
        ) as c,
    ):
        with pytest.raises(openai.InternalServerError) as info:
            c.models.list()
        assert info.value.status_code == 502


def test_429_retry_after_is_honoured_by_max_retries(tmp_path: Path) -> None:
    with (
        FakeUpstream() as upstream,
        running_bridge(
            tmp_path, upstream=upstream.base_url, args=["--max-streams-per-session", "1"]
        ) as limited,
        shroud_sdk.OpenAI(
            bridge_url=limited.url, api_key="k", policy=limited.policy_path, max_retries=0
        ) as c,
    ):
        # "endless" streams until the client goes away: it holds the session's only slot.
        held = c.chat.completions.create(model="endless", messages=_ask("hold"), stream=True)
        with pytest.raises(openai.RateLimitError) as info:
            c.models.list()
        assert info.value.status_code == 429
        retry_after = float(info.value.response.headers["retry-after"])
        assert retry_after > 0

        # With retries, openai waits Retry-After and tries again; the slot frees meanwhile.
        threading.Timer(0.2, held.close).start()
        started = time.monotonic()
        models = c.with_options(max_retries=2).models.list()
        assert "echo" in [m.id for m in models.data]
        assert time.monotonic() - started >= retry_after * 0.9
        assert c.transport.session.handshakes == 1
