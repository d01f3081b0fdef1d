"""The bridge's evidence provider: the quote over exactly the given REPORTDATA, the runtime log,
and collateral (simulated, or through the re-verifying PCS cache) that really verifies it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography import x509

from attestation.collateral import Collateral
from attestation.collateral_cache import CollateralCache, IntelCollateralVerifier
from attestation.eventlog import RuntimeEventLog
from attestation.pcs import CaType
from attestation.quote_parser import parse_quote
from attestation.simulated import SimulatedTdx
from attestation.verify import verify_quote
from bridge.evidence import (
    EVIDENCE_TYPE_TDX,
    LOG_FORMAT_RUNTIME,
    BridgeEvidence,
    CachedPcsCollateral,
    SimulatedCollateral,
)
from bridge.providers.simulated import SimulatedQuoteProvider

NOW = int(time.time())


@pytest.fixture(scope="module")
def provider() -> SimulatedQuoteProvider:
    return SimulatedQuoteProvider(SimulatedTdx.generate(b"evidence tests", now=NOW).td())


def _runtime_log() -> bytes:
    log = RuntimeEventLog()
    log.append("shroud.config-hash", bytes(48))
    return log.to_bytes()


def test_evidence_quotes_exactly_the_given_report_data(provider: SimulatedQuoteProvider) -> None:
    evidence = BridgeEvidence(provider, _runtime_log())
    report_data = bytes(range(64))
    result = evidence(report_data)
    assert result.type == EVIDENCE_TYPE_TDX
    assert parse_quote(result.quote).td_report.report_data == report_data
    assert [log.format for log in result.event_logs] == [LOG_FORMAT_RUNTIME]
    assert result.event_logs[0].data == _runtime_log()
    assert result.collateral is None


def test_simulated_collateral_verifies_the_quote(provider: SimulatedQuoteProvider) -> None:
    evidence = BridgeEvidence(
        provider, _runtime_log(), collateral=SimulatedCollateral(provider), clock=lambda: NOW
    )
    result = evidence(bytes(64))
    assert result.collateral is not None
    report = verify_quote(
        result.quote,
        Collateral.from_json_text(result.collateral),
        now=NOW,
        trusted_roots=[provider.platform.root_certificate],
    )
    assert report.ok


class _SimulatedPcs:
    """A fetcher that answers like PCS, with the simulated platform's signed collateral."""

    source_id = "simulated-pcs"

    def __init__(self, provider: SimulatedQuoteProvider) -> None:
        self.provider = provider
        self.fetches = 0

    def fetch(self, fmspc: bytes | str, ca_type: CaType | str) -> Collateral:
        self.fetches += 1
        return Collateral.from_json(self.provider.collateral(NOW))


def test_pcs_collateral_comes_through_the_verifying_cache(
    provider: SimulatedQuoteProvider, tmp_path: Path
) -> None:
    fetcher = _SimulatedPcs(provider)
    root: x509.Certificate = provider.platform.root_certificate
    cache = CollateralCache(tmp_path, fetcher, IntelCollateralVerifier([root]))
    evidence = BridgeEvidence(
        provider, _runtime_log(), collateral=CachedPcsCollateral(cache), clock=lambda: NOW
    )
    first, second = evidence(bytes(64)), evidence(bytes(range(64)))
    assert first.collateral is not None
    assert first.collateral == second.collateral
    assert fetcher.fetches == 1  # the second handshake was served from the cache
    assert json.loads(first.collateral)["tcb_info"]


def test_collateral_failure_still_sends_the_quote(
    provider: SimulatedQuoteProvider, tmp_path: Path
) -> None:
    fetcher = _SimulatedPcs(provider)
    # Intel's root does not sign simulated collateral: the cache refuses it.
    cache = CollateralCache(tmp_path, fetcher, IntelCollateralVerifier())
    evidence = BridgeEvidence(
        provider, _runtime_log(), collateral=CachedPcsCollateral(cache), clock=lambda: NOW
    )
    result = evidence(bytes(64))
    assert result.collateral is None
    assert parse_quote(result.quote).td_report.report_data == bytes(64)


def test_evidence_provider_repr_shows_no_provider_or_keys(provider: SimulatedQuoteProvider) -> None:
    text = repr(BridgeEvidence(provider, _runtime_log()))
    assert "Simulated" not in text
    assert LOG_FORMAT_RUNTIME in text
