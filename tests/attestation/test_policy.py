"""The attestation policy: one violation test per field, TOML loading, custom checks."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.errors import PolicyError
from attestation.eventlog import (
    EventLog,
    RuntimeEventLog,
    dstack_event_digest,
    extend,
    parse_dstack_event_log,
    parse_event_log,
    replay_against,
)
from attestation.image_hash import aggregate_image_hash
from attestation.policy import (
    PINNABLE_REGISTERS,
    Policy,
    PolicyCheck,
    PolicyInput,
    PolicyResult,
    PolicyViolationError,
    Violation,
)
from attestation.quote import Quote
from attestation.quote_parser import parse_quote
from attestation.report import CheckStatus, TcbStatus, VerificationReport
from attestation.trust import INTEL_SGX_ROOT_CA_SHA256
from attestation.validate import BASELINE_RULES, PolicyRules, evaluate_policy
from tests.vectors import TDX_CASES, TdxCase, tdx_case

ANY = {"allow_unpinned_measurements": True}
DSTACK = tdx_case("v4-dstack-eventlog")


def report_for(case: TdxCase, *, quote: Quote | None = None, ok: bool = True) -> VerificationReport:
    """A report with the verdict an independent verifier (dcap-qvl) gave this real quote.

    The policy is tested on its own here; verify.py's tests establish these reports.
    """
    ref = case.expected["reference_result"]
    report = VerificationReport(
        quote=quote or parse_quote(case.quote),
        tcb_status=TcbStatus(ref["tcb_status"]) if "tcb_status" in ref else None,
        advisory_ids=tuple(ref.get("advisory_ids", ())),
        fmspc=bytes.fromhex(case.expected["fmspc"]),
        verified_at=case.now,
        collateral_issue_date=case.now - 3600,
        trusted_root_sha256=INTEL_SGX_ROOT_CA_SHA256,
    )
    report.add("quote_signature", CheckStatus.PASS, "signature valid")
    if not ok:
        report.add("td_attributes", CheckStatus.FAIL, "DEBUG set")
    return report


def dstack_replay(records: list[dict[str, object]] | None = None) -> tuple[EventLog, bytes]:
    assert DSTACK.event_log_path is not None
    data = DSTACK.event_log_path.read_bytes() if records is None else json.dumps(records).encode()
    return parse_dstack_event_log(data), data


def dstack_records() -> list[dict[str, object]]:
    assert DSTACK.event_log_path is not None
    records: list[dict[str, object]] = json.loads(DSTACK.event_log_path.read_bytes())
    return records


def fields_of(result: PolicyResult) -> list[str]:
    return [v.field for v in result.violations]


def with_td(case: TdxCase, **changes: bytes) -> Quote:
    quote = parse_quote(case.quote)
    return dataclasses.replace(quote, td_report=dataclasses.replace(quote.td_report, **changes))


# --- the defaults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["v4-uptodate", "v5-uptodate", "v4-dstack-eventlog", "neg-outofdate"],
)
def test_default_policy_matches_each_vectors_expected_verdict(name: str) -> None:
    case = tdx_case(name)
    result = Policy(**ANY).evaluate(report_for(case))
    assert result.ok is case.expected["expect_accept_default_policy"], result.violations


def test_baseline_rules_are_the_unpinned_default_policy_field_by_field() -> None:
    # shroud-attest verify without a policy file evaluates BASELINE_RULES (no pydantic); they
    # must be exactly Policy(allow_unpinned_measurements=True), on every rule evaluated.
    policy = Policy(**ANY)
    rules = [n for n in dir(PolicyRules) if not n.startswith("_")]
    assert len(rules) >= 16
    for name in rules:
        if name == "trusted_root_certificates":
            assert BASELINE_RULES.trusted_root_certificates() == policy.trusted_root_certificates()
        elif name == "measurements":
            assert BASELINE_RULES.measurements.pinned() == policy.measurements.pinned() == {}
        else:
            assert getattr(BASELINE_RULES, name) == getattr(policy, name), name


@pytest.mark.parametrize("name", TDX_CASES)
@pytest.mark.parametrize("ok", [True, False])
def test_baseline_rules_give_the_default_policys_verdicts(name: str, ok: bool) -> None:
    report = report_for(tdx_case(name), ok=ok)
    assert evaluate_policy(BASELINE_RULES, report) == Policy(**ANY).evaluate(report)


def test_a_policy_that_pins_nothing_is_refused_unless_explicit() -> None:
    with pytest.raises(PolicyError, match="allow_unpinned_measurements"):
        Policy()
    with pytest.raises(PolicyError, match="allow_unpinned_measurements"):
        Policy.from_toml('allowed_tcb_statuses = ["UpToDate"]')
    # Owner-chosen IDs say nothing about the code that runs: they do not count as a pin.
    with pytest.raises(PolicyError, match="pins no measurement"):
        Policy(measurements={"mr_config_id": ["00" * 48]})
    assert Policy(measurements={"mr_td": ["00" * 48]}).pins_measurements


def test_unpinned_policy_smuggled_through_model_copy_is_still_rejected() -> None:
    pinned = Policy(measurements={"mr_td": [DSTACK.expected["mr_td"]]})
    unpinned = pinned.model_copy(update={"measurements": Policy(**ANY).measurements})
    result = unpinned.evaluate(report_for(DSTACK))
    assert "allow_unpinned_measurements" in fields_of(result)


def test_unpinned_choice_is_visible_in_the_normalised_policy() -> None:
    text = Policy(**ANY).to_toml()
    assert "allow_unpinned_measurements = true" in text
    assert "WARNING: no measurement is pinned" in text
    assert (
        "allow_unpinned_measurements = false" in Policy(allowed_image_hashes=["00" * 48]).to_toml()
    )


def test_policy_is_immutable() -> None:
    policy = Policy(**ANY)
    with pytest.raises(ValueError, match="frozen"):
        policy.allow_mr_service_td_nonzero = True
    with pytest.raises(TypeError):
        policy.required_rtmr3_events["x"] = frozenset()  # type: ignore[index]


# --- one violation per field -----------------------------------------------------------------


def test_report_that_failed_verification_is_a_violation() -> None:
    case = tdx_case("neg-debug-td")
    result = Policy(**ANY).evaluate(report_for(DSTACK, ok=False))
    assert "verification" in fields_of(result)
    assert "td_attributes" in result.violations[0].actual
    empty = VerificationReport(quote=parse_quote(case.quote), tcb_status=TcbStatus.UP_TO_DATE)
    assert "verification" in fields_of(Policy(**ANY).evaluate(empty))


def test_report_without_a_quote_is_a_violation() -> None:
    report = report_for(DSTACK)
    report.quote = None
    assert "quote" in fields_of(Policy(**ANY).evaluate(report))


def test_outofdate_tcb_is_rejected_by_default_and_accepted_when_allowed() -> None:
    case = tdx_case("neg-outofdate")
    assert fields_of(Policy(**ANY).evaluate(report_for(case))) == ["allowed_tcb_statuses"]
    lenient = Policy(allowed_tcb_statuses=["UpToDate", "OutOfDate"], **ANY)
    assert lenient.evaluate(report_for(case)).ok


def test_missing_tcb_status_is_a_violation() -> None:
    report = report_for(DSTACK)
    report.tcb_status = None
    assert "allowed_tcb_statuses" in fields_of(Policy(**ANY).evaluate(report))


def test_denied_advisory_is_rejected_even_when_its_status_is_allowed() -> None:
    case = tdx_case("neg-outofdate")
    policy = Policy(
        allowed_tcb_statuses=["OutOfDate"], denied_advisory_ids=["intel-sa-00982"], **ANY
    )
    result = policy.evaluate(report_for(case))
    assert fields_of(result) == ["denied_advisory_ids"]
    assert result.violations[0].actual == "INTEL-SA-00982"


def test_lowercase_advisory_in_the_report_still_matches_a_denied_id() -> None:
    # Collateral is not obliged to spell advisory IDs in upper case; a case difference must
    # not let a denied advisory through.
    report = report_for(DSTACK)
    report.advisory_ids = ("intel-sa-00960",)
    result = Policy(denied_advisory_ids=["INTEL-SA-00960"], **ANY).evaluate(report)
    assert fields_of(result) == ["denied_advisory_ids"]


def test_tee_tcb_svn_below_minimum_in_any_component_is_rejected() -> None:
    actual = DSTACK.expected["tee_tcb_svn"]  # 0b0104...
    assert Policy(min_tee_tcb_svn=actual, **ANY).evaluate(report_for(DSTACK)).ok
    higher_minor = "0c" + actual[2:]
    higher_major_only = "00" + "05" + actual[4:]  # minor lower, major higher: still rejected
    for minimum in (higher_minor, higher_major_only):
        result = Policy(min_tee_tcb_svn=minimum, **ANY).evaluate(report_for(DSTACK))
        assert fields_of(result) == ["min_tee_tcb_svn"]


def test_mr_seam_not_in_allowlist_is_rejected() -> None:
    good = Policy(allowed_mr_seam=[DSTACK.expected["mr_seam"]], **ANY)
    assert good.evaluate(report_for(DSTACK)).ok
    bad = Policy(allowed_mr_seam=["ab" * 48], **ANY)
    assert fields_of(bad.evaluate(report_for(DSTACK))) == ["allowed_mr_seam"]


def test_debug_td_attribute_is_rejected_under_mask() -> None:
    case = tdx_case("neg-debug-td")  # td_attributes 0100001000000000: DEBUG (bit 0) set
    policy = Policy(td_attributes={"value": "00" * 8, "mask": "01" + "00" * 7}, **ANY)
    report = report_for(case)
    report.tcb_status = TcbStatus.UP_TO_DATE  # isolate the attribute check
    result = policy.evaluate(report)
    assert fields_of(result) == ["td_attributes"]
    assert result.violations[0].actual == case.expected["td_attributes"]
    assert policy.evaluate(report_for(DSTACK)).ok


def test_xfam_differing_under_mask_is_rejected_and_ignored_outside_it() -> None:
    actual = int.from_bytes(bytes.fromhex(DSTACK.expected["xfam"]), "little")
    flipped = (actual ^ (1 << 17)).to_bytes(8, "little").hex()  # AMX tile config bit
    narrow = Policy(xfam={"value": flipped[:2] + "00" * 7, "mask": "ff" + "00" * 7}, **ANY)
    assert narrow.evaluate(report_for(DSTACK)).ok  # bit 17 is outside the mask
    full = Policy(xfam={"value": flipped, "mask": "ff" * 8}, **ANY)
    assert fields_of(full.evaluate(report_for(DSTACK))) == ["xfam"]


def test_mask_value_with_bits_outside_mask_is_refused() -> None:
    with pytest.raises(PolicyError, match="outside mask"):
        Policy(xfam={"value": "03" + "00" * 7, "mask": "01" + "00" * 7}, **ANY)


@pytest.mark.parametrize("register", PINNABLE_REGISTERS)
def test_register_not_in_its_allowlist_is_rejected(register: str) -> None:
    key = {"rtmr0": "rt_mr0", "rtmr1": "rt_mr1", "rtmr2": "rt_mr2", "rtmr3": "rt_mr3"}.get(
        register, register
    )
    actual = DSTACK.expected[key]
    good = Policy(measurements={register: ["ff" * 48, actual]}, **ANY)
    assert good.evaluate(report_for(DSTACK)).ok
    bad = Policy(measurements={register: ["ff" * 48]}, **ANY)
    result = bad.evaluate(report_for(DSTACK))
    assert fields_of(result) == [f"measurements.{register}"]
    assert result.violations[0].actual == actual


def test_aggregate_image_hash_not_allowed_is_rejected() -> None:
    quote = parse_quote(DSTACK.quote)
    own = aggregate_image_hash(quote.td_report).hex()
    assert Policy(allowed_image_hashes=[own]).evaluate(report_for(DSTACK)).ok
    other = tdx_case("v4-uptodate")
    result = Policy(allowed_image_hashes=[own]).evaluate(report_for(other))
    assert fields_of(result) == ["allowed_image_hashes"]


def test_fmspc_not_in_allowlist_is_rejected() -> None:
    assert Policy(allowed_fmspcs=["90c06f000000"], **ANY).evaluate(report_for(DSTACK)).ok
    result = Policy(allowed_fmspcs=["00806F050000"], **ANY).evaluate(report_for(DSTACK))
    assert fields_of(result) == ["allowed_fmspcs"]
    report = report_for(DSTACK)
    report.fmspc = None
    result = Policy(allowed_fmspcs=["90c06f000000"], **ANY).evaluate(report)
    assert fields_of(result) == ["allowed_fmspcs"]


def _self_signed_root() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Simulated Root")])
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM).decode()


def test_chain_ending_in_an_untrusted_root_is_rejected() -> None:
    other_root = _self_signed_root()
    # The vector's chain ends in Intel's root; a policy trusting only another root refuses it.
    result = Policy(trusted_roots=[other_root], **ANY).evaluate(report_for(DSTACK))
    assert fields_of(result) == ["trusted_roots"]
    report = report_for(DSTACK)
    report.trusted_root_sha256 = None
    assert fields_of(Policy(**ANY).evaluate(report)) == ["trusted_roots"]
    report.trusted_root_sha256 = b"\x00" * 32
    assert fields_of(Policy(**ANY).evaluate(report)) == ["trusted_roots"]


def test_trusted_roots_entry_smuggling_a_second_certificate_is_refused() -> None:
    # Only the first PEM block of an entry would be loaded; a second one would be silently
    # ignored, so the policy would not trust what its author reads in it.
    bundle = _self_signed_root() + _self_signed_root()
    with pytest.raises(PolicyError, match="exactly one PEM certificate"):
        Policy(trusted_roots=[bundle], **ANY)


def test_explicitly_trusted_root_is_accepted_and_returned_for_verification() -> None:
    root_pem = _self_signed_root()
    policy = Policy(trusted_roots=[root_pem], **ANY)
    (root,) = policy.trusted_root_certificates()
    report = report_for(DSTACK)
    report.trusted_root_sha256 = root.fingerprint(hashes.SHA256())
    assert policy.evaluate(report).ok


def test_collateral_older_than_allowed_is_rejected() -> None:
    assert Policy(max_collateral_age_seconds=3600, **ANY).evaluate(report_for(DSTACK)).ok
    result = Policy(max_collateral_age_seconds=3599, **ANY).evaluate(report_for(DSTACK))
    assert fields_of(result) == ["max_collateral_age_seconds"]
    report = report_for(DSTACK)
    report.collateral_issue_date = None
    result = Policy(max_collateral_age_seconds=3600, **ANY).evaluate(report)
    assert fields_of(result) == ["max_collateral_age_seconds"]


def test_nonzero_mr_service_td_is_rejected_unless_allowed() -> None:
    case = tdx_case("v5-uptodate")
    quote = with_td(case, mr_service_td=b"\x01" * 48)
    result = Policy(**ANY).evaluate(report_for(case, quote=quote))
    assert fields_of(result) == ["allow_mr_service_td_nonzero"]
    lenient = Policy(allow_mr_service_td_nonzero=True, **ANY)
    assert lenient.evaluate(report_for(case, quote=quote)).ok
    assert Policy(**ANY).evaluate(report_for(case)).ok


# --- event logs and required RTMR3 events ----------------------------------------------------


def _compose_digest() -> str:
    record = next(r for r in dstack_records() if r["event"] == "compose-hash")
    return str(record["digest"])


def test_required_event_with_allowed_digest_is_accepted() -> None:
    log, _ = dstack_replay()
    quote = parse_quote(DSTACK.quote)
    replay = replay_against([log], quote.td_report.rtmrs)
    policy = Policy(required_rtmr3_events={"compose-hash": [_compose_digest()]})
    assert policy.evaluate(report_for(DSTACK), replay).ok


def test_required_event_with_another_digest_is_rejected() -> None:
    log, _ = dstack_replay()
    replay = replay_against([log], parse_quote(DSTACK.quote).td_report.rtmrs)
    other = dstack_event_digest("compose-hash", b"\x00" * 32).hex()
    result = Policy(required_rtmr3_events={"compose-hash": [other]}).evaluate(
        report_for(DSTACK), replay
    )
    assert fields_of(result) == ["required_rtmr3_events.compose-hash"]
    assert result.violations[0].actual == _compose_digest()


def test_required_event_missing_from_the_log_is_rejected() -> None:
    log, _ = dstack_replay()
    replay = replay_against([log], parse_quote(DSTACK.quote).td_report.rtmrs)
    result = Policy(required_rtmr3_events={"shroud.image-digest": ["00" * 48]}).evaluate(
        report_for(DSTACK), replay
    )
    assert fields_of(result) == ["required_rtmr3_events.shroud.image-digest"]
    assert result.violations[0].actual == "no such event in RTMR3"


def test_required_event_without_any_log_is_rejected() -> None:
    policy = Policy(required_rtmr3_events={"compose-hash": [_compose_digest()]})
    result = policy.evaluate(report_for(DSTACK))
    assert fields_of(result) == ["required_rtmr3_events.compose-hash"]


def test_forged_log_payload_cannot_satisfy_a_required_event() -> None:
    # The attacker's TD ran another compose file; it presents the genuine record's digest.
    records = dstack_records()
    for r in records:
        if r["event"] == "compose-hash":
            r["event_payload"] = "11" * 32
    log, _ = dstack_replay(records)
    replay = replay_against([log], parse_quote(DSTACK.quote).td_report.rtmrs)
    policy = Policy(required_rtmr3_events={"compose-hash": [_compose_digest()]})
    result = policy.evaluate(report_for(DSTACK), replay)
    assert "event_log" in fields_of(result)
    assert "required_rtmr3_events.compose-hash" in fields_of(result)


def test_log_that_does_not_replay_to_the_quote_is_a_violation() -> None:
    records = [r for r in dstack_records() if r["imr"] != 1]
    log, _ = dstack_replay(records)
    replay = replay_against([log], parse_quote(DSTACK.quote).td_report.rtmrs)
    result = Policy(**ANY).evaluate(report_for(DSTACK), replay)
    assert fields_of(result) == ["event_log"]
    assert "RTMR1" in result.violations[0].actual


def test_one_of_two_same_named_events_with_a_bad_digest_is_rejected() -> None:
    runtime = RuntimeEventLog()
    rtmr3 = bytes(48)
    rtmr3 = extend(rtmr3, runtime.append("config-v", b"good"))
    rtmr3 = extend(rtmr3, runtime.append("config-v", b"evil"))
    quote = with_td(DSTACK, rtmr3=rtmr3)
    log = parse_event_log(runtime.to_bytes())
    replay = replay_against([log], quote.td_report.rtmrs)
    good = runtime.events[0].digest.hex()
    result = Policy(required_rtmr3_events={"config-v": [good]}).evaluate(
        report_for(DSTACK, quote=quote), replay
    )
    assert fields_of(result) == ["required_rtmr3_events.config-v"]


def test_malformed_bridge_digest_event_is_a_violation_not_a_crash() -> None:
    runtime = RuntimeEventLog()
    rtmr3 = extend(bytes(48), runtime.append("shroud.config-hash", b"short"))
    quote = with_td(DSTACK, rtmr3=rtmr3)
    replay = replay_against([parse_event_log(runtime.to_bytes())], quote.td_report.rtmrs)
    result = Policy(**ANY).evaluate(report_for(DSTACK, quote=quote), replay)
    assert fields_of(result) == ["event_log"]


# --- every violation, not the first ----------------------------------------------------------


def test_every_violation_is_reported() -> None:
    case = tdx_case("neg-outofdate")
    policy = Policy(
        allowed_fmspcs=["ffffffffffff"],
        allowed_mr_seam=["ab" * 48],
        measurements={"mr_td": ["cd" * 48], "rtmr0": ["ef" * 48]},
        max_collateral_age_seconds=1,
    )
    result = policy.evaluate(report_for(case))
    assert set(fields_of(result)) == {
        "allowed_tcb_statuses",
        "allowed_fmspcs",
        "allowed_mr_seam",
        "measurements.mr_td",
        "measurements.rtmr0",
        "max_collateral_age_seconds",
    }
    with pytest.raises(PolicyViolationError) as caught:
        result.raise_if_rejected()
    assert caught.value.result is result
    assert "measurements.mr_td" in str(caught.value)


# --- custom checks ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ComposeReleaseList:
    """Example custom check: the compose hash must be in a (signed) release list."""

    releases: frozenset[bytes]
    name: str = "compose_release"
    pins_measurements: bool = True

    def __call__(self, evidence: PolicyInput) -> Sequence[Violation]:
        compose = evidence.image_digests.compose_hash if evidence.image_digests else None
        if compose in self.releases:
            return []
        return [Violation("compose_hash", "a released compose hash", repr(compose))]


def _compose_payload() -> bytes:
    record = next(r for r in dstack_records() if r["event"] == "compose-hash")
    return bytes.fromhex(str(record["event_payload"]))


def test_custom_check_pins_measurements_and_sees_the_verified_compose_hash() -> None:
    check = ComposeReleaseList(frozenset({_compose_payload()}))
    assert isinstance(check, PolicyCheck)
    policy = Policy(custom_checks=(check,))  # satisfies the pin rule by itself
    log, _ = dstack_replay()
    replay = replay_against([log], parse_quote(DSTACK.quote).td_report.rtmrs)
    result = policy.evaluate(report_for(DSTACK), replay)
    assert result.ok
    assert "custom.compose_release" in result.evaluated


def test_custom_check_violation_is_reported() -> None:
    policy = Policy(custom_checks=(ComposeReleaseList(frozenset({b"other"})),))
    log, _ = dstack_replay()
    replay = replay_against([log], parse_quote(DSTACK.quote).td_report.rtmrs)
    assert fields_of(policy.evaluate(report_for(DSTACK), replay)) == ["compose_hash"]
    # Without a verified log the check sees no compose hash and rejects.
    assert fields_of(policy.evaluate(report_for(DSTACK))) == ["compose_hash"]


@dataclasses.dataclass(frozen=True)
class Exploding:
    name: str = "exploding"
    pins_measurements: bool = False

    def __call__(self, evidence: PolicyInput) -> Sequence[Violation]:
        raise RuntimeError("release list unreachable")


@dataclasses.dataclass(frozen=True)
class WrongType:
    name: str = "wrong_type"
    pins_measurements: bool = False

    def __call__(self, evidence: PolicyInput) -> Sequence[Violation]:
        return ["not a violation"]  # type: ignore[list-item]


def test_custom_check_that_raises_rejects_instead_of_passing() -> None:
    result = Policy(custom_checks=(Exploding(),), **ANY).evaluate(report_for(DSTACK))
    assert fields_of(result) == ["custom.exploding"]
    assert "release list unreachable" in result.violations[0].actual


def test_custom_check_returning_garbage_rejects() -> None:
    result = Policy(custom_checks=(WrongType(),), **ANY).evaluate(report_for(DSTACK))
    assert fields_of(result) == ["custom.wrong_type"]


def test_custom_check_that_pins_nothing_does_not_satisfy_the_pin_rule() -> None:
    # A check declaring pins_measurements = False (e.g. a rate limiter) must not stand in for
    # a measurement pin: only checks that constrain the code count.
    with pytest.raises(PolicyError, match="pins no measurement"):
        Policy(custom_checks=(Exploding(), WrongType()))
    assert not Policy(custom_checks=(Exploding(),), **ANY).pins_measurements


def test_non_check_object_is_refused_as_custom_check() -> None:
    with pytest.raises(PolicyError, match="custom_checks"):
        Policy(custom_checks=(len,), **ANY)


# --- TOML ------------------------------------------------------------------------------------

FULL_TOML = f"""
allow_unpinned_measurements = false
allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
denied_advisory_ids = ["INTEL-SA-00960"]
min_tee_tcb_svn = "0B010400000000000000000000000000"
allowed_mr_seam = ["{DSTACK.expected["mr_seam"]}"]
allowed_fmspcs = ["90C06F000000"]
max_collateral_age_seconds = 2592000
allow_mr_service_td_nonzero = false
trusted_roots = ["root.pem"]

