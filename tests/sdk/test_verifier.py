"""``AttestationVerifier``: each refusal on real (Intel) and simulated evidence, no network.

Every test names the fault it stops; each refusal asserts the ``check`` that fired, so removing
that check makes its test fail.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from attestation import _spec
from attestation.collateral import Collateral
from attestation.eventlog import RuntimeEventLog
from attestation.image_hash import aggregate_image_hash
from attestation.policy import MeasurementPins, Policy
from attestation.quote import Quote
from attestation.quote_parser import parse_quote
from attestation.simulated import SimulatedTd, SimulatedTdx
from shroud_sdk.channel.constants import Suite
from shroud_sdk.channel.evidence import EventLog, Evidence
from shroud_sdk.errors import AttestationFailedError, HandshakeError
from shroud_sdk.verifier import AttestationReport, AttestationVerifier
from tests.vectors import REPO_ROOT, tdx_case

NOW = int(time.time())
SIM = Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM
REAL = Suite.P256_HKDF_SHA256_AES256GCM
REPORT_DATA = bytes(range(64))


@pytest.fixture(scope="module")
def platform() -> SimulatedTdx:
    return SimulatedTdx.generate(b"verifier-tests", now=NOW)


@pytest.fixture
def td(platform: SimulatedTdx) -> SimulatedTd:
    return platform.td()


def _policy(platform: SimulatedTdx, td: SimulatedTd, **changes: object) -> Policy:
    fields: dict[str, object] = {
        "trusted_roots": (platform.root_pem.decode("ascii"),),
        "measurements": MeasurementPins(mr_td=frozenset({td.measurements.mr_td.hex()})),
        "allow_simulated_tee": True,
    }
    fields.update(changes)
    return Policy(**fields)


def _evidence(
    platform: SimulatedTdx,
    quote: bytes,
    *,
    logs: tuple[EventLog, ...] = (),
    collateral: bool = True,
    kind: str = "tdx",
) -> Evidence:
    shipped = json.dumps(platform.collateral(now=NOW)).encode() if collateral else None
    return Evidence(kind, quote, logs, shipped)


def _refused(verifier: AttestationVerifier, evidence: Evidence, suite: int, check: str) -> object:
    with pytest.raises(AttestationFailedError) as info:
        verifier(evidence, suite)
    assert info.value.check == check, info.value
    assert isinstance(info.value, HandshakeError)  # the channel core passes it through
    return info.value.report


def test_genuine_simulated_evidence_proves_its_reportdata(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    verifier = AttestationVerifier(_policy(platform, td))
    result = verifier(_evidence(platform, td.quote(REPORT_DATA)), SIM)
    assert result.report_data == REPORT_DATA
    report = result.report
    assert report.ok
    assert report.simulated
    assert report.collateral_origin == "evidence"
    assert report.measurements["mr_td"] == td.measurements.mr_td.hex()
    quote = report.verification.quote
    assert isinstance(quote, Quote)
    assert report.image_hash == aggregate_image_hash(quote.td_report)
    assert "ACCEPTED" in report.summary()


def test_simulated_suite_is_refused_unless_the_policy_allows_it(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    verifier = AttestationVerifier(_policy(platform, td, allow_simulated_tee=False))
    report = _refused(verifier, _evidence(platform, td.quote(REPORT_DATA)), SIM, "simulated-tee")
    assert report is None  # refused before the quote was even looked at


def test_simulated_quote_claiming_the_real_suite_is_refused(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    verifier = AttestationVerifier(_policy(platform, td))
    report = _refused(verifier, _evidence(platform, td.quote(REPORT_DATA)), REAL, "simulated-tee")
    assert isinstance(report, AttestationReport)


def test_other_evidence_type_is_refused(platform: SimulatedTdx, td: SimulatedTd) -> None:
    verifier = AttestationVerifier(_policy(platform, td))
    evidence = _evidence(platform, td.quote(REPORT_DATA), kind="sev-snp")
    _refused(verifier, evidence, SIM, "evidence-type")


def test_garbage_quote_is_refused(platform: SimulatedTdx, td: SimulatedTd) -> None:
    verifier = AttestationVerifier(_policy(platform, td))
    _refused(verifier, _evidence(platform, b"\x04\x00" + bytes(100)), SIM, "quote-format")


def test_quote_with_altered_measurement_is_refused(platform: SimulatedTdx, td: SimulatedTd) -> None:
    quote = bytearray(td.quote(REPORT_DATA))
    quote[48 + 136] ^= 0x01  # a byte of MRTD inside the signed TD report body
    verifier = AttestationVerifier(_policy(platform, td))
    report = _refused(verifier, _evidence(platform, bytes(quote)), SIM, "verification")
    assert isinstance(report, AttestationReport)
    assert report.verification.check("quote_signature").status.value == "fail"


def test_unpinned_mrtd_is_refused_by_policy(platform: SimulatedTdx, td: SimulatedTd) -> None:
    other = MeasurementPins(mr_td=frozenset({"cd" * 48}))
    verifier = AttestationVerifier(_policy(platform, td, measurements=other))
    report = _refused(verifier, _evidence(platform, td.quote(REPORT_DATA)), SIM, "policy")
    assert isinstance(report, AttestationReport)
    assert report.policy_result is not None
    assert [v.field for v in report.policy_result.violations] == ["measurements.mr_td"]
    assert "REJECTED" in report.summary()


def test_event_log_that_does_not_replay_is_refused(platform: SimulatedTdx, td: SimulatedTd) -> None:
    log = RuntimeEventLog()
    log.append("shroud.image-digest", b"sha256:" + b"0" * 64)  # never extended into RTMR3
    logs = (EventLog("shroud-runtime", log.to_bytes()),)
    verifier = AttestationVerifier(_policy(platform, td))
    report = _refused(
        verifier, _evidence(platform, td.quote(REPORT_DATA), logs=logs), SIM, "policy"
    )
    assert isinstance(report, AttestationReport)
    assert report.policy_result is not None
    assert "event_log" in [v.field for v in report.policy_result.violations]


def test_malformed_event_log_is_refused(platform: SimulatedTdx, td: SimulatedTd) -> None:
    logs = (EventLog("shroud-runtime", b'{"not": "a log"'),)
    verifier = AttestationVerifier(_policy(platform, td))
    _refused(verifier, _evidence(platform, td.quote(REPORT_DATA), logs=logs), SIM, "event-log")


def test_no_collateral_anywhere_is_refused(platform: SimulatedTdx, td: SimulatedTd) -> None:
    verifier = AttestationVerifier(_policy(platform, td))
    evidence = _evidence(platform, td.quote(REPORT_DATA), collateral=False)
    _refused(verifier, evidence, SIM, "collateral")


def test_collateral_source_is_asked_when_the_evidence_has_none(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    asked: list[int] = []

    class Source:
        def get_for_quote(self, quote: Quote, now: int) -> Collateral:
            asked.append(now)
            return Collateral.from_json(platform.collateral(now=NOW))

    verifier = AttestationVerifier(_policy(platform, td), collateral_source=Source())
    evidence = _evidence(platform, td.quote(REPORT_DATA), collateral=False)
    assert verifier(evidence, SIM).report.collateral_origin == "source"
    assert len(asked) == 1


def test_cached_collateral_is_still_checked_against_the_time(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    clock = [float(NOW)]
    verifier = AttestationVerifier(_policy(platform, td), clock=lambda: clock[0])
    evidence = _evidence(platform, td.quote(REPORT_DATA))
    assert verifier(evidence, SIM).report.ok
    clock[0] = NOW + 400 * 86400  # long after the collateral's nextUpdate
    report = _refused(verifier, evidence, SIM, "verification")
    assert isinstance(report, AttestationReport)
    assert report.verification.check("tcb_info_validity").status.value == "fail"


def test_each_quote_is_verified_even_with_cached_collateral(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    verifier = AttestationVerifier(_policy(platform, td))
    assert verifier(_evidence(platform, td.quote(REPORT_DATA)), SIM).report.ok
    second = td.quote(bytes(64))
    # Flip a bit inside the quote signature, located from the parsed quote, so the damage
    # always lands on signed material (a fixed offset from the end can fall on PEM armour).
    signature = parse_quote(second).signature_data.signature
    at = second.index(signature)
    damaged = second[:at] + bytes([second[at] ^ 0x01]) + second[at + 1 :]
    report = _refused(verifier, _evidence(platform, damaged), SIM, "verification")
    assert isinstance(report, AttestationReport)
    assert [c.name for c in report.verification.failed] == ["quote_signature"]


def test_different_evidence_collateral_is_verified_afresh_on_a_warm_verifier(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    # Prepared collateral is cached by the exact bytes received; other bytes must not hit it.
    verifier = AttestationVerifier(_policy(platform, td))
    quote = td.quote(REPORT_DATA)
    assert verifier(_evidence(platform, quote), SIM).report.ok
    forged = dict(platform.collateral(now=NOW))
    signature = bytearray.fromhex(forged["tcb_info_signature"])
    signature[0] ^= 0x01
    forged["tcb_info_signature"] = signature.hex()
    evidence = Evidence("tdx", quote, (), json.dumps(forged).encode())
    report = _refused(verifier, evidence, SIM, "verification")
    assert isinstance(report, AttestationReport)
    assert report.verification.check("tcb_info_signature").status.value == "fail"


# -- real Intel evidence -----------------------------------------------------------------------


def _dstack_evidence() -> tuple[Evidence, int]:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    log = EventLog("dstack", Path(case.event_log_path).read_bytes())
    collateral = json.dumps(case.collateral_json).encode()
    return Evidence("tdx", case.quote, (log,), collateral), case.now


def test_real_intel_quote_is_accepted_by_the_example_policy() -> None:
    evidence, now = _dstack_evidence()
    policy = Policy.load(REPO_ROOT / "examples" / "policy.toml")
    verifier = AttestationVerifier(policy, clock=lambda: now)
    result = verifier(evidence, REAL)
    assert result.report.ok
    assert not result.report.simulated
    assert result.report_data == tdx_case("v4-dstack-eventlog").quote[568:632]


def test_real_intel_quote_on_the_simulated_suite_is_refused() -> None:
    evidence, now = _dstack_evidence()
    policy = Policy.load(REPO_ROOT / "examples" / "policy.toml")
    allowing = Policy(
        **(policy.model_dump(exclude={"custom_checks"}) | {"allow_simulated_tee": True})
    )
    verifier = AttestationVerifier(allowing, clock=lambda: now)
    _refused(verifier, evidence, SIM, "simulated-tee")


def _v5_evidence_with_service_td() -> tuple[Evidence, int]:
    """The real TDX 1.5 quote with a bit of MRSERVICETD set (no longer authentic, of course)."""
    case = tdx_case("v5-uptodate")
    assert parse_quote(case.quote).td_report.mr_service_td is not None
    offset = next(at for name, at, _ in _spec.TD_REPORT15_EXTRA_FIELDS if name == "mr_service_td")
    at = _spec.HEADER_SIZE + _spec.V5_BODY_TYPE_SIZE + _spec.V5_BODY_SIZE_SIZE + offset
    quote = case.quote[:at] + bytes([case.quote[at] ^ 0x01]) + case.quote[at + 1 :]
    return Evidence("tdx", quote, (), json.dumps(case.collateral_json).encode()), case.now


@pytest.mark.parametrize("allowed", [False, True])
def test_policy_mr_service_td_choice_reaches_the_quote_check(allowed: bool) -> None:
    # A policy allowing a service TD must be honoured, and one refusing it must not be
    # silently widened: the verifier passes the choice to verify_quote. (No simulated TDX 1.5
    # quote exists, so the altered real quote also fails its signature either way.)
    evidence, now = _v5_evidence_with_service_td()
    policy = Policy(allow_unpinned_measurements=True, allow_mr_service_td_nonzero=allowed)
    verifier = AttestationVerifier(policy, clock=lambda: now)
    report = _refused(verifier, evidence, REAL, "verification")
    assert isinstance(report, AttestationReport)
    failed = [c.name for c in report.verification.failed]
    assert failed == (["quote_signature"] if allowed else ["quote_signature", "mr_service_td"])
