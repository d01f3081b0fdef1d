"""CollateralCache: served only after re-verification, expired by nextUpdate, robust to tampering.

The fetcher talks to a local server replaying recorded PCS responses (tests/data/pcs); the
verifier is the real one (attestation.verify's collateral checks against Intel's root, or
against a simulated platform's root where a test needs collateral we can re-issue).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from attestation.collateral import Collateral
from attestation.collateral_cache import (
    COLLATERAL_CHECKS,
    MAX_ENTRY_BYTES,
    CollateralCache,
    IntelCollateralVerifier,
    collateral_expiry,
)
from attestation.errors import CollateralError, CollateralFetchError
from attestation.pcs import CaType, CollateralFetcher, ServiceKind
from attestation.quote_parser import parse_quote
from attestation.report import CheckStatus
from attestation.simulated import SimulatedTdx
from attestation.verify import CHECK_NAMES, verify_quote
from tests.data.pcs.server import (
    PATH_PCK_CRL,
    PATH_QE_IDENTITY,
    PATH_ROOT_CA_CRL_DER,
    PATH_TCB,
    RecordedPcs,
    Reply,
    serve_recorded_pcs,
)
from tests.vectors import TDX_CASES, tdx_case

CASE = "v4-uptodate"
NOW = tdx_case(CASE).now
FMSPC = "B0C06F000000"
REQUESTS_PER_FETCH = 4


class CountingVerifier:
    """The real verifier, counting the times it ran and at which ``now``."""

    def __init__(self, inner: IntelCollateralVerifier | None = None) -> None:
        self.inner = inner or IntelCollateralVerifier()
        self.calls: list[int] = []

    def __call__(self, collateral: Collateral, now: int) -> None:
        self.calls.append(now)
        self.inner(collateral, now)


@pytest.fixture
def pcs() -> Iterator[RecordedPcs]:
    with serve_recorded_pcs() as state:
        state.case = CASE
        yield state


@pytest.fixture
def verifier() -> CountingVerifier:
    return CountingVerifier()


def fetcher_for(pcs: RecordedPcs) -> CollateralFetcher:
    return CollateralFetcher(
        pcs.url, service=ServiceKind.PCS, root_ca_crl_url=pcs.root_ca_crl_url, timeout=5.0
    )


@pytest.fixture
def cache(tmp_path: Path, pcs: RecordedPcs, verifier: CountingVerifier) -> CollateralCache:
    return CollateralCache(tmp_path / "collateral", fetcher_for(pcs), verifier)


def vector_collateral(case: str = CASE) -> Collateral:
    return Collateral.from_json(tdx_case(case).collateral_json)


def rewrite_entry(path: Path, edit: dict[str, str]) -> None:
    """Replace fields of the cached collateral, keeping the file well-formed."""
    entry = json.loads(path.read_bytes())
    entry["collateral"].update(edit)
    path.write_text(json.dumps(entry))


# --- Hits, misses and re-verification ---------------------------------------------------------


def test_first_use_fetches_verifies_and_stores(
    cache: CollateralCache, pcs: RecordedPcs, verifier: CountingVerifier
) -> None:
    collateral = cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert collateral == vector_collateral()
    assert pcs.request_count() == REQUESTS_PER_FETCH
    assert verifier.calls == [NOW]
    assert cache.path_for(FMSPC, CaType.PLATFORM).is_file()


def test_cache_hit_does_not_contact_the_service(cache: CollateralCache, pcs: RecordedPcs) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert cache.get(FMSPC, "platform", NOW) == vector_collateral()
    assert cache.get(bytes.fromhex(FMSPC), CaType.PLATFORM, NOW) == vector_collateral()
    assert pcs.request_count() == REQUESTS_PER_FETCH


def test_entry_from_disk_is_reverified_before_first_use(
    tmp_path: Path, cache: CollateralCache, pcs: RecordedPcs
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    # A new process: nothing remembered, so the file must be verified again before use.
    verifier = CountingVerifier()
    fresh = CollateralCache(cache.directory, fetcher_for(pcs), verifier)
    assert fresh.get(FMSPC, CaType.PLATFORM, NOW) == vector_collateral()
    assert verifier.calls == [NOW]
    assert pcs.request_count() == REQUESTS_PER_FETCH


def test_memo_holds_only_for_the_exact_bytes_verified(
    cache: CollateralCache, pcs: RecordedPcs, verifier: CountingVerifier
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert verifier.calls == [NOW]  # unchanged bytes, inside the window: memoised
    path = cache.path_for(FMSPC, CaType.PLATFORM)
    path.write_text(json.dumps(json.loads(path.read_bytes())))  # same content, other bytes
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert verifier.calls == [NOW, NOW]
    assert pcs.request_count() == REQUESTS_PER_FETCH


def test_memo_spans_later_times_inside_the_validity_window(
    tmp_path: Path, pcs: RecordedPcs
) -> None:
    sim = SimulatedTdx.generate(b"cache-memo", now=NOW)
    verifier = CountingVerifier(IntelCollateralVerifier([sim.root_certificate]))
    cache = CollateralCache(tmp_path, fetcher_for(pcs), verifier)
    pcs.serve_collateral(sim.collateral(now=NOW))
    first = cache.get(sim.config.fmspc, CaType.PLATFORM, NOW)
    later = collateral_expiry(first) - 1
    assert cache.get(sim.config.fmspc, CaType.PLATFORM, later) is first
    assert verifier.calls == [NOW]


def test_memo_is_not_used_for_a_time_before_its_verification(
    cache: CollateralCache, verifier: CountingVerifier
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    cache.get(FMSPC, CaType.PLATFORM, NOW - 60)
    assert verifier.calls == [NOW, NOW - 60]


def test_tampered_tcb_info_in_cache_is_rejected_and_refetched(
    cache: CollateralCache,
    pcs: RecordedPcs,
    verifier: CountingVerifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    path = cache.path_for(FMSPC, CaType.PLATFORM)
    genuine = vector_collateral().tcb_info.raw
    # Well-formed, right FMSPC, right shape: only the signature check can tell.
    forged = genuine.replace('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":99')
    assert forged != genuine
    rewrite_entry(path, {"tcb_info": forged})

    with caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"):
        collateral = cache.get(FMSPC, CaType.PLATFORM, NOW)

    assert collateral.tcb_info.raw == genuine
    assert collateral.tcb_info.tcb_evaluation_data_number == 17
    assert pcs.request_count() == 2 * REQUESTS_PER_FETCH
    assert "failed re-verification" in caplog.text
    assert "tcb_info_signature" in caplog.text
    assert json.loads(path.read_bytes())["collateral"]["tcb_info"] == genuine


def test_flipped_signature_bit_in_cache_is_rejected_by_a_fresh_process(
    cache: CollateralCache, pcs: RecordedPcs, caplog: pytest.LogCaptureFixture
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    path = cache.path_for(FMSPC, CaType.PLATFORM)
    signature = bytearray(vector_collateral().qe_identity_signature)
    signature[10] ^= 0x01
    rewrite_entry(path, {"qe_identity_signature": signature.hex()})

    fresh = CollateralCache(cache.directory, fetcher_for(pcs), CountingVerifier())
    with caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"):
        collateral = fresh.get(FMSPC, CaType.PLATFORM, NOW)
    assert collateral == vector_collateral()
    assert "qe_identity_signature" in caplog.text
    assert pcs.request_count() == 2 * REQUESTS_PER_FETCH


def test_entry_swapped_for_an_untrusted_roots_collateral_is_rejected(
    cache: CollateralCache, pcs: RecordedPcs, caplog: pytest.LogCaptureFixture
) -> None:
    # Validly signed, right FMSPC and CA type, current: but not by Intel.
    sim = SimulatedTdx.generate(b"cache-swap", now=NOW, fmspc=bytes.fromhex(FMSPC))
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    path = cache.path_for(FMSPC, CaType.PLATFORM)
    rewrite_entry(path, sim.collateral())

    with caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"):
        collateral = cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert collateral == vector_collateral()
    assert "root_ca" in caplog.text
    assert pcs.request_count() == 2 * REQUESTS_PER_FETCH


def test_entry_swapped_for_another_platforms_valid_collateral_is_rejected(
    tmp_path: Path, pcs: RecordedPcs, caplog: pytest.LogCaptureFixture
) -> None:
    # Both platforms share one (trusted) hierarchy: the swapped-in collateral is genuinely
    # signed and current, so only the check that it answers *this* FMSPC can refuse it.
    ours = SimulatedTdx.generate(b"cache-fmspc", now=NOW, fmspc=bytes.fromhex(FMSPC))
    theirs = SimulatedTdx.generate(b"cache-fmspc", now=NOW, fmspc=bytes.fromhex("90C06F000000"))
    assert ours.root_pem == theirs.root_pem
    verifier = IntelCollateralVerifier([ours.root_certificate])
    verifier(Collateral.from_json(theirs.collateral()), NOW)  # it does verify on its own
    cache = CollateralCache(tmp_path, fetcher_for(pcs), verifier)
    pcs.serve_collateral(ours.collateral())
    genuine = cache.get(FMSPC, CaType.PLATFORM, NOW)
    rewrite_entry(cache.path_for(FMSPC, CaType.PLATFORM), theirs.collateral())

    with caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"):
        collateral = cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert collateral == genuine
    assert "TCB Info is for FMSPC 90C06F000000" in caplog.text
    assert pcs.request_count() == 2 * REQUESTS_PER_FETCH


def corrupt_entries() -> list[tuple[str, bytes | None]]:
    genuine_other = tdx_case("v5-uptodate").collateral_json
    return [
        ("empty", b""),
        ("not JSON", b"\x00\x01garbage"),
        ("truncated", None),  # filled in from the real file
        ("JSON list", b"[]"),
        ("deeply nested", b"[" * 100_000),
        ("wrong format", json.dumps({"format": "other/1"}).encode()),
        ("other platform's collateral", json.dumps({"collateral": genuine_other}).encode()),
    ]


@pytest.mark.parametrize(("label", "content"), corrupt_entries())
def test_corrupt_cache_file_is_discarded_and_refetched(
    cache: CollateralCache,
    pcs: RecordedPcs,
    caplog: pytest.LogCaptureFixture,
    label: str,
    content: bytes | None,
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    path = cache.path_for(FMSPC, CaType.PLATFORM)
    good = path.read_bytes()
    if label == "truncated":
        content = good[: len(good) // 2]
    elif label in ("wrong format", "other platform's collateral"):
        # Keep the envelope right except for what is being tested.
        entry = json.loads(good)
        entry.update(json.loads(content or b"{}"))
        content = json.dumps(entry).encode()
    assert content is not None
    path.write_bytes(content)

    fresh = CollateralCache(cache.directory, fetcher_for(pcs), CountingVerifier())
    with caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"):
        collateral = fresh.get(FMSPC, CaType.PLATFORM, NOW)
    assert collateral == vector_collateral()
    assert "discarding collateral cache entry" in caplog.text
    assert pcs.request_count() == 2 * REQUESTS_PER_FETCH
    assert path.read_bytes() == good


def test_fifo_planted_at_the_entry_path_does_not_hang(
    cache: CollateralCache, pcs: RecordedPcs, caplog: pytest.LogCaptureFixture
) -> None:
    path = cache.path_for(FMSPC, CaType.PLATFORM)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)  # opening this for reading would block until a writer appears
    with caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"):
        assert cache.get(FMSPC, CaType.PLATFORM, NOW) == vector_collateral()
    assert "not a regular file" in caplog.text
    assert path.is_file()


def test_oversized_entry_is_discarded_unread(
    cache: CollateralCache, pcs: RecordedPcs, caplog: pytest.LogCaptureFixture
) -> None:
    path = cache.path_for(FMSPC, CaType.PLATFORM)
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        f.truncate(MAX_ENTRY_BYTES + 1)  # sparse: costs no disk
    with caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"):
        assert cache.get(FMSPC, CaType.PLATFORM, NOW) == vector_collateral()
    assert f"larger than {MAX_ENTRY_BYTES} bytes" in caplog.text


def test_entry_written_for_another_source_is_not_used(
    tmp_path: Path, cache: CollateralCache, pcs: RecordedPcs
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    other = CollateralFetcher(
        pcs.url + "/sgx/certification/v4", service="pcs", root_ca_crl_url=pcs.root_ca_crl_url
    )
    # Same base URL after normalisation: same source, same file.
    assert other.source_id == cache.fetcher.source_id
    pccs = CollateralFetcher(pcs.url)  # a PCCS at the same host is another source
    assert pccs.source_id != cache.fetcher.source_id
    second = CollateralCache(cache.directory, pccs, CountingVerifier())
    assert second.path_for(FMSPC, "platform") != cache.path_for(FMSPC, "platform")
    # Even copied over, an entry recorded for another source is refused.
    second.path_for(FMSPC, "platform").write_bytes(cache.path_for(FMSPC, "platform").read_bytes())
    second.get(FMSPC, CaType.PLATFORM, NOW)
    assert pcs.request_count() == 2 * REQUESTS_PER_FETCH


# --- Expiry --------------------------------------------------------------------------------------


def test_expiry_is_the_earliest_next_update_of_all_parts() -> None:
    collateral = vector_collateral()
    pck_crl = x509.load_der_x509_crl(collateral.pck_crl)
    root_crl = x509.load_der_x509_crl(collateral.root_ca_crl)
    assert pck_crl.next_update_utc is not None
    assert root_crl.next_update_utc is not None
    parts = [
        collateral.tcb_info.next_update,
        collateral.qe_identity.next_update,
        int(pck_crl.next_update_utc.timestamp()),
        int(root_crl.next_update_utc.timestamp()),
    ]
    # In this vector the PCK CRL is the first part to go stale (one second after ``now``).
    assert collateral_expiry(collateral) == min(parts) == int(pck_crl.next_update_utc.timestamp())
    assert min(parts) < collateral.next_update


def test_expired_entry_is_never_served_even_if_the_service_serves_it_again(
    cache: CollateralCache, pcs: RecordedPcs, verifier: CountingVerifier
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    expiry = collateral_expiry(vector_collateral())
    assert cache.get(FMSPC, CaType.PLATFORM, expiry - 1) == vector_collateral()
    assert pcs.request_count() == REQUESTS_PER_FETCH
    with pytest.raises(CollateralError, match="expired"):
        cache.get(FMSPC, CaType.PLATFORM, expiry)
    assert pcs.request_count() == 2 * REQUESTS_PER_FETCH  # it did try to refresh


def test_expired_entry_is_not_served_when_the_service_is_down(
    cache: CollateralCache, pcs: RecordedPcs
) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    for path in (PATH_PCK_CRL, PATH_TCB, PATH_QE_IDENTITY, PATH_ROOT_CA_CRL_DER):
        pcs.overrides[path] = Reply(503)
    with pytest.raises(CollateralFetchError) as info:
        cache.get(FMSPC, CaType.PLATFORM, collateral_expiry(vector_collateral()))
    assert info.value.status == 503


def test_expired_entry_is_replaced_by_newer_collateral(tmp_path: Path, pcs: RecordedPcs) -> None:
    sim = SimulatedTdx.generate(b"cache-expiry", now=NOW)
    fmspc = sim.config.fmspc
    verifier = CountingVerifier(IntelCollateralVerifier([sim.root_certificate]))
    cache = CollateralCache(tmp_path, fetcher_for(pcs), verifier)

    pcs.serve_collateral(sim.collateral(now=NOW))
    first = cache.get(fmspc, CaType.PLATFORM, NOW)
    expiry = collateral_expiry(first)
    assert cache.get(fmspc, CaType.PLATFORM, expiry - 1) is first
    assert pcs.request_count() == REQUESTS_PER_FETCH

    pcs.serve_collateral(sim.collateral(now=expiry))
    second = cache.get(fmspc, CaType.PLATFORM, expiry)
    assert pcs.request_count() == 2 * REQUESTS_PER_FETCH
    assert second.tcb_info.issue_date > first.tcb_info.issue_date
    assert collateral_expiry(second) > expiry
    # The new entry is what is on disk now.
    fresh = CollateralCache(tmp_path, fetcher_for(pcs), verifier)
    assert fresh.get(fmspc, CaType.PLATFORM, expiry) == second


# --- Failures of fresh collateral ------------------------------------------------------------


def test_fresh_collateral_failing_verification_is_raised_and_not_stored(
    tmp_path: Path, pcs: RecordedPcs
) -> None:
    sim = SimulatedTdx.generate(b"cache-untrusted", now=NOW)
    trusting_only_sim = IntelCollateralVerifier([sim.root_certificate])
    cache = CollateralCache(tmp_path, fetcher_for(pcs), trusting_only_sim)
    with pytest.raises(CollateralError, match="root_ca"):
        cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert list(tmp_path.iterdir()) == []


def test_collateral_not_yet_valid_at_now_is_refused(cache: CollateralCache) -> None:
    issued = vector_collateral().issue_date
    with pytest.raises(CollateralError, match="not yet valid"):
        cache.get(FMSPC, CaType.PLATFORM, issued - 1)
    assert not cache.path_for(FMSPC, CaType.PLATFORM).exists()


def test_fetch_failure_without_entry_is_a_fetch_error(
    cache: CollateralCache, pcs: RecordedPcs
) -> None:
    pcs.overrides[PATH_TCB] = Reply(500)
    with pytest.raises(CollateralFetchError, match="HTTP 500"):
        cache.get(FMSPC, CaType.PLATFORM, NOW)


def test_verifier_returning_a_verdict_instead_of_raising_is_refused(
    tmp_path: Path, pcs: RecordedPcs
) -> None:
    def returns_false(collateral: Collateral, now: int) -> None:
        return False  # type: ignore[return-value]

    cache = CollateralCache(tmp_path, fetcher_for(pcs), returns_false)
    with pytest.raises(TypeError, match="must raise on failure"):
        cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("now", [float(NOW), True, str(NOW)])
def test_now_that_is_not_int_seconds_is_refused(cache: CollateralCache, now: object) -> None:
    with pytest.raises(TypeError, match="now must be an int"):
        cache.get(FMSPC, CaType.PLATFORM, now)  # type: ignore[arg-type]


# --- Files ---------------------------------------------------------------------------------------


def test_file_name_names_fmspc_ca_type_and_source(cache: CollateralCache) -> None:
    path = cache.path_for(FMSPC.lower(), "platform")
    assert path.parent == cache.directory
    assert path.name == f"tdx-{FMSPC}-platform-{cache.fetcher.source_id[:16]}.json"
    assert cache.path_for(FMSPC, CaType.PROCESSOR) != path


def test_write_leaves_only_the_entry(cache: CollateralCache) -> None:
    cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert [p.name for p in cache.directory.iterdir()] == [
        cache.path_for(FMSPC, CaType.PLATFORM).name
    ]


def test_failed_write_leaves_no_partial_file_and_still_answers(
    cache: CollateralCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with caplog.at_level(logging.WARNING, logger="attestation.collateral_cache"):
        collateral = cache.get(FMSPC, CaType.PLATFORM, NOW)
    assert collateral == vector_collateral()  # verified, so usable without the cache
    assert "disk full" in caplog.text
    assert list(cache.directory.iterdir()) == []


def test_concurrent_misses_fetch_once(cache: CollateralCache, pcs: RecordedPcs) -> None:
    results: list[Collateral] = []

    def worker() -> None:
        results.append(cache.get(FMSPC, CaType.PLATFORM, NOW))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [vector_collateral()] * 4
    assert pcs.request_count() == REQUESTS_PER_FETCH


# --- Quotes and the default verifier ------------------------------------------------------------


def test_get_for_quote_uses_the_quotes_platform(cache: CollateralCache, pcs: RecordedPcs) -> None:
    pcs.case = "v5-uptodate"
    vector = tdx_case("v5-uptodate")
    collateral = cache.get_for_quote(parse_quote(vector.quote), vector.now)
    assert collateral.to_json() == vector.collateral_json


def test_collateral_checks_are_checks_of_verify() -> None:
    assert set(COLLATERAL_CHECKS) <= set(CHECK_NAMES)


def _flip_bit(hex_text: str, byte: int = 5) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[byte] ^= 0x01
    return raw.hex()


def _differential_cases() -> list[tuple[str, str, dict[str, str], int]]:
    """(label, vector case whose quote to use, collateral JSON, now)."""
    cases: list[tuple[str, str, dict[str, str], int]] = []
    for name in TDX_CASES:
        vector = tdx_case(name)
        c = vector.collateral_json
        col = Collateral.from_json(c)
        pck_crl = x509.load_der_x509_crl(col.pck_crl)
        assert pck_crl.next_update_utc is not None
        cases += [
            (f"{name}: genuine", name, c, vector.now),
            (f"{name}: after nextUpdate", name, c, col.next_update + 1),
            (f"{name}: before issueDate", name, c, col.issue_date - 1),
            (
                f"{name}: at the PCK CRL's nextUpdate",
                name,
                c,
                int(pck_crl.next_update_utc.timestamp()),
            ),
        ]
    c = tdx_case(CASE).collateral_json
    damaged = {
        "flipped TCB Info signature": {"tcb_info_signature": _flip_bit(c["tcb_info_signature"])},
        "flipped QE identity signature": {
            "qe_identity_signature": _flip_bit(c["qe_identity_signature"])
        },
        "TCB Info chain of another signer": {"tcb_info_issuer_chain": c["pck_crl_issuer_chain"]},
        "PCK CRL as root CA CRL": {"root_ca_crl": c["pck_crl"]},
        "root CA CRL as PCK CRL": {"pck_crl": c["root_ca_crl"]},
        "flipped PCK CRL signature": {"pck_crl": _flip_bit(c["pck_crl"], -3)},
        "flipped root CA CRL signature": {"root_ca_crl": _flip_bit(c["root_ca_crl"], -3)},
    }
    for label, edit in damaged.items():
        cases.append((label, CASE, {**c, **edit}, NOW))
    sim = SimulatedTdx.generate(b"differential", now=NOW, fmspc=bytes.fromhex(FMSPC))
    cases.append(("simulated, under Intel's root", CASE, sim.collateral(), NOW))
    return cases


@pytest.mark.parametrize(
    ("label", "quote_case", "collateral_json", "now"),
    _differential_cases(),
    ids=[case[0] for case in _differential_cases()],
)
def test_intel_verifier_agrees_with_verify_quote(
    label: str, quote_case: str, collateral_json: dict[str, str], now: int
) -> None:
    collateral = Collateral.from_json(collateral_json)
    report = verify_quote(tdx_case(quote_case).quote, collateral, now=now)
    statuses = {name: report.check(name).status for name in COLLATERAL_CHECKS}
    first_failure = next((n for n in COLLATERAL_CHECKS if statuses[n] is CheckStatus.FAIL), None)
    refusal: str | None = None
    try:
        IntelCollateralVerifier()(collateral, now)
    except CollateralError as exc:
        refusal = str(exc)
    if refusal is None:
        assert all(s is CheckStatus.PASS for s in statuses.values()), f"{label}: {statuses}"
    else:
        assert first_failure is not None, f"{label}: we refused ({refusal}), verify_quote not"
        assert refusal.startswith(f"collateral check {first_failure} failed"), label


def test_intel_verifier_accepts_simulated_collateral_only_under_its_root() -> None:
    sim = SimulatedTdx.generate(b"differential", now=NOW)
    collateral = Collateral.from_json(sim.collateral())
    IntelCollateralVerifier([sim.root_certificate])(collateral, NOW)
    report = verify_quote(
        sim.quote(bytes(64)), collateral, now=NOW, trusted_roots=[sim.root_certificate]
    )
    assert all(report.check(n).status is CheckStatus.PASS for n in COLLATERAL_CHECKS)
    with pytest.raises(CollateralError, match="collateral check root_ca failed"):
        IntelCollateralVerifier()(collateral, NOW)


@pytest.mark.parametrize("case", TDX_CASES)
def test_intel_verifier_accepts_every_vector_at_its_now(case: str) -> None:
    vector = tdx_case(case)
    IntelCollateralVerifier()(Collateral.from_json(vector.collateral_json), vector.now)


def test_intel_verifier_refuses_collateral_past_its_next_update() -> None:
    collateral = vector_collateral()
    with pytest.raises(CollateralError, match="expired"):
        IntelCollateralVerifier()(collateral, collateral.next_update + 1)


def test_default_cache_uses_intel_pcs_and_the_intel_verifier(tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path)
    assert isinstance(cache.fetcher, CollateralFetcher)
    assert cache.fetcher.service is ServiceKind.PCS
    # Nothing is fetched until get() is called; this test stays offline.
    assert list(tmp_path.iterdir()) == []