[td_attributes]
value = "0000001000000000"
mask = "0100001000000000"

[xfam]
value = "e702060000000000"
mask = "ffffffffffffffff"

[measurements]
mr_td = ["{DSTACK.expected["mr_td"]}"]

[required_rtmr3_events]
"compose-hash" = ["{_compose_digest()}"]
"""


def test_full_toml_policy_loads_and_accepts_the_dstack_vector(tmp_path: Path) -> None:
    from tests.vectors import intel_root_pem

    (tmp_path / "root.pem").write_bytes(intel_root_pem())
    (tmp_path / "policy.toml").write_text(FULL_TOML)
    policy = Policy.load(tmp_path / "policy.toml")
    assert policy.min_tee_tcb_svn == "0b010400000000000000000000000000"
    assert policy.allowed_fmspcs == frozenset({"90c06f000000"})
    log, _ = dstack_replay()
    replay = replay_against([log], parse_quote(DSTACK.quote).td_report.rtmrs)
    result = policy.evaluate(report_for(DSTACK), replay)
    assert result.ok, result.violations
    # Normalised output reads back to the same policy.
    assert Policy.from_toml(policy.to_toml()) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allow_unpinned_measurment = true", "allow_unpinned_measurment: unknown key"),
        ("allow_unpinned_measurements = true\n[measurements]\nmrtd = []", "measurements.mrtd"),
        ("allow_unpinned_measurements = true\n[xfam]\nvalue='00'\nmask='00'\nx=1", "xfam.x"),
        ('allow_unpinned_measurements = true\nallowed_mr_seam = ["00"]', "48 bytes"),
        ('allow_unpinned_measurements = true\nallowed_fmspcs = ["zz0000000000"]', "6 bytes"),
        ("allow_unpinned_measurements = true\nallowed_mr_seam = []", "empty allowlist"),
        ("allow_unpinned_measurements = true\nallowed_tcb_statuses = []", "no TCB status"),
        ('allow_unpinned_measurements = true\nallowed_tcb_statuses = ["Fine"]', "Input should"),
        ('allow_unpinned_measurements = true\ndenied_advisory_ids = ["bad id"]', "advisory"),
        ("allow_unpinned_measurements = true\nmax_collateral_age_seconds = 0", "greater than"),
        ('allow_unpinned_measurements = "yes"', "bool"),
        ("allow_unpinned_measurements = true\ntrusted_roots = []", "trusts no root"),
        ('allow_unpinned_measurements = true\ntrusted_roots = ["-----BEGIN x"]', "PEM"),
        ("allow_unpinned_measurements = true\ntrusted_roots = ['missing.pem']", "cannot read"),
        ("[required_rtmr3_events]\nx = []", "empty digest list"),
        ('[required_rtmr3_events]\n"" = ["' + "00" * 48 + '"]', "event name"),
        ("allow_unpinned_measurements = true\ncustom_checks = [1]", "custom_checks"),
        ("allow_unpinned_measurements = = true", "not valid TOML"),
    ],
)
def test_invalid_policy_file_is_a_typed_error_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_toml(text, base_dir=Path("/nonexistent"))


def test_unreadable_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "absent.toml")


def test_shipped_example_policy_is_valid() -> None:
    from tests.vectors import REPO_ROOT

    policy = Policy.load(REPO_ROOT / "examples" / "policy.toml")
    assert policy.pins_measurements
    assert not policy.allow_unpinned_measurements


def test_documented_complete_example_is_valid_and_accepts_its_vector() -> None:
    from tests.vectors import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "policy.md").read_text()
    example = doc.split("## Complete example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    policy = Policy.from_toml(example)
    assert policy == Policy.load(REPO_ROOT / "examples" / "policy.toml")
    log, _ = dstack_replay()
    replay = replay_against([log], parse_quote(DSTACK.quote).td_report.rtmrs)
    assert policy.evaluate(report_for(DSTACK), replay).ok
