"""The processes a benchmark runs: the SSE upstream, the TCP relay, the bridge under test.

Each runs as a real subprocess on 127.0.0.1, so the client in this process, the upstream, the
relay and the bridge compete for the machine's cores as deployed processes would. CPU figures
come from ``/proc`` (time on a CPU of every thread of the process and of its descendants, so
a bridge that forks workers is counted whole).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bridge.config import BridgeConfig
from tests.bridgeproc import REPO_ROOT, BridgeProcess, running_bridge


@contextlib.contextmanager
def server(module: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``python -m benchmarks.<module> ARGS`` until it prints ``PORT n``; yield it and n."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"benchmarks.{module} did not start (said {line!r})")
        yield process, int(line.split()[1])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found.extend(int(child) for child in text.split())
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a bridge and the workers it forked)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(_children(current))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds run by every thread of ``pid`` and of its live descendants, to the
    nanosecond (``/proc/<pid>/task/<tid>/schedstat``: clock ticks are too coarse for one run).
    """
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{member}/task"):
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{member}/task/{task}/schedstat").read_text()
                    total += int(stat.split()[0])
    return total / 1e9


def bridge_flags() -> list[str]:
    """Flags that make the bridge under test one worker, if this tree's bridge has workers."""
    return ["--workers", "1"] if "workers" in BridgeConfig.model_fields else []


@contextlib.contextmanager
def bridge(upstream: str, *args: str) -> Iterator[BridgeProcess]:
    """The bridge of this tree as a subprocess in front of ``upstream`` (simulated TDX)."""
    with (
        tempfile.TemporaryDirectory(prefix="shroud-bench-") as workdir,
        running_bridge(
            Path(workdir),
            upstream=upstream,
            args=[*bridge_flags(), *args],
            env={"SHROUD_BRIDGE_LOG_LEVEL": "WARNING"},
        ) as running,
    ):
        yield running
