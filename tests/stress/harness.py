"""Shared pieces of the attack scenarios in ``tests/stress``.

Every scenario runs a real bridge subprocess (``tests.bridgeproc``), attacks it with a real
client on loopback, measures the bridge's resident memory from /proc and whether a legitimate
client still gets served, and fails when the defence it exercises is removed.

Scale: ``make test`` runs a reduced form of each attack (fast, same assertions scaled down);
``SHROUD_STRESS=full`` (``make stress``) runs the numbers of issue 10's "Done when" list.
Attackers connect from :data:`ATTACKER` (Linux routes all of 127.0.0.0/8 to loopback, so a
socket bound there is another source); legitimate clients from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

import shroud_sdk
from tests.bridgeproc import REPO_ROOT, BridgeProcess
from tests.e2e.client import ChannelClient, chat_body

FULL: Final = os.environ.get("SHROUD_STRESS", "") == "full"
ATTACKER: Final = "127.0.0.2"
LEGITIMATE: Final = "127.0.0.1"
MIB: Final = 1024 * 1024


def legitimate_client(bridge: BridgeProcess) -> shroud_sdk.AsyncOpenAI:
    """A real SDK client (from 127.0.0.1) with no retries: every failure shows."""
    return shroud_sdk.AsyncOpenAI(
        bridge_url=bridge.url, api_key="k", policy=bridge.policy_path, max_retries=0
    )


async def attacker(bridge: BridgeProcess, **options: object) -> ChannelClient:
    """An attested channel client connecting from :data:`ATTACKER`."""
    return await ChannelClient.connect(
        bridge.url,
        audience=bridge.audience,
        root_pem=bridge.root_pem,
        local_address=ATTACKER,
        **options,  # type: ignore[arg-type]
    )


async def stalled_flood(bridge: BridgeProcess) -> ChannelClient:
    """An attacker whose streaming request gets the fake upstream's endless ``flood``, and who
    stops reading its socket once the first chunk came: everything the bridge sends it after
    that waits on full socket buffers."""
    stalled = await attacker(bridge)
    sid = await stalled.start(
        "POST", "/v1/chat/completions", body=chat_body(model="flood", stream=True)
    )
    await stalled.first_chunk(sid)
    stalled.ws.transport.pause_reading()  # never reads again
    return stalled


async def wait_for(condition: Callable[[], bool], seconds: float, step: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


class PeakRss:
    """Samples a bridge's RSS in a thread every ``interval`` seconds; ``peak`` is the max."""

    def __init__(self, bridge: BridgeProcess, interval: float = 0.05) -> None:
        self._bridge = bridge
        self._interval = interval
        self._stop = threading.Event()
        self.peak = bridge.rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak = max(self.peak, self._bridge.rss_bytes())
            except (OSError, StopIteration):
                return  # the process is gone


def mib(size: float) -> str:
    """``size`` bytes in MiB, for messages."""
    return f"{size / MIB:.1f} MiB"


class Attacker:
    """``python -m tests.stress.attackers ARGS`` in a process of its own (see that module).

    ``stop()`` ends it (SIGTERM) and returns the counts it printed.
    """

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.stress.attackers", *args],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
        )

    def wait_for_line(self, expected: str, seconds: float = 30.0) -> None:
        """Block until the attacker prints ``expected`` (a readiness line)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode().strip()
            if line == expected:
                return
            if not line and self.process.poll() is not None:
                break
        raise AssertionError(f"the attacker never printed {expected!r}")

    def kill(self) -> None:
        """SIGKILL: the client vanishes without closing anything."""
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> dict[str, int]:
        """SIGTERM, wait, and the attacker's counts."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=60)
        counts: dict[str, int] = json.loads(output)
        return counts


class UpstreamProcess:
    """The fake upstream (tests/e2e/fake_upstream.py) in a process of its own on ``port``,
    so it can be killed mid-response and started again on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.fake_upstream", str(self.port)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().decode().strip() == self.base_url

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
