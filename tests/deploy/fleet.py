"""A deployment in miniature: several bridge processes behind nginx terminating TLS.

``running_fleet(workdir, pki, ...)`` starts ``count`` simulated bridges that share one
simulated platform, one image digest and one ``--audience`` (the proxy's public
``localhost:PORT``), plus any ``extra`` bridges (another image, say) behind the same proxy, then
nginx in front of all of them. Per-bridge counters come from each bridge's own ``/metrics``,
so a test can tell which bridge served whom without trusting the proxy.

Reusable for tests of the bridge behind a proxy: ``bridge_args`` adds flags to every bridge
(e.g. the trusted-proxy settings), and nginx sends ``X-Real-IP`` / ``X-Forwarded-For``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from prometheus_client.parser import text_string_to_metric_families

import shroud_sdk
from attestation.policy import Policy
from attestation.simulated import SimulatedTdx
from tests.bridgeproc import REPO_ROOT, BridgeProcess, free_port, running_bridge
from tests.deploy.nginx import NginxProxy, running_nginx
from tests.deploy.tls import DeployPki

IMAGE_DIGEST = "sha256:" + "5e" * 32  # the release every fleet bridge runs
OTHER_IMAGE_DIGEST = "sha256:" + "0b" * 32  # an image no published policy names


@dataclass
class Fleet:
    """The proxy, the bridges behind it (same image first, then ``extra``), and the PKI."""

    proxy: NginxProxy
    bridges: list[BridgeProcess]
    extra: list[BridgeProcess]
    pki: DeployPki
    platform_dir: Path
    stopped: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def root_pem_path(self) -> Path:
        """The simulated platform's root CA (what a development policy trusts)."""
        return self.platform_dir / "root.pem"

    def publish_policy(self, path: Path, *, bridge: BridgeProcess | None = None) -> Policy:
        """What an operator does: ``shroud-attest policy init --bridge``, then review.

        Runs the real CLI as a subprocess against the public ``wss://`` URL (one handshake
        with whichever bridge nginx picks) or, given ``bridge``, against that bridge directly
        (naming the public audience), writes the draft to ``path`` and loads it.
        """
        where = (
            ["--bridge", self.url, "--ca-file", str(self.pki.ca_cert)]
            if bridge is None
            else ["--bridge", bridge.url, "--audience", self.proxy.audience]
        )
        command = [
            sys.executable,
            "-m",
            "attestation.cli",
            "policy",
            "init",
            *where,
            "--trust-root",
            str(self.root_pem_path),
            "--simulated",
            "-o",
            str(path),
        ]
        environment = dict(os.environ) | {"PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return Policy.load(path)

    def dev_policy(self) -> Policy:
        """The development policy one fleet bridge wrote (identical for all of them)."""
        return self.bridges[0].policy

    def client(
        self, policy: Policy, *, ssl_context: ssl.SSLContext | None = None, **kwargs: object
    ) -> shroud_sdk.OpenAI:
        """A new SDK client for the proxy's ``wss://`` URL (no retries: each test counts)."""
        options: dict[str, object] = {"max_retries": 0, "api_key": "deploy-test-key"} | kwargs
        return shroud_sdk.OpenAI(
            bridge_url=self.url,
            policy=policy,
            ssl_context=ssl_context or self.pki.client_context(),
            **options,  # type: ignore[arg-type]
        )

    def ok_handshakes(self) -> list[int]:
        """Completed handshakes per bridge (``bridges`` then ``extra``; stopped ones read -1)."""
        return [
            -1 if i in self.stopped else ok_handshakes(b)
            for i, b in enumerate((*self.bridges, *self.extra))
        ]

    def streams(self) -> int:
        """Request streams all running bridges have seen (any outcome)."""
        return sum(
            int(_metric(b, "shroud_bridge_streams_total", {}))
            for i, b in enumerate((*self.bridges, *self.extra))
            if i not in self.stopped
        )

    def active_sessions(self) -> list[int]:
        """Open attested connections per bridge (``bridges`` then ``extra``)."""
        return [
            -1 if i in self.stopped else int(_metric(b, "shroud_bridge_sessions_active", {}))
            for i, b in enumerate((*self.bridges, *self.extra))
        ]

    def stop(self, bridge: BridgeProcess, *, kill: bool = False) -> None:
        """SIGTERM (graceful shutdown) or SIGKILL (a dying VM) one bridge and wait for it."""
        everything = [*self.bridges, *self.extra]
        if kill:
            bridge.process.kill()
            bridge.process.wait(20)
        else:
            bridge.terminate()
        self.stopped.add(everything.index(bridge))


def _metric(bridge: BridgeProcess, name: str, labels: dict[str, str]) -> float:
    text = httpx2.get(bridge.metrics_url, timeout=5.0, trust_env=False).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def ok_handshakes(bridge: BridgeProcess) -> int:
    """Handshakes this bridge completed (its side: quote sent, finished MAC checked)."""
    return int(_metric(bridge, "shroud_bridge_handshakes_total", {"result": "ok"}))


@contextlib.contextmanager
def running_fleet(
    workdir: Path,
    pki: DeployPki,
    *,
    count: int = 3,
    extra_images: Sequence[str] = (),
    upstream: str = "demo",
    bridge_args: Sequence[str] = (),
    read_timeout: str = "120s",
    platform: SimulatedTdx | None = None,
) -> Iterator[Fleet]:
    """``count`` bridges of ``IMAGE_DIGEST`` (plus one per ``extra_images``) behind nginx."""
    platform_dir = workdir / "platform"
    if not (platform_dir / "platform.json").exists():
        (platform or SimulatedTdx.generate(None, now=int(time.time()))).save(platform_dir)
    public_port = free_port()
    audience = f"localhost:{public_port}"
    images = [IMAGE_DIGEST] * count + list(extra_images)
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                running_bridge(
                    workdir / f"bridge-{i}",
                    upstream=upstream,
                    simulated_dir=platform_dir,
                    args=["--image-digest", image, "--audience", audience, *bridge_args],
                )
            )
            for i, image in enumerate(images)
        ]
        backends = [b.url.removeprefix("ws://").rstrip("/") for b in started]
        proxy = stack.enter_context(
            running_nginx(backends, pki, read_timeout=read_timeout, port=public_port)
        )
        assert proxy.audience == audience
        yield Fleet(proxy, started[:count], started[count:], pki, platform_dir)
