"""dcap-qvl as a test-only oracle: it reproduces the vectors' reference results, and our
parser and verifier agree with it, on the vectors and on perturbations of them.

dcap-qvl 0.7 (Rust, Python bindings) is an independent DCAP verifier. First we check that the
oracle itself says what ``expected.json`` recorded (so a changed dcap-qvl cannot silently move
the goalposts). Then the differential part: the same quote and collateral at the same time
must get the same verdict from both, including for tampered quotes and for times on either
side of every validity boundary in the collateral, and a rejection must be blamed on the
corresponding check of ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.collateral import Collateral
from attestation.errors import QuoteFormatError
from attestation.pck import parse_pck_extensions, split_pem_chain
from attestation.quote_parser import parse_quote
from attestation.report import CheckStatus, TcbStatus, VerificationReport
from attestation.verify import verify_quote
from tests.vectors import TDX_CASES, TdxCase, tdx_case


@dataclass(frozen=True)
class OracleVerdict:
    ok: bool
    status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    error: str | None = None


def _oracle(quote: bytes, collateral_json: dict[str, Any], now: int) -> OracleVerdict:
    collateral = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral_json))
    try:
        result = dcap_qvl.verify(quote, collateral, now)
    except ValueError as exc:
        return OracleVerdict(ok=False, error=str(exc))
    return OracleVerdict(ok=True, status=result.status, advisory_ids=tuple(result.advisory_ids))


def _ours(quote: bytes, collateral_json: dict[str, Any], now: int) -> VerificationReport:
    return verify_quote(quote, Collateral.from_json(collateral_json), now=now)


def _assert_same_verdict(oracle: OracleVerdict, ours: VerificationReport, where: str) -> None:
    failed = [c.name for c in ours.failed]
    assert ours.ok is oracle.ok, f"{where}: dcap-qvl {oracle}, ours failed {failed}"
    if oracle.ok:
        assert oracle.status is not None
        assert ours.tcb_status == TcbStatus(oracle.status), where
        assert sorted(ours.advisory_ids) == sorted(oracle.advisory_ids), where
    else:
        # dcap-qvl stops at its first failure; ours records every check and SKIPs the ones a
        # failed check should have enabled. So the check dcap-qvl blames must not have
        # PASSED in our report (it failed, or could not run because something before it did).
        assert oracle.error is not None
        blamed = _blame(oracle.error)
        not_passed = {c.name for c in ours.checks if c.status is not CheckStatus.PASS}
        assert blamed & not_passed, (
            f"{where}: dcap-qvl rejected with {oracle.error!r}; "
            f"ours failed {failed}, but passed all of {sorted(blamed)}"
        )


# dcap-qvl's error text -> the checks of ours that must fail for the same reason.
_BLAME = (
    ("Debug mode is enabled", {"td_attributes"}),
    ("SEPT_VE_DISABLE is not enabled", {"td_attributes"}),
    ("ISV enclave report signature is invalid", {"quote_signature"}),
    ("Unknown QE vendor ID", {"quote_header"}),
    ("Signature is invalid for qe_report", {"qe_report_signature"}),
    ("QE report hash mismatch", {"qe_report_data"}),
    ("TCBInfo issue date is in the future", {"tcb_info_validity"}),
    ("TCBInfo expired", {"tcb_info_validity"}),
    ("QE Identity issue date is in the future", {"qe_identity_validity"}),
    ("QE Identity expired", {"qe_identity_validity"}),
    ("CrlExpired", {"root_ca_crl", "pck_crl", "pck_revocation"}),
    ("CertExpired", {"pck_chain", "tcb_info_chain", "qe_identity_chain", "root_ca"}),
    ("CertNotValidYet", {"pck_chain", "tcb_info_chain", "qe_identity_chain", "root_ca"}),
)


def _blame(error: str) -> set[str]:
    for needle, checks in _BLAME:
        if needle in error:
            return checks
    raise AssertionError(f"no mapping for dcap-qvl error {error!r}: extend _BLAME")


# --- The oracle reproduces the recorded reference results -------------------------------------


@pytest.mark.parametrize("name", TDX_CASES)
def test_dcap_qvl_reproduces_reference_result(name: str) -> None:
    case = tdx_case(name)
    verdict = _oracle(case.quote, case.collateral_json, case.now)
    reference = case.expected["reference_result"]
    assert verdict.ok is reference["ok"]
    if reference["ok"]:
        assert verdict.status == reference["tcb_status"]
        assert list(verdict.advisory_ids) == reference["advisory_ids"]
    else:
        assert verdict.error == reference["error"]


# --- Parsing: our decoding equals dcap-qvl's --------------------------------------------------


_REPORT_FIELDS = {
    "tee_tcb_svn": "tee_tcb_svn",
    "mr_seam": "mr_seam",
    "mr_signer_seam": "mr_signer_seam",
    "seam_attributes": "seam_attributes",
    "td_attributes": "td_attributes",
    "xfam": "xfam",
    "mr_td": "mr_td",
    "mr_config_id": "mr_config_id",
    "mr_owner": "mr_owner",
    "mr_owner_config": "mr_owner_config",
    "rtmr0": "rt_mr0",
    "rtmr1": "rt_mr1",
    "rtmr2": "rt_mr2",
    "rtmr3": "rt_mr3",
    "report_data": "report_data",
}


@pytest.mark.parametrize("name", TDX_CASES)
def test_parsed_fields_equal_dcap_qvl_parse(name: str) -> None:
    case = tdx_case(name)
    ours = parse_quote(case.quote)
    theirs = dcap_qvl.parse_quote(case.quote)
    header = ours.header
    assert (
        header.version,
        header.attestation_key_type,
        header.tee_type,
        header.qe_svn,
        header.pce_svn,
        header.qe_vendor_id,
        header.user_data,
    ) == (
        theirs.header.version,
        theirs.header.attestation_key_type,
        theirs.header.tee_type,
        theirs.header.qe_svn,
        theirs.header.pce_svn,
        bytes(theirs.header.qe_vendor_id),
        bytes(theirs.header.user_data),
    )
    for our_name, their_name in _REPORT_FIELDS.items():
        assert getattr(ours.td_report, our_name) == bytes(getattr(theirs.report, their_name))
    if ours.td_report.is_tdx15:
        assert ours.td_report.tee_tcb_svn_2 == bytes(theirs.report.tee_tcb_svn2)
        assert ours.td_report.mr_service_td == bytes(theirs.report.mr_service_td)
    else:
        assert not hasattr(theirs.report, "tee_tcb_svn2")
    # dcap-qvl drops the chain's NUL terminator; the certificates are the same.
    pem = ours.signature_data.certification.pck_chain_pem
    assert pem.rstrip(b"\x00") == bytes(theirs.cert_chain_pem_bytes())
    leaf = split_pem_chain(pem)[0]
    assert parse_pck_extensions(leaf).fmspc.hex().upper() == theirs.fmspc()


# --- Verification: same verdicts --------------------------------------------------------------


@pytest.mark.parametrize("name", TDX_CASES)
def test_verdict_equals_dcap_qvl_on_every_vector(name: str) -> None:
    case = tdx_case(name)
    _assert_same_verdict(
        _oracle(case.quote, case.collateral_json, case.now),
        _ours(case.quote, case.collateral_json, case.now),
        name,
    )


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _tamper_offsets(case: TdxCase) -> dict[str, int]:
    """One byte in each signed or binding structure of the quote."""
    quote = parse_quote(case.quote)
    body = len(quote.signed_region) - (648 if quote.td_report.is_tdx15 else 584)
    sig_data = len(quote.signed_region) + 4
    qe_report = sig_data + 64 + 64 + 6
    auth = qe_report + 384 + 64 + 2
    return {
        "header-qe-vendor-id": 12,
        "header-user-data": 30,
        "body-mr-td": body + 136,
        "body-report-data": len(quote.signed_region) - 1,
        "quote-signature": sig_data,
        "attestation-key": sig_data + 64,
        "qe-report-mr-enclave": qe_report + 64,
        "qe-report-report-data": qe_report + 320,
        "qe-report-signature": qe_report + 384,
        "qe-auth-data": auth,
    }


_TAMPERED = (
    "header-qe-vendor-id",
    "header-user-data",
    "body-mr-td",
    "body-report-data",
    "quote-signature",
    "attestation-key",
    "qe-report-mr-enclave",
    "qe-report-report-data",
    "qe-report-signature",
    "qe-auth-data",
)


@pytest.mark.parametrize("what", _TAMPERED)
@pytest.mark.parametrize("name", TDX_CASES)
def test_tampered_quote_verdict_equals_dcap_qvl(name: str, what: str) -> None:
    case = tdx_case(name)
    raw = parse_quote(case.quote).raw
    tampered = _flip(raw, _tamper_offsets(case)[what])
    oracle = _oracle(tampered, case.collateral_json, case.now)
    ours = _ours(tampered, case.collateral_json, case.now)
    assert not oracle.ok
    _assert_same_verdict(oracle, ours, f"{name} {what}")


@dataclass(frozen=True)
class Window:
    """The validity interval of one piece of a case's evidence; its ends are the boundaries."""

    what: str
    start: int
    end: int


