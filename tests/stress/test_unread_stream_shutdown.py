"""A client that never reads its streaming response, then SIGTERM.

The client starts a response far larger than any socket buffer (the fake upstream's
``flood``) and stops reading its socket. The bridge's sends then wait on a full buffer; they
used to wait forever, holding the session, the upstream request and the shutdown (issue 10,
finding 2: still running 60 s after SIGTERM). Now every send, flush and close has
``--send-timeout``, and shutdown drops whatever is left: the bridge must exit within
``shutdown_grace + send_timeout + 5 s``, its memory must stay flat, and a legitimate client
must be served while the stalled one sits there.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.bridgeproc import running_bridge
from tests.e2e.fake_upstream import FakeUpstream
from tests.stress.harness import FULL, MIB, PeakRss, legitimate_client, mib, stalled_flood

pytestmark = pytest.mark.slow

GRACE, SEND_TIMEOUT = (10.0, 15.0) if FULL else (1.0, 4.0)  # full: the defaults


async def test_sigterm_ends_the_bridge_despite_a_client_that_never_reads(tmp_path: Path) -> None:
    args = ["--shutdown-grace", str(GRACE), "--send-timeout", str(SEND_TIMEOUT)]
    with (
        FakeUpstream() as upstream,
        running_bridge(tmp_path / "bridge", upstream=upstream.base_url, args=args) as bridge,
    ):
        start = bridge.rss_bytes()
        stalled = await stalled_flood(bridge)
        with PeakRss(bridge) as rss:
            await asyncio.sleep(1.0)  # the bridge's send buffers fill up
            async with legitimate_client(bridge) as client:
                reply = await client.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": "served?"}]
                )
            assert reply is not None
            sent_at = time.monotonic()
            bridge.process.send_signal(signal.SIGTERM)
            bound = GRACE + SEND_TIMEOUT + 5
            exited = await asyncio.to_thread(_wait, bridge.process, bound + 30)
            took = time.monotonic() - sent_at
        growth = rss.peak - start
        stalled.ws.transport.abort()
        print(
            f"unread stream: exit {exited} after {took:.1f} s (bound {bound:.0f} s), "
            f"RSS {mib(growth)}"
        )
    assert exited == 0
    assert took <= bound
    assert growth <= 32 * MIB


def _wait(process: subprocess.Popen[bytes], seconds: float) -> int | None:
    try:
        return int(process.wait(seconds))
    except subprocess.TimeoutExpired:
        return None
