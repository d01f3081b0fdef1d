"""Large JSON answers on many streams at once: the bridge's memory stays flat, usage is signed.

A client holding a bridge key can have the upstream answer with large JSON bodies (embeddings
of many inputs, completions with ``echo`` and logprobs) on every stream it may open. The bridge
reads each body's top-level usage as the body passes (``bridge.usage_meter``) and keeps none of
it. It used to keep a copy of each body, up to 8 MiB per stream, parse it whole at the end,
and sign no usage for a larger one: the reduced form below grew the bridge by 62 to 69 MiB
and every response ended without usage.

The attacker reads every response promptly, so what the bridge holds is the meter's, not bytes
waiting for a slow reader (a client that stops reading stops the upstream reads instead:
``test_backpressure``). Full form (``make stress``): 2 connections x 32 streams (each
connection's whole stream cap) of 16 MiB answers; the reduced form: 1 x 12.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from shroud_sdk.channel.usage import Usage
from tests.bridgeproc import running_bridge
from tests.e2e.fake_upstream import BIG_JSON_USAGE, FakeUpstream, big_json_body
from tests.stress.harness import (
    FULL,
    MIB,
    PeakRss,
    attacker,
    legitimate_client,
    mib,
    wait_for,
)

pytestmark = pytest.mark.slow

CONNECTIONS, STREAMS = (2, 32) if FULL else (1, 12)
GROWTH_BOUND = 32 * MIB


async def test_large_json_answers_on_many_streams_leave_the_bridge_flat(tmp_path: Path) -> None:
    size = len(big_json_body())  # built before the bridge runs: its time is not the attack's
    request = json.dumps({"model": "big-json", "input": ["many inputs"] * 64}).encode()
    with (
        FakeUpstream() as upstream,
        running_bridge(tmp_path / "bridge", upstream=upstream.base_url) as bridge,
    ):
        async with legitimate_client(bridge) as legitimate:
            await legitimate.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "warm up"}]
            )
            start = bridge.rss_bytes()
            clients = [await attacker(bridge, keep_bodies=False) for _ in range(CONNECTIONS)]
            with PeakRss(bridge) as rss:
                streams = [
                    (client, await client.start("POST", "/v1/embeddings", body=request))
                    for client in clients
                    for _ in range(STREAMS)
                ]
                attack = asyncio.gather(
                    *(client.response(sid, seconds=300) for client, sid in streams)
                )
                # Every answer is on its way through the bridge: now a legitimate request.
                assert await wait_for(lambda: upstream.big_json_answers == len(streams), 60)
                reply = await legitimate.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": "served?"}]
                )
                served_during_attack = not attack.done()
                responses = await attack
            for client in clients:
                await client.close()
        growth = rss.peak - start
        print(
            f"large JSON: {len(streams)} answers of {mib(size)} at once, "
            f"RSS start {mib(start)}, peak growth {mib(growth)}"
        )
    assert reply is not None
    assert served_during_attack, "the legitimate request waited for the attack to end"
    assert [(r.status, r.ended, r.received) for r in responses] == [(200, True, size)] * len(
        streams
    )
    # Each END carries the upstream's usage, signed (the client core verified the signature).
    assert all(r.usage is not None for r in responses)
    assert {r.usage.usage for r in responses if r.usage} == {Usage(**BIG_JSON_USAGE)}
    assert growth <= GROWTH_BOUND, f"RSS grew by {mib(growth)}"