def _validity_windows(case: TdxCase) -> list[Window]:
    collateral = Collateral.from_json(case.collateral_json)
    windows = [
        Window("tcb_info", collateral.tcb_info.issue_date, collateral.tcb_info.next_update),
        Window(
            "qe_identity", collateral.qe_identity.issue_date, collateral.qe_identity.next_update
        ),
    ]
    for key in ("root_ca_crl", "pck_crl"):
        crl = x509.load_der_x509_crl(bytes.fromhex(case.collateral_json[key]))
        assert crl.next_update_utc is not None
        windows.append(
            Window(
                key,
                int(crl.last_update_utc.timestamp()),
                int(crl.next_update_utc.timestamp()),
            )
        )
    chains = {
        "pck_chain": parse_quote(case.quote).signature_data.certification.pck_chain_pem,
        "tcb_info_chain": case.collateral_json["tcb_info_issuer_chain"].encode(),
        "qe_identity_chain": case.collateral_json["qe_identity_issuer_chain"].encode(),
        "pck_crl_chain": case.collateral_json["pck_crl_issuer_chain"].encode(),
    }
    for chain, pem in chains.items():
        for i, cert in enumerate(split_pem_chain(pem)):
            windows.append(
                Window(
                    f"{chain}[{i}]",
                    int(cert.not_valid_before_utc.timestamp()),
                    int(cert.not_valid_after_utc.timestamp()),
                )
            )
    return windows


