"""Start ``python -m bridge`` as a real subprocess on 127.0.0.1 for end-to-end tests.

``running_bridge(workdir, ...)`` picks free ports, runs the bridge with the simulated TDX
provider (platform kept in ``workdir/simulated``), writes the development policy to
``workdir/policy.toml``, waits until ``GET /healthz`` answers, and yields a
:class:`BridgeProcess`; it runs one process (``--workers 1``) unless ``args`` say otherwise.
On exit it sends SIGTERM and waits (then kills, if it must). The bridge's
stderr goes to ``workdir/bridge.log``; a start failure raises with that log's tail.

Reused by the SDK's end-to-end tests: keep the interface small and stable.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from attestation.policy import Policy

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_SOURCE_LIMITS = ("--max-handshakes-per-source", "1000", "--max-connections-per-source", "1000")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class BridgeProcess:
    """A running bridge subprocess and where to reach it."""

    url: str  # ws://127.0.0.1:PORT/
    audience: str  # what ClientHello.aud must name
    health_url: str
    metrics_url: str
    policy_path: Path  # the --dev-policy-out file
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def policy(self) -> Policy:
        """The development policy the bridge wrote."""
        return Policy.load(self.policy_path)

    @property
    def root_pem(self) -> bytes:
        """The simulated root CA the development policy trusts."""
        roots = self.policy.trusted_roots
        assert roots is not None
        assert len(roots) == 1
        return roots[0].encode("ascii")

    def pids(self) -> list[int]:
        """The bridge process and its workers (with ``--workers`` above 1)."""
        return [self.process.pid, *_children(self.process.pid)]

    def rss_bytes(self) -> int:
        """The resident set size of the bridge and its workers now (Linux /proc)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
                lines = status.splitlines()
                total += int(next(s.split()[1] for s in lines if s.startswith("VmRSS:"))) * 1024
        return total

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The value of one sample on /metrics (0.0 when absent)."""
        text = httpx2.get(self.metrics_url, timeout=10.0, trust_env=False).text
        wanted = dict(labels or {})
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == wanted:
                    return float(sample.value)
        return 0.0

    def log_text(self) -> str:
        """Everything the bridge logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait up to ``timeout`` (then SIGKILL); return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` (or one of its workers) holds a listening TCP socket on
    ``port`` (Linux /proc).

    ``free_port`` can hand two bridges started at once the same port; the loser's /healthz
    check would then be answered by the winner. Only our own listening socket counts.
    """
    try:
        inodes = {
            os.readlink(f"/proc/{p}/fd/{fd}")[8:-1]
            for p in (pid, *_children(pid))
            for fd in os.listdir(f"/proc/{p}/fd")
            if os.readlink(f"/proc/{p}/fd/{fd}").startswith("socket:[")
        }
        lines = [
            line
            for table in ("/proc/net/tcp", "/proc/net/tcp6")
            if Path(table).exists()
            for line in Path(table).read_text().splitlines()[1:]
        ]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
            return True
    return False


def _wait_healthy(bridge: BridgeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    port = int(bridge.health_url.rsplit(":", 1)[1].split("/", 1)[0])
    while time.monotonic() < deadline:
        if bridge.process.poll() is not None:
            raise RuntimeError(
                f"bridge exited with {bridge.process.returncode}:\n{bridge.log_text()[-4000:]}"
            )
        with contextlib.suppress(httpx2.HTTPError):
            healthy = httpx2.get(bridge.health_url, timeout=1.0, trust_env=False).status_code
            if healthy == 200 and _listens(bridge.process.pid, port):
                return
        time.sleep(0.05)
    bridge.terminate()
    raise RuntimeError(f"bridge not healthy after {timeout}s:\n{bridge.log_text()[-4000:]}")


def _limit_descriptors(limit: int) -> Callable[[], None]:
    def limit_in_child() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return limit_in_child


@contextlib.contextmanager
def running_bridge(
    workdir: Path,
    *,
    upstream: str = "demo",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
    simulated_dir: Path | None = None,
    test_source_limits: bool = True,
    fd_limit: int | None = None,
) -> Iterator[BridgeProcess]:
    """Run a simulated bridge in ``workdir`` in front of ``upstream``; see module docstring.

    ``args`` are extra ``shroud-bridge`` flags; ``env`` extra environment variables;
    ``simulated_dir`` a platform several bridges share (default: ``workdir/simulated``).
    ``test_source_limits`` raises the per-source limits (every test connects from 127.0.0.1);
    False keeps the bridge's defaults. ``fd_limit`` sets the bridge's RLIMIT_NOFILE, soft and
    hard (what a service manager's LimitNOFILE= does).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port, metrics_port = free_port(), free_port()
    policy_path = workdir / "policy.toml"
    command = [
        sys.executable,
        "-m",
        "bridge",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--quote-provider",
        "simulated",
        "--simulated-dir",
        str(simulated_dir or workdir / "simulated"),
        "--dev-policy-out",
        str(policy_path),
        "--upstream",
        upstream,
        # Every test client connects from 127.0.0.1: one source, many tests. Per-source
        # limits are tested where they are the subject (tests/stress); ``args`` can override.
        *(TEST_SOURCE_LIMITS if test_source_limits else ()),
        # One process unless a test is about workers (``args`` can say --workers 2).
        "--workers",
        "1",
        *args,
    ]
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("SHROUD_BRIDGE_")
    } | dict(env or {})
    environment["PYTHONPATH"] = str(REPO_ROOT)
    log_path = workdir / "bridge.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if fd_limit is None else _limit_descriptors(fd_limit),
        )
    bridge = BridgeProcess(
        url=f"ws://127.0.0.1:{port}/",
        audience=f"127.0.0.1:{port}",
        health_url=f"http://127.0.0.1:{port}/healthz",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        policy_path=policy_path,
        workdir=workdir,
        log_path=log_path,
        process=process,
    )
    try:
        _wait_healthy(bridge, startup_timeout)
        yield bridge
    finally:
        bridge.terminate()
