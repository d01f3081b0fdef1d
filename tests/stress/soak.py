"""``make soak``: many sessions with streams for a long time; does the bridge's memory drift?

``python -m tests.stress.soak [--sessions 1000] [--minutes 10]`` starts a bridge subprocess
with its default limits in front of the fake upstream (in this process's thread), opens
``--sessions`` attested connections from 50 loopback sources (127.0.0.2 to 127.0.0.51, so the
per-source defaults apply as they would to 50 client hosts), and keeps every session busy:
a streamed completion (ten events, 100 ms apart), a pause of 5 to 15 s, again. Every 30 s it
prints the bridge's RSS, the sessions open and the requests done and failed; at the end, the
RSS slope (least squares over the samples after the first minute) and the totals.

Not part of ``make test`` or CI: it runs for ``--minutes`` and loads both cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.client import ChannelClient, chat_body
from tests.e2e.fake_upstream import FakeUpstream

SOURCES = [f"127.0.0.{n}" for n in range(2, 52)]
REPORT_EVERY = 30.0
MIB = 1024 * 1024


@dataclass
class Counts:
    """What the sessions did."""

    connected: int = 0
    requests: int = 0
    failures: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)


async def _session(bridge: BridgeProcess, source: str, counts: Counts, stop: asyncio.Event) -> None:
    client: ChannelClient | None = None
    body = chat_body("soak", model="slow-stream", stream=True)
    while not stop.is_set():
        try:
            if client is None or client.connection_done.is_set():
                client = await ChannelClient.connect(
                    bridge.url,
                    audience=bridge.audience,
                    root_pem=bridge.root_pem,
                    local_address=source,
                    seconds=30,
                )
                counts.connected += 1
            response = await client.request("POST", "/v1/chat/completions", body=body, seconds=60)
            client._streams.pop(response.stream_id, None)  # keep the soak client's memory flat
            counts.requests += 1
            if response.status != 200 or not response.ended:
                counts.failures += 1
        except Exception:
            counts.failures += 1
            client = None
            await asyncio.sleep(1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(5.0, 15.0))
    if client is not None:
        await client.close()


def slope_mib_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, in MiB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    num = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    den = sum((t - mean_t) ** 2 for t, _ in samples)
    return (num / den) * 60 / MIB if den else 0.0


async def soak(bridge: BridgeProcess, sessions: int, minutes: float) -> Counts:
    """Run the sessions for ``minutes``, printing a report line every 30 s."""
    counts, stop = Counts(), asyncio.Event()
    tasks = []
    started = time.monotonic()
    for index in range(sessions):
        tasks.append(
            asyncio.create_task(_session(bridge, SOURCES[index % len(SOURCES)], counts, stop))
        )
        await asyncio.sleep(0.02)  # ramp up at 50 sessions/s, within per-source rates
    next_report = started
    while (elapsed := time.monotonic() - started) < minutes * 60:
        if time.monotonic() >= next_report:
            rss = bridge.rss_bytes()
            counts.samples.append((elapsed, rss))
            print(
                f"t={elapsed:6.0f}s rss={rss / MIB:7.1f} MiB "
                f"sessions={bridge.metric('shroud_bridge_sessions_active'):5.0f} "
                f"requests={counts.requests} failures={counts.failures}",
                flush=True,
            )
            next_report += REPORT_EVERY
        await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as workdir,
        FakeUpstream() as upstream,
        running_bridge(
            Path(workdir), upstream=upstream.base_url, test_source_limits=False
        ) as bridge,
    ):
        counts = asyncio.run(soak(bridge, args.sessions, args.minutes))
        final = bridge.rss_bytes()
    steady = [(t, r) for t, r in counts.samples if t >= 60.0]
    print(
        f"soak: {args.sessions} sessions, {args.minutes:g} min, {counts.requests} streamed "
        f"requests, {counts.failures} failures, {counts.connected} connections; RSS first "
        f"{counts.samples[0][1] / MIB:.1f} MiB, last {final / MIB:.1f} MiB, slope after the "
        f"first minute {slope_mib_per_minute(steady):+.2f} MiB/min"
    )


if __name__ == "__main__":
    main()