def _boundary_params() -> list[Any]:
    params = []
    for name in TDX_CASES:
        windows = _validity_windows(tdx_case(name))
        for window in windows:
            for label, instant in (("start", window.start), ("end", window.end)):
                for delta in (-1, 0, 1):
                    params.append(
                        pytest.param(
                            name, instant + delta, id=f"{name}-{window.what}.{label}{delta:+d}"
                        )
                    )
    return params


@pytest.mark.parametrize(("name", "when"), _boundary_params())
def test_verdict_equals_dcap_qvl_at_every_validity_boundary(name: str, when: int) -> None:
    case = tdx_case(name)
    raw = parse_quote(case.quote).raw
    _assert_same_verdict(
        _oracle(raw, case.collateral_json, when),
        _ours(raw, case.collateral_json, when),
        f"{name} at {when}",
    )


# --- Parser differential under mutation ---------------------------------------------------------

_REAL_RAW = [parse_quote(tdx_case(name).quote).raw for name in TDX_CASES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(_REAL_RAW) - 1),
    edits=st.lists(
        st.tuples(st.integers(0, 1300) | st.integers(0, 6000), st.integers(0, 255)),
        min_size=1,
        max_size=3,
    ),
)
def test_whatever_we_parse_dcap_qvl_parses_to_the_same_fields(
    which: int, edits: list[tuple[int, int]]
) -> None:
    # We are the stricter parser: a quote we accept must mean the same thing to dcap-qvl, or
    # the two would verify different readings of one byte string.
    data = bytearray(_REAL_RAW[which])
    for index, value in edits:
        data[index % len(data)] = value
    try:
        ours = parse_quote(bytes(data))
    except QuoteFormatError:
        return
    theirs = dcap_qvl.parse_quote(bytes(data))
    assert ours.header.version == theirs.header.version
    for our_name, their_name in _REPORT_FIELDS.items():
        assert getattr(ours.td_report, our_name) == bytes(getattr(theirs.report, their_name))
    pem = ours.signature_data.certification.pck_chain_pem
    assert pem.rstrip(b"\x00") == bytes(theirs.cert_chain_pem_bytes())
