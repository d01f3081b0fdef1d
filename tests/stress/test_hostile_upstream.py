"""An upstream that never ends its response head: the bridge's memory stays flat.

The upstream is inside the TD with the bridge, but a compromised or broken model server is
still not trusted with the bridge's memory. Its endless header lines are cut off at
``bridge.upstream.MAX_HEAD_BYTES`` (64 KiB of non-body bytes in a row): the client gets the
bridge's 502, and a legitimate client is served meanwhile. Without the bound the bridge kept
every header line (3.7 GiB in 20 s) and the request never ended.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.bridgeproc import running_bridge
from tests.e2e.client import chat_body
from tests.e2e.fake_upstream import FakeUpstream
from tests.stress.harness import FULL, MIB, PeakRss, attacker, legitimate_client, mib

pytestmark = pytest.mark.slow

ROUNDS = 20 if FULL else 4


async def test_an_upstream_whose_head_never_ends_gets_a_502_and_no_memory(tmp_path: Path) -> None:
    with (
        FakeUpstream() as upstream,
        running_bridge(tmp_path / "bridge", upstream=upstream.base_url) as bridge,
    ):
        start = bridge.rss_bytes()
        client = await attacker(bridge)
        with PeakRss(bridge) as rss:
            answers = []
            for _ in range(ROUNDS):
                async with asyncio.timeout(10):
                    answers.append(
                        await client.request(
                            "POST", "/v1/chat/completions", body=chat_body(model="endless-head")
                        )
                    )
            async with legitimate_client(bridge) as legitimate:
                reply = await legitimate.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": "served?"}]
                )
        await client.close()
        growth = rss.peak - start
        print(f"endless head: {ROUNDS} answered 502, RSS {mib(growth)}")
    assert [a.status for a in answers] == [502] * ROUNDS
    assert all(json.loads(a.body)["error"]["code"] == "upstream_unavailable" for a in answers)
    assert reply is not None  # served while the hostile upstream was being answered
    assert growth <= 32 * MIB
