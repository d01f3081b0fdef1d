"""Faults that hostile or broken peers cause: a client killed mid-stream, the upstream killed
mid-stream, and the upstream unreachable when the bridge starts.

Each runs a real bridge subprocess, measures its RSS across rounds and checks that a
legitimate client is served (or told precisely why not) throughout:

- a client killed mid-stream (SIGKILL, nothing closed politely): the bridge must cancel its
  upstream requests and give back every stream, byte and connection it held;
- the upstream killed mid-stream: each open stream must end in an authenticated RESET, never
  a silent truncation or a hang, and the bridge must serve again once the upstream is back;
- the upstream unreachable at start: each request gets an OpenAI-shaped 502 at once, nothing
  accumulates, and the bridge serves as soon as the upstream appears, without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from shroud_sdk.channel.constants import RESET_INTERNAL_ERROR
from tests.bridgeproc import BridgeProcess, free_port, running_bridge
from tests.e2e.client import ChannelClient, chat_body
from tests.stress.harness import (
    FULL,
    MIB,
    Attacker,
    UpstreamProcess,
    legitimate_client,
    mib,
    wait_for,
)

pytestmark = pytest.mark.slow

ROUNDS = 5 if FULL else 2
STREAMS = 8
GROWTH_BOUND = 24 * MIB


@pytest.fixture
def upstream() -> Iterator[UpstreamProcess]:
    process = UpstreamProcess(free_port())
    try:
        yield process
    finally:
        process.kill()


async def _served(bridge: BridgeProcess, model: str = "echo") -> bool:
    async with legitimate_client(bridge) as client:
        reply = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "served?"}]
        )
    return reply is not None


def _idle(bridge: BridgeProcess) -> bool:
    return all(
        bridge.metric(name) == 0
        for name in (
            "shroud_bridge_streams_active",
            "shroud_bridge_sessions_active",
            "shroud_bridge_connections_open",
            "shroud_bridge_buffered_request_bytes",
        )
    )


async def test_a_client_killed_mid_stream_leaves_nothing_behind(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.start()
    with running_bridge(tmp_path / "bridge", upstream=upstream.base_url) as bridge:
        assert await _served(bridge)
        start = bridge.rss_bytes()
        for _ in range(ROUNDS):
            client = Attacker(
                "streams",
                bridge.url,
                bridge.audience,
                "--policy",
                str(bridge.policy_path),
                "--count",
                str(STREAMS),
                "--model",
                "stall",  # one event, then the upstream waits: only a cancel ends it
            )
            await asyncio.to_thread(client.wait_for_line, "ready")
            assert bridge.metric("shroud_bridge_streams_active") == STREAMS
            client.kill()
            assert await wait_for(lambda: _idle(bridge), 15), "the dead client's work lingers"
            assert await _served(bridge)
        growth = bridge.rss_bytes() - start
        print(f"client killed x{ROUNDS}: RSS growth {mib(growth)}")
    assert growth <= GROWTH_BOUND


async def test_an_upstream_killed_mid_stream_resets_every_stream(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.start()
    with running_bridge(tmp_path / "bridge", upstream=upstream.base_url) as bridge:
        assert await _served(bridge)
        start = bridge.rss_bytes()
        for _ in range(ROUNDS):
            client = await ChannelClient.connect(
                bridge.url, audience=bridge.audience, root_pem=bridge.root_pem
            )
            body = chat_body(model="endless", stream=True)
            sids = [await client.start("POST", "/v1/chat/completions", body=body) for _ in range(4)]
            for sid in sids:
                await client.first_chunk(sid)
            upstream.kill()
            for sid in sids:
                response = await client.response(sid, seconds=15)
                assert response.reset is not None, "a cut response must end in RESET"
                assert response.reset.code == RESET_INTERNAL_ERROR
                assert not response.ended
            down = await client.request("POST", "/v1/chat/completions", body=chat_body())
            assert down.status == 502  # the same session, told why
            upstream.start()
            up = await client.request("POST", "/v1/chat/completions", body=chat_body(model="echo"))
            assert up.status == 200
            await client.close()
        assert await wait_for(lambda: _idle(bridge), 15)
        growth = bridge.rss_bytes() - start
        print(f"upstream killed x{ROUNDS}: RSS growth {mib(growth)}")
    assert growth <= GROWTH_BOUND


async def test_an_unreachable_upstream_is_a_prompt_502_until_it_appears(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    with running_bridge(tmp_path / "bridge", upstream=upstream.base_url) as bridge:
        start = bridge.rss_bytes()
        async with legitimate_client(bridge) as client:
            for _ in range(20 * ROUNDS):
                with pytest.raises(openai.InternalServerError) as caught:
                    await client.chat.completions.create(
                        model="echo", messages=[{"role": "user", "content": "anyone?"}]
                    )
                assert caught.value.status_code == 502
                assert caught.value.code == "upstream_unavailable"
        assert await wait_for(lambda: _idle(bridge), 15)
        growth = bridge.rss_bytes() - start
        upstream.start()
        assert await _served(bridge)  # no restart needed
        print(f"upstream unreachable: RSS growth {mib(growth)}")
    assert growth <= GROWTH_BOUND
