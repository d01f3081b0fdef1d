"""Attested-key evidence end to end: real ``shroud_sdk.OpenAI`` clients, real bridge subprocesses
whose simulated quotes cost what a stock kernel's configfs-tsm costs (1 s, one at a time).

These assert behaviour, never speed: how many quotes the bridge made (its own
``shroud_bridge_quotes_generated_total``), that every client succeeded, and that a fresh-quote
client waited at least one quote's time. The timings themselves (median first-request latency,
handshakes per second) are measured by ``benchmarks/handshake.py``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

import shroud_sdk
from attestation.policy import Policy
from shroud_sdk.channel.evidence import EvidenceMode
from tests.bridgeproc import BridgeProcess, running_bridge

QUOTE_LATENCY = 1.0


@pytest.fixture(scope="module")
def slow_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """A bridge whose every quote takes a second (the configfs-tsm polling interval)."""
    with running_bridge(
        tmp_path_factory.mktemp("slow-quotes"),
        args=["--simulated-quote-latency", str(QUOTE_LATENCY)],
    ) as bridge:
        yield bridge


def quotes_generated(bridge: BridgeProcess) -> dict[str, float]:
    """The bridge's quote counter by purpose, scraped from its /metrics."""
    text = httpx2.get(bridge.metrics_url, timeout=10, trust_env=False).text
    counts = {"attested_key": 0.0, "fresh": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "shroud_bridge_quotes_generated_total":
                counts[sample.labels["purpose"]] = sample.value
    return counts


def _with(policy: Policy, **changes: object) -> Policy:
    data = policy.model_dump(exclude={"custom_checks"})
    data.update(changes)
    return Policy(**data)


def _one_request(bridge: BridgeProcess, policy: Policy | Path) -> shroud_sdk.AttestationReport:
    with shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=policy, max_retries=0) as c:
        assert c.models.list().data
        report = c.attestation
    assert report is not None
    assert report.ok
    return report


def test_thirty_sequential_new_clients_cost_no_new_quote(slow_bridge: BridgeProcess) -> None:
    before = quotes_generated(slow_bridge)
    for _ in range(30):
        report = _one_request(slow_bridge, slow_bridge.policy_path)
        assert report.evidence_mode is EvidenceMode.ATTESTED_KEY
        assert report.evidence_window is not None
    after = quotes_generated(slow_bridge)
    assert sum(after.values()) - sum(before.values()) <= 3  # at most a rotation or so
    assert after["fresh"] == before["fresh"]


def test_fifty_parallel_new_clients_all_succeed(slow_bridge: BridgeProcess) -> None:
    before = quotes_generated(slow_bridge)
    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [
            pool.submit(_one_request, slow_bridge, slow_bridge.policy_path) for _ in range(50)
        ]
        reports = [f.result(timeout=120) for f in futures]
    assert all(r.evidence_mode is EvidenceMode.ATTESTED_KEY for r in reports)
    assert quotes_generated(slow_bridge)["fresh"] == before["fresh"]


def test_fresh_quote_client_gets_its_own_quote_and_waits_for_it(
    slow_bridge: BridgeProcess,
) -> None:
    fresh = _with(slow_bridge.policy, fresh_quote=True)
    before = quotes_generated(slow_bridge)
    started = time.monotonic()
    report = _one_request(slow_bridge, fresh)
    elapsed = time.monotonic() - started
    assert report.evidence_mode is EvidenceMode.FRESH
    assert report.evidence_window is None
    assert quotes_generated(slow_bridge)["fresh"] == before["fresh"] + 1
    assert elapsed >= QUOTE_LATENCY  # its first request waited for its own quote


def test_fresh_quotes_beyond_the_source_budget_are_refused_with_a_typed_error(
    tmp_path: Path,
) -> None:
    with running_bridge(
        tmp_path, args=["--fresh-quote-burst", "1", "--fresh-quotes-per-minute", "1"]
    ) as bridge:
        fresh = _with(bridge.policy, fresh_quote=True)
        assert _one_request(bridge, fresh).evidence_mode is EvidenceMode.FRESH
        with (
            pytest.raises(shroud_sdk.FreshQuoteRateLimitedError) as refused,
            shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=fresh, max_retries=0) as c,
        ):
            c.models.list()
        assert refused.value.retry_after is not None
        assert 1 <= refused.value.retry_after <= 60
        assert quotes_generated(bridge)["fresh"] == 1  # the refusal cost no quote
        # Attested-key clients from the same source are not limited.
        assert _one_request(bridge, bridge.policy_path).evidence_mode is EvidenceMode.ATTESTED_KEY


def test_failing_rotation_serves_the_key_until_it_expires_then_refuses(tmp_path: Path) -> None:
    lifetime = 10  # the shortest the bridge allows: rotation due after 5 s
    with running_bridge(tmp_path, args=["--evidence-lifetime", str(lifetime)]) as bridge:
        started = time.monotonic()
        # Break the simulated quoting service: its host lock can no longer be opened.
        lock = bridge.workdir / "simulated" / "quote.lock"
        lock.unlink()
        lock.mkdir()
        try:
            deadline = started + lifetime - 2
            while "rotation FAILED" not in bridge.log_text():
                assert time.monotonic() < deadline, bridge.log_text()[-2000:]
                time.sleep(0.1)
            assert "still serving the current key" in bridge.log_text()
            _one_request(bridge, bridge.policy_path)  # the old key still serves
            time.sleep(max(0.0, started + lifetime + 0.5 - time.monotonic()))
            with (
                pytest.raises(shroud_sdk.AttestationError) as refused,
                shroud_sdk.OpenAI(
                    bridge_url=bridge.url, api_key="k", policy=bridge.policy_path, max_retries=0
                ) as c,
            ):
                c.models.list()
            assert refused.value.check == "evidence-unavailable"
            log = bridge.log_text()
            assert "ERROR" in log
            assert "EXPIRED" in log
        finally:
            shutil.rmtree(lock, ignore_errors=True)
