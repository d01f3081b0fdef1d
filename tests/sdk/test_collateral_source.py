"""A real ``CollateralCache`` as the client's ``collateral_source``, fed by a local PCS server.

A bridge may ship its quote without collateral (``--collateral none``); the client then gets
the collateral through ``attestation.collateral_cache.CollateralCache`` from a PCS-shaped
service (``tests/data/pcs/server.py`` on 127.0.0.1, serving the simulated platform's signed
collateral). The cache directory is untrusted: a tampered entry must be refused and fetched
again, and never used when the service cannot be reached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import shroud_sdk
from attestation.collateral_cache import CollateralCache, IntelCollateralVerifier
from attestation.pcs import CaType, CollateralFetcher, ServiceKind
from tests.data.pcs.server import PATH_TCB, RecordedPcs, Reply, serve_recorded_pcs
from tests.sdk.harness import AUDIENCE, ThreadBridge, thread_bridge


@pytest.fixture
def bare_bridge(tmp_path: Path) -> Iterator[ThreadBridge]:
    """An in-process bridge whose evidence carries the quote and event log, no collateral."""
    with thread_bridge(tmp_path / "bridge", args=["--collateral", "none"]) as b:
        yield b


@pytest.fixture
def pcs(bare_bridge: ThreadBridge) -> Iterator[RecordedPcs]:
    with serve_recorded_pcs() as server:
        server.serve_collateral(bare_bridge.provider.platform.collateral())
        yield server


def _cache(directory: Path, pcs: RecordedPcs, bridge: ThreadBridge) -> CollateralCache:
    fetcher = CollateralFetcher(
        pcs.url, service=ServiceKind.PCS, root_ca_crl_url=pcs.root_ca_crl_url, timeout=5.0
    )
    # The simulated platform's root signs its collateral, as Intel's root signs real ones.
    root = bridge.provider.platform.root_certificate
    return CollateralCache(directory, fetcher, IntelCollateralVerifier([root]))


def _client(
    bridge: ThreadBridge, cache: CollateralCache | None, max_retries: int = 2
) -> shroud_sdk.OpenAI:
    return shroud_sdk.OpenAI(
        bridge_url=bridge.url,
        api_key="k",
        policy=bridge.policy,
        audience=AUDIENCE,
        collateral_source=cache,
        max_retries=max_retries,
    )


def _entry_path(cache: CollateralCache, bridge: ThreadBridge) -> Path:
    return cache.path_for(bridge.provider.platform.config.fmspc, CaType.PLATFORM)


def test_bridge_without_collateral_is_refused_when_the_client_has_no_source(
    bare_bridge: ThreadBridge,
) -> None:
    with (
        _client(bare_bridge, None, max_retries=0) as client,
        pytest.raises(shroud_sdk.AttestationError) as info,
    ):
        client.models.list()
    assert info.value.check == "collateral"


def test_collateral_is_fetched_through_the_cache_and_verifies_the_bridge(
    bare_bridge: ThreadBridge, pcs: RecordedPcs, tmp_path: Path
) -> None:
    cache = _cache(tmp_path / "collateral", pcs, bare_bridge)
    with _client(bare_bridge, cache) as client:
        assert client.models.list().data
        report = client.attestation
        assert report is not None
        assert report.ok
        assert report.collateral_origin == "source"
    fetched = pcs.request_count()
    assert fetched > 0
    assert _entry_path(cache, bare_bridge).is_file()

    # A new client (new verifier, new cache object) on the same directory: served from disk.
    with _client(bare_bridge, _cache(tmp_path / "collateral", pcs, bare_bridge)) as again:
        assert again.models.list().data
        assert again.attestation is not None
        assert again.attestation.ok
    assert pcs.request_count() == fetched


def _forge_tcb_info_signature(path: Path) -> None:
    """Flip one hex digit of the cached TCB Info signature (the file stays well-formed)."""
    entry = json.loads(path.read_bytes())
    signature: str = entry["collateral"]["tcb_info_signature"]
    flipped = "1" if signature[-1] != "1" else "2"
    entry["collateral"]["tcb_info_signature"] = signature[:-1] + flipped
    path.write_text(json.dumps(entry))


def test_tampered_cache_entry_is_refused_and_refetched(
    bare_bridge: ThreadBridge,
    pcs: RecordedPcs,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = tmp_path / "collateral"
    with _client(bare_bridge, _cache(directory, pcs, bare_bridge)) as client:
        client.models.list()
    path = _entry_path(_cache(directory, pcs, bare_bridge), bare_bridge)
    genuine = path.read_bytes()
    fetched = pcs.request_count()
    _forge_tcb_info_signature(path)

    with (
        caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"),
        _client(bare_bridge, _cache(directory, pcs, bare_bridge)) as client,
    ):
        assert client.models.list().data
        assert client.attestation is not None
        assert client.attestation.ok
    assert "failed re-verification" in caplog.text
    assert pcs.request_count() > fetched  # fetched again from the service
    assert json.loads(path.read_bytes()) == json.loads(genuine)  # and the entry repaired


def test_tampered_cache_entry_is_never_used_when_the_service_is_down(
    bare_bridge: ThreadBridge, pcs: RecordedPcs, tmp_path: Path
) -> None:
    directory = tmp_path / "collateral"
    with _client(bare_bridge, _cache(directory, pcs, bare_bridge)) as client:
        client.models.list()
    _forge_tcb_info_signature(_entry_path(_cache(directory, pcs, bare_bridge), bare_bridge))
    pcs.overrides[PATH_TCB] = Reply(status=503, body=b"down")

    with _client(bare_bridge, _cache(directory, pcs, bare_bridge), max_retries=0) as client:
        with pytest.raises(shroud_sdk.AttestationError) as info:
            client.models.list()
        assert isinstance(info.value, openai.APIConnectionError)
    assert info.value.check == "collateral"
