"""One fault per check: change exactly the input a check guards and see that check fail.

Real vectors are mutated where a mutation needs no signature (a flipped signature byte, a
re-serialised body, a time outside a window). Faults that need a *valid* signature over a
wrong statement (a CRL that revokes the PCK, a QE identity that does not match, a Revoked
TCB level, a debuggable TD) use the simulated TDX platform, whose root the test passes
explicitly, and re-sign collateral with its TCB signing key.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st

from attestation.certs import (
    first_invalid,
    revoked_by,
    select_root,
    verify_chain,
    verify_root,
)
from attestation.collateral import Collateral
from attestation.errors import CertificateError, CollateralError
from attestation.quote_parser import parse_quote
from attestation.report import CheckStatus, TcbStatus, VerificationReport
from attestation.simulated import Measurements, SimulatedTdx
from attestation.verify import CHECK_NAMES, VerifiedCollateral, verify_quote
from tests.attestation.conftest import SIM_NOW, resign, root_key, sign_raw
from tests.vectors import TdxCase, tdx_case

SEPT_VE_DISABLE = 1 << 28


# --- Helpers -------------------------------------------------------------------------------------


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


def _real(
    quote: bytes | None = None,
    collateral: dict[str, Any] | None = None,
    *,
    now: int | None = None,
    name: str = "v4-uptodate",
    **kwargs: Any,
) -> VerificationReport:
    case = tdx_case(name)
    return verify_quote(
        case.quote if quote is None else quote,
        Collateral.from_json(case.collateral_json if collateral is None else collateral),
        now=case.now if now is None else now,
        **kwargs,
    )


def _sim(
    sim: SimulatedTdx,
    *,
    quote: bytes | None = None,
    collateral: dict[str, str] | None = None,
    now: int = SIM_NOW,
) -> VerificationReport:
    return verify_quote(
        sim.quote(bytes(64)) if quote is None else quote,
        Collateral.from_json(sim.collateral() if collateral is None else collateral),
        now=now,
        trusted_roots=[sim.root_certificate],
    )


def _status(report: VerificationReport, name: str) -> CheckStatus:
    return report.check(name).status


def _assert_fails(report: VerificationReport, name: str) -> None:
    assert _status(report, name) is CheckStatus.FAIL, report.checks
    assert not report.ok


def _only_failure(report: VerificationReport, name: str) -> None:
    """``name`` failed and nothing else did (dependants may SKIP)."""
    assert [c.name for c in report.failed] == [name], report.failed


def _offset_of(quote: bytes, part: bytes) -> int:
    at = quote.find(part)
    assert at >= 0
    return at


def _v4_parts(case: TdxCase) -> dict[str, int]:
    q = parse_quote(case.quote)
    cert = q.signature_data.certification
    return {
        "qe_report": _offset_of(case.quote, cert.qe_report.raw),
        "qe_report_signature": _offset_of(case.quote, cert.qe_report_signature),
        "qe_auth_data": _offset_of(case.quote, cert.qe_auth_data),
        "quote_signature": _offset_of(case.quote, q.signature_data.signature),
        "report_data": _offset_of(case.quote, q.td_report.report_data),
    }


def _tamper_pem_cert(pem: bytes, index: int, edit: Callable[[bytes], bytes]) -> bytes:
    """Apply ``edit`` to the DER of certificate ``index`` of a PEM bundle, keeping lengths."""
    blocks = pem.split(b"-----END CERTIFICATE-----")
    head, body = blocks[index].split(b"-----BEGIN CERTIFICATE-----")
    der = base64.b64decode(b"".join(body.split()))
    new = base64.b64encode(edit(der))
    lines = [new[i : i + 64] for i in range(0, len(new), 64)]
    blocks[index] = head + b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n"
    return b"-----END CERTIFICATE-----".join(blocks)


def _json(collateral: dict[str, Any], key: str) -> dict[str, Any]:
    value = json.loads(collateral[key])
    assert isinstance(value, dict)
    return value


# --- quote_format and quote_header ---------------------------------------------------------------


def test_truncated_quote_fails_quote_format_and_skips_dependants() -> None:
    case = tdx_case("v4-uptodate")
    report = _real(case.quote[:700])
    _assert_fails(report, "quote_format")
    assert report.quote is None
    for name in ("quote_header", "pck_chain", "quote_signature", "td_attributes"):
        assert _status(report, name) is CheckStatus.SKIP
    # Collateral checks do not depend on the quote and still ran.
    assert _status(report, "tcb_info_signature") is CheckStatus.PASS


def test_foreign_qe_vendor_id_fails_quote_header() -> None:
    case = tdx_case("v4-uptodate")
    report = _real(_flip(case.quote, 12))  # header.qe_vendor_id starts at offset 12
    _assert_fails(report, "quote_header")
    assert "vendor" in report.check("quote_header").detail


# --- Roots and the root CA CRL -------------------------------------------------------------------


def _look_alike_root() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX Root CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )
    start = dt.datetime(2018, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365 * 40))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def test_look_alike_intel_root_in_collateral_fails_root_ca() -> None:
    case = tdx_case("v4-uptodate")
    fake, _ = _look_alike_root()
    chain = case.collateral_json["tcb_info_issuer_chain"]
    leaf_pem = chain[: chain.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    forged = leaf_pem + "\n" + fake.public_bytes(Encoding.PEM).decode()
    report = _real(collateral={**case.collateral_json, "tcb_info_issuer_chain": forged})
    _assert_fails(report, "root_ca")
    assert _status(report, "tcb_info_chain") is CheckStatus.SKIP


def test_flipped_root_crl_signature_fails_root_ca_crl() -> None:
    case = tdx_case("v4-uptodate")
    crl = bytes.fromhex(case.collateral_json["root_ca_crl"])
    report = _real(
        collateral={**case.collateral_json, "root_ca_crl": _flip(crl, len(crl) - 3).hex()}
    )
    _assert_fails(report, "root_ca_crl")
    # Without a trustworthy root CRL no chain can be judged unrevoked.
    assert _status(report, "tcb_info_chain") is CheckStatus.SKIP
    assert _status(report, "pck_crl") is CheckStatus.SKIP


def test_root_crl_after_its_next_update_fails_root_ca_crl() -> None:
    case = tdx_case("v4-uptodate")
    crl = x509.load_der_x509_crl(bytes.fromhex(case.collateral_json["root_ca_crl"]))
    assert crl.next_update_utc is not None
    report = _real(now=int(crl.next_update_utc.timestamp()) + 1)
    _assert_fails(report, "root_ca_crl")


def _root_crl_revoking(sim: SimulatedTdx, serial: int) -> str:
    start = dt.datetime.fromtimestamp(SIM_NOW - 3600, tz=dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(sim.root_certificate.subject)
        .last_update(start)
        .next_update(start + dt.timedelta(days=365))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(start).build()
        )
        .sign(root_key(sim), hashes.SHA256())
    )
    return crl.public_bytes(Encoding.DER).hex()


def _issuer_serial(chain_pem: str) -> int:
    return x509.load_pem_x509_certificates(chain_pem.encode())[0].serial_number


def test_root_crl_revoking_the_tcb_signer_fails_tcb_info_chain(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    serial = _issuer_serial(collateral["tcb_info_issuer_chain"])
    report = _sim(sim, collateral={**collateral, "root_ca_crl": _root_crl_revoking(sim, serial)})
    _assert_fails(report, "tcb_info_chain")
    assert "revoked" in report.check("tcb_info_chain").detail
    assert _status(report, "tcb_info_signature") is CheckStatus.SKIP


def test_root_crl_revoking_the_pck_platform_ca_fails_pck_crl(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    serial = _issuer_serial(collateral["pck_crl_issuer_chain"])
    report = _sim(sim, collateral={**collateral, "root_ca_crl": _root_crl_revoking(sim, serial)})
    _assert_fails(report, "pck_crl")
    assert _status(report, "pck_revocation") is CheckStatus.SKIP


# --- Collateral: type, chains, signatures, windows -----------------------------------------------


def test_sgx_tcb_info_for_a_tdx_quote_fails_collateral_type(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = {**_json(collateral, "tcb_info"), "id": "SGX"}
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "collateral_type")


def test_tampered_tcb_signing_cert_fails_tcb_info_chain() -> None:
    case = tdx_case("v4-uptodate")
    chain = case.collateral_json["tcb_info_issuer_chain"].encode()
    broken = _tamper_pem_cert(chain, 0, lambda der: _flip(der, len(der) - 2))
    report = _real(collateral={**case.collateral_json, "tcb_info_issuer_chain": broken.decode()})
    _assert_fails(report, "tcb_info_chain")
    assert _status(report, "tcb_info_signature") is CheckStatus.SKIP


def test_reserialised_tcb_info_without_resigning_fails_tcb_info_signature() -> None:
    case = tdx_case("v4-uptodate")
    body = json.dumps(json.loads(case.collateral_json["tcb_info"]))  # same content, other bytes
    report = _real(collateral={**case.collateral_json, "tcb_info": body})
    _only_failure(report, "tcb_info_signature")


def test_flipped_tcb_info_signature_fails_tcb_info_signature() -> None:
    case = tdx_case("v4-uptodate")
    sig = bytes.fromhex(case.collateral_json["tcb_info_signature"])
    report = _real(collateral={**case.collateral_json, "tcb_info_signature": _flip(sig, 5).hex()})
    _only_failure(report, "tcb_info_signature")


def test_tcb_info_signed_by_the_wrong_key_fails_tcb_info_signature(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    wrong = ec.generate_private_key(ec.SECP256R1())
    signature = sign_raw(wrong, collateral["tcb_info"].encode()).hex()
    report = _sim(sim, collateral={**collateral, "tcb_info_signature": signature})
    _only_failure(report, "tcb_info_signature")
    assert _status(report, "fmspc_match") is CheckStatus.SKIP
    assert report.tcb_status is None


def test_tcb_info_after_next_update_fails_tcb_info_validity() -> None:
    collateral = Collateral.from_json(tdx_case("v4-uptodate").collateral_json)
    report = _real(now=collateral.tcb_info.next_update + 1)
    _assert_fails(report, "tcb_info_validity")


def test_tcb_info_before_issue_date_fails_tcb_info_validity() -> None:
    collateral = Collateral.from_json(tdx_case("v4-uptodate").collateral_json)
    report = _real(now=collateral.tcb_info.issue_date - 60)
    _assert_fails(report, "tcb_info_validity")
    assert "not yet valid" in report.check("tcb_info_validity").detail


def test_expired_collateral_window_fails_validity(sim: SimulatedTdx) -> None:
    # Issued an hour before SIM_NOW - 2 days with a one-day lifetime: expired at SIM_NOW.
    collateral = sim.collateral(now=SIM_NOW - 2 * 86_400, lifetime=86_400)
    report = _sim(sim, collateral=collateral)
    _assert_fails(report, "tcb_info_validity")
    _assert_fails(report, "qe_identity_validity")
    _assert_fails(report, "pck_crl")


def test_not_yet_valid_collateral_window_fails_validity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral(now=SIM_NOW + 2 * 86_400)
    report = _sim(sim, collateral=collateral)
    _assert_fails(report, "tcb_info_validity")
    _assert_fails(report, "qe_identity_validity")


def test_tampered_qe_identity_signer_fails_qe_identity_chain() -> None:
    case = tdx_case("v4-uptodate")
    chain = case.collateral_json["qe_identity_issuer_chain"].encode()
    broken = _tamper_pem_cert(chain, 0, lambda der: _flip(der, len(der) - 2))
    report = _real(collateral={**case.collateral_json, "qe_identity_issuer_chain": broken.decode()})
    _assert_fails(report, "qe_identity_chain")
    assert _status(report, "qe_identity") is CheckStatus.SKIP


def test_flipped_qe_identity_signature_fails_qe_identity_signature() -> None:
    case = tdx_case("v4-uptodate")
    sig = bytes.fromhex(case.collateral_json["qe_identity_signature"])
    report = _real(
        collateral={**case.collateral_json, "qe_identity_signature": _flip(sig, 40).hex()}
    )
    _only_failure(report, "qe_identity_signature")
    assert _status(report, "qe_identity") is CheckStatus.SKIP


def test_qe_identity_after_next_update_fails_qe_identity_validity() -> None:
    collateral = Collateral.from_json(tdx_case("v4-uptodate").collateral_json)
    report = _real(now=collateral.qe_identity.next_update + 1)
    _assert_fails(report, "qe_identity_validity")


# --- PCK CRL, PCK chain, revocation --------------------------------------------------------------


def test_flipped_pck_crl_signature_fails_pck_crl() -> None:
    case = tdx_case("v4-uptodate")
    crl = bytes.fromhex(case.collateral_json["pck_crl"])
    report = _real(collateral={**case.collateral_json, "pck_crl": _flip(crl, len(crl) - 3).hex()})
    _only_failure(report, "pck_crl")
    assert _status(report, "pck_revocation") is CheckStatus.SKIP


def test_pck_crl_after_next_update_fails_pck_crl() -> None:
    case = tdx_case("v4-uptodate")
    crl = x509.load_der_x509_crl(bytes.fromhex(case.collateral_json["pck_crl"]))
    assert crl.next_update_utc is not None
    # The vector's PCK CRL expires just before its TCB Info: only the CRL is stale here.
    report = _real(now=int(crl.next_update_utc.timestamp()) + 1)
    _only_failure(report, "pck_crl")


def test_tampered_pck_certificate_fails_pck_chain() -> None:
    case = tdx_case("v4-uptodate")
    pem = parse_quote(case.quote).signature_data.certification.pck_chain_pem.rstrip(b"\x00")
    broken = _tamper_pem_cert(pem, 0, lambda der: _flip(der, len(der) - 2))
    assert len(broken) == len(pem)
    report = _real(case.quote.replace(pem, broken))
    _only_failure(report, "pck_chain")
    for name in ("pck_revocation", "qe_report_signature", "fmspc_match", "platform_tcb"):
        assert _status(report, name) is CheckStatus.SKIP
    assert report.fmspc is None


def test_pck_chain_from_an_untrusted_root_fails_pck_chain(sim: SimulatedTdx) -> None:
    # A simulated quote checked against real Intel collateral with both roots trusted: the
    # collateral chains end in Intel's root, the PCK chain in another: refused.
    case = tdx_case("v4-uptodate")
    from attestation.trust import intel_sgx_root_ca

    report = verify_quote(
        sim.quote(bytes(64)),
        Collateral.from_json(case.collateral_json),
        now=case.now,
        trusted_roots=[intel_sgx_root_ca(), sim.root_certificate],
    )
    _assert_fails(report, "pck_chain")


def test_pck_crl_entry_revoking_the_pck_fails_pck_revocation(sim: SimulatedTdx) -> None:
    report = _sim(sim, collateral=sim.collateral(revoke_pck=True))
    _only_failure(report, "pck_revocation")
    assert "revoked" in report.check("pck_revocation").detail


def test_pck_crl_from_another_ca_fails_pck_revocation(sim: SimulatedTdx) -> None:
    # Another simulated platform's (valid, signed) PCK CRL does not speak for this PCK.
    other = SimulatedTdx.generate(b"another platform", now=SIM_NOW)
    mine, theirs = sim.collateral(), other.collateral()
    mixed = {
        **mine,
        "pck_crl": theirs["pck_crl"],
        "pck_crl_issuer_chain": theirs["pck_crl_issuer_chain"],
    }
    report = verify_quote(
        sim.quote(bytes(64)),
        Collateral.from_json(mixed),
        now=SIM_NOW,
        trusted_roots=[sim.root_certificate, other.root_certificate],
    )
    # Their issuer chain ends in their root, which differs from ours: either the CRL's chain or
    # its issuer comparison must refuse it.
    assert not report.ok
    assert {c.name for c in report.failed} & {"pck_crl", "pck_revocation"}


# --- QE report, QE identity ----------------------------------------------------------------------


def test_flipped_qe_report_signature_fails_qe_report_signature() -> None:
    case = tdx_case("v4-uptodate")
    at = _v4_parts(case)["qe_report_signature"]
    report = _real(_flip(case.quote, at + 10))
    _only_failure(report, "qe_report_signature")


def test_flipped_qe_report_byte_fails_qe_report_signature() -> None:
    case = tdx_case("v4-uptodate")
    at = _v4_parts(case)["qe_report"]
    report = _real(_flip(case.quote, at + 100))  # inside MRENCLAVE: no other check reads it
    _only_failure(report, "qe_report_signature")


def test_flipped_qe_auth_data_fails_qe_report_data() -> None:
    case = tdx_case("v4-uptodate")
    at = _v4_parts(case)["qe_auth_data"]
    report = _real(_flip(case.quote, at))
    _only_failure(report, "qe_report_data")


def test_qe_mrsigner_mismatch_fails_qe_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    identity = {**_json(collateral, "qe_identity"), "mrsigner": "AB" * 32}
    report = _sim(sim, collateral=resign(sim, collateral, qe_identity=identity))
    _only_failure(report, "qe_identity")
    assert "MRSIGNER" in report.check("qe_identity").detail
    assert report.tcb_status is None


def test_qe_isvprodid_mismatch_fails_qe_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    identity = {**_json(collateral, "qe_identity"), "isvprodid": 1}
    report = _sim(sim, collateral=resign(sim, collateral, qe_identity=identity))
    _only_failure(report, "qe_identity")


def test_qe_attributes_mismatch_fails_qe_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    identity = {**_json(collateral, "qe_identity"), "attributes": "13" + "00" * 15}
    report = _sim(sim, collateral=resign(sim, collateral, qe_identity=identity))
    _only_failure(report, "qe_identity")


def test_qe_miscselect_mismatch_fails_qe_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    identity = {**_json(collateral, "qe_identity"), "miscselect": "01000000"}
    report = _sim(sim, collateral=resign(sim, collateral, qe_identity=identity))
    _only_failure(report, "qe_identity")


def test_qe_below_every_identity_level_fails_qe_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    identity = _json(collateral, "qe_identity")
    identity["tcbLevels"][0]["tcb"]["isvsvn"] = sim.config.qe_svn + 1
    report = _sim(sim, collateral=resign(sim, collateral, qe_identity=identity))
    _only_failure(report, "qe_identity")


def test_revoked_qe_level_fails_qe_identity_and_reports_revoked(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    identity = _json(collateral, "qe_identity")
    identity["tcbLevels"][0]["tcbStatus"] = "Revoked"
    report = _sim(sim, collateral=resign(sim, collateral, qe_identity=identity))
    _only_failure(report, "qe_identity")
    assert report.qe_tcb_status is TcbStatus.REVOKED
    assert report.tcb_status is TcbStatus.REVOKED


def test_out_of_date_qe_makes_the_status_out_of_date_with_its_advisories(
    sim: SimulatedTdx,
) -> None:
    collateral = sim.collateral()
    identity = _json(collateral, "qe_identity")
    identity["tcbLevels"][0]["tcbStatus"] = "OutOfDate"
    identity["tcbLevels"][0]["advisoryIDs"] = ["INTEL-SA-00615"]
    report = _sim(sim, collateral=resign(sim, collateral, qe_identity=identity))
    assert report.ok, report.failed
    assert report.platform_tcb_status is TcbStatus.UP_TO_DATE
    assert report.qe_tcb_status is TcbStatus.OUT_OF_DATE
    assert report.tcb_status is TcbStatus.OUT_OF_DATE
    assert report.advisory_ids == ("INTEL-SA-00615",)


# --- Quote signature, FMSPC, platform TCB, module ------------------------------------------------


def test_flipped_quote_signature_fails_quote_signature() -> None:
    case = tdx_case("v4-uptodate")
    at = _v4_parts(case)["quote_signature"]
    report = _real(_flip(case.quote, at + 3))
    _only_failure(report, "quote_signature")


def test_flipped_report_data_fails_quote_signature() -> None:
    case = tdx_case("v4-uptodate")
    at = _v4_parts(case)["report_data"]
    report = _real(_flip(case.quote, at))
    _only_failure(report, "quote_signature")


def test_wrong_fmspc_fails_fmspc_match(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = {**_json(collateral, "tcb_info"), "fmspc": "00906ED50000"}
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "fmspc_match")
    assert _status(report, "platform_tcb") is CheckStatus.SKIP


def test_wrong_pce_id_fails_fmspc_match(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = {**_json(collateral, "tcb_info"), "pceId": "0100"}
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "fmspc_match")


def test_other_platforms_collateral_fails_fmspc_match() -> None:
    # Authentic Intel collateral, authentic quote, different platform family.
    report = _real(collateral=tdx_case("v5-uptodate").collateral_json)
    _assert_fails(report, "fmspc_match")


def test_revoked_platform_tcb_fails_platform_tcb(sim: SimulatedTdx) -> None:
    report = _sim(sim, collateral=sim.collateral(tcb_status="Revoked"))
    _only_failure(report, "platform_tcb")
    assert report.platform_tcb_status is TcbStatus.REVOKED
    assert report.tcb_status is TcbStatus.REVOKED


def test_out_of_date_platform_is_reported_not_failed(sim: SimulatedTdx) -> None:
    report = _sim(
        sim, collateral=sim.collateral(tcb_status="OutOfDate", advisory_ids=("INTEL-SA-00960",))
    )
    assert report.ok, report.failed
    assert report.tcb_status is TcbStatus.OUT_OF_DATE
    assert report.advisory_ids == ("INTEL-SA-00960",)


def test_platform_below_every_tcb_level_fails_platform_tcb(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = _json(collateral, "tcb_info")
    for level in info["tcbLevels"]:
        level["tcb"]["pcesvn"] = sim.config.pce_svn + 1
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "platform_tcb")
    assert "below every TCB level" in report.check("platform_tcb").detail


def test_tdx_components_below_every_level_fail_platform_tcb(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = _json(collateral, "tcb_info")
    for level in info["tcbLevels"]:
        level["tcb"]["tdxtcbcomponents"][2]["svn"] = sim.config.tee_tcb_svn[2] + 1
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "platform_tcb")
    assert "TEE_TCB_SVN" in report.check("platform_tcb").detail


def test_module_signer_mismatch_fails_tdx_module_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = _json(collateral, "tcb_info")
    for identity in info["tdxModuleIdentities"]:
        identity["mrsigner"] = "11" * 48
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "tdx_module_identity")
    assert "MRSIGNERSEAM" in report.check("tdx_module_identity").detail


def test_missing_module_identity_fails_tdx_module_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = {**_json(collateral, "tcb_info"), "tdxModuleIdentities": []}
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "tdx_module_identity")
    assert "TDX_01" in report.check("tdx_module_identity").detail


def test_nonzero_seam_attributes_fail_tdx_module_identity() -> None:
    platform = SimulatedTdx.generate(
        b"seam attributes", now=SIM_NOW, seam_attributes=b"\x01" + bytes(7)
    )
    report = _sim(platform)
    _only_failure(report, "tdx_module_identity")
    assert "SEAMATTRIBUTES" in report.check("tdx_module_identity").detail


def test_module_svn_below_every_module_level_fails_tdx_module_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = _json(collateral, "tcb_info")
    info["tdxModuleIdentities"][0]["tcbLevels"][0]["tcb"]["isvsvn"] = sim.config.tee_tcb_svn[0] + 1
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "tdx_module_identity")


def test_revoked_module_level_fails_tdx_module_identity(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = _json(collateral, "tcb_info")
    info["tdxModuleIdentities"][0]["tcbLevels"][0]["tcbStatus"] = "Revoked"
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    _only_failure(report, "tdx_module_identity")
    assert report.tdx_module_tcb_status is TcbStatus.REVOKED
    assert report.tcb_status is TcbStatus.REVOKED


def test_out_of_date_module_makes_status_out_of_date(sim: SimulatedTdx) -> None:
    collateral = sim.collateral()
    info = _json(collateral, "tcb_info")
    level = info["tdxModuleIdentities"][0]["tcbLevels"][0]
    level["tcbStatus"] = "OutOfDate"
    level["advisoryIDs"] = ["INTEL-SA-01036"]
    report = _sim(sim, collateral=resign(sim, collateral, tcb_info=info))
    assert report.ok, report.failed
    assert report.tdx_module_tcb_status is TcbStatus.OUT_OF_DATE
    assert report.tcb_status is TcbStatus.OUT_OF_DATE
    assert report.advisory_ids == ("INTEL-SA-01036",)


# --- TD attributes, MRSERVICETD ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "words"),
    [
        (SEPT_VE_DISABLE | 1, "DEBUG"),
        (0, "SEPT_VE_DISABLE"),
        (SEPT_VE_DISABLE | 1 << 8, "reserved"),
        (SEPT_VE_DISABLE | 1 << 29, "MIGRATABLE"),
        (SEPT_VE_DISABLE | 1 << 40, "reserved"),
        (SEPT_VE_DISABLE | 1 << 3, "reserved"),
    ],
)
def test_signed_quote_of_misconfigured_td_fails_td_attributes(
    sim: SimulatedTdx, attributes: int, words: str
) -> None:
    measurements = Measurements(td_attributes=attributes.to_bytes(8, "little"))
    report = _sim(sim, quote=sim.quote(bytes(64), measurements=measurements))
    _only_failure(report, "td_attributes")
    assert words in report.check("td_attributes").detail


@pytest.mark.parametrize("bit", [30, 31, 63])
def test_pks_kl_and_perfmon_are_not_refused(sim: SimulatedTdx, bit: int) -> None:
    attributes = SEPT_VE_DISABLE | 1 << bit
    measurements = Measurements(td_attributes=attributes.to_bytes(8, "little"))
    report = _sim(sim, quote=sim.quote(bytes(64), measurements=measurements))
    assert report.ok, report.failed


def test_flipped_debug_bit_on_real_quote_fails_td_attributes() -> None:
    case = tdx_case("v4-uptodate")
    td_attributes_offset = 48 + 120  # header, then TD report offset 120
    report = _real(_flip(case.quote, td_attributes_offset))
    _assert_fails(report, "td_attributes")
    _assert_fails(report, "quote_signature")  # and the change is not authentic either


def _v5_with_service_td() -> bytes:
    case = tdx_case("v5-uptodate")
    q = parse_quote(case.quote)
    assert q.td_report.mr_service_td is not None
    # v5: header 48, body type 2 + size 4, then the 1.5 report; MRSERVICETD at report offset 600.
    at = 48 + 6 + 600
    assert case.quote[at : at + 48] == q.td_report.mr_service_td
    return _flip(case.quote, at)


def test_nonzero_mr_service_td_fails_mr_service_td() -> None:
    report = _real(_v5_with_service_td(), name="v5-uptodate")
    _assert_fails(report, "mr_service_td")


def test_nonzero_mr_service_td_is_accepted_only_when_allowed() -> None:
    report = _real(_v5_with_service_td(), name="v5-uptodate", allow_mr_service_td=True)
    assert _status(report, "mr_service_td") is CheckStatus.PASS
    # The flip is still not authentic: the quote signature covers MRSERVICETD.
    _only_failure(report, "quote_signature")


# --- Chain rules (certs.py), on a small hierarchy generated here ----------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = True,
    path_length: int | None = None,
    key_cert_sign: bool = True,
    start: int = SIM_NOW - 3600,
    days: int = 365,
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    begin = dt.datetime.fromtimestamp(start, tz=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca and key_cert_sign,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _hierarchy(**intermediate: Any) -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    root_k, mid_k, leaf_k = _key(), _key(), _key()
    root = _cert("Test Root", root_k, None, root_k)
    mid = _cert("Test CA", mid_k, root, root_k, **intermediate)
    leaf = _cert("Test Leaf", leaf_k, mid, mid_k, ca=False)
    return root, mid, leaf


def test_well_formed_chain_verifies() -> None:
    root, mid, leaf = _hierarchy()
    path, windows = verify_chain([leaf, mid], root)
    assert path == [leaf, mid, root]
    assert first_invalid(windows, SIM_NOW) is None


def test_leaf_issued_by_a_non_ca_is_refused() -> None:
    root, mid, leaf = _hierarchy(ca=False)
    with pytest.raises(CertificateError, match="is not a CA"):
        verify_chain([leaf, mid], root)


def test_issuer_without_key_cert_sign_is_refused() -> None:
    root, mid, leaf = _hierarchy(key_cert_sign=False)
    with pytest.raises(CertificateError, match="may not sign certificates"):
        verify_chain([leaf, mid], root)


def test_path_length_constraint_is_enforced() -> None:
    root_k, mid_k, sub_k, leaf_k = _key(), _key(), _key(), _key()
    root = _cert("Test Root", root_k, None, root_k)
    mid = _cert("Test CA", mid_k, root, root_k, path_length=0)
    sub = _cert("Test Sub CA", sub_k, mid, mid_k)
    leaf = _cert("Test Leaf", leaf_k, sub, sub_k, ca=False)
    with pytest.raises(CertificateError, match="path length"):
        verify_chain([leaf, sub, mid], root)


def test_chain_to_a_self_signed_look_alike_is_refused() -> None:
    root, mid, leaf = _hierarchy()
    other_k = _key()
    look_alike = _cert("Test Root", other_k, None, other_k)
    with pytest.raises(CertificateError, match="untrusted root"):
        verify_chain([leaf, mid, look_alike], root)
    with pytest.raises(CertificateError, match="not a trusted root"):
        select_root([leaf, mid, look_alike], [root])


def test_link_with_a_foreign_signature_is_refused() -> None:
    root, mid, _ = _hierarchy()
    stranger_k = _key()
    leaf = _cert("Test Leaf", _key(), mid, stranger_k, ca=False)  # names mid, signed by another
    with pytest.raises(CertificateError, match="does not verify"):
        verify_chain([leaf, mid], root)


def test_root_whose_self_signature_is_broken_is_refused() -> None:
    root_k, other_k = _key(), _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Root")])
    broken = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root_k.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(other_k, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match="does not verify"):
        verify_root(broken)


def test_certificate_windows_are_checked_at_now() -> None:
    root_k, mid_k, leaf_k = _key(), _key(), _key()
    root = _cert("Test Root", root_k, None, root_k, start=SIM_NOW - 86_400, days=3650)
    mid = _cert("Test CA", mid_k, root, root_k, start=SIM_NOW - 86_400, days=3650)
    leaf = _cert("Test Leaf", leaf_k, mid, mid_k, ca=False, start=SIM_NOW + 3600, days=1)
    _, windows = verify_chain([leaf, mid], root)
    reason = first_invalid(windows, SIM_NOW)
    assert reason is not None
    assert "'Test Leaf' is not yet valid" in reason
    expired = first_invalid(windows, SIM_NOW + 3 * 86_400)
    assert expired is not None
    assert "expired" in expired
    assert first_invalid(windows, SIM_NOW + 7200) is None


def test_certificate_no_crl_speaks_for_is_an_error() -> None:
    _, _, leaf = _hierarchy()
    root_k = _key()
    other = _cert("Other Root", root_k, None, root_k)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(other.subject)
        .last_update(dt.datetime.fromtimestamp(SIM_NOW - 60, tz=dt.UTC))
        .next_update(dt.datetime.fromtimestamp(SIM_NOW + 60, tz=dt.UTC))
        .sign(root_k, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match="no CRL covers"):
        revoked_by(leaf, [(crl, "other CRL")])


# --- PCK leaf identity and the PCK CRL's issuer ---------------------------------------------------


def _with_pck_chain(quote: bytes, pem: bytes) -> bytes:
    """The quote with another PEM chain in certification data type 5, all sizes recomputed."""
    q = parse_quote(quote)
    sig, cert = q.signature_data, q.signature_data.certification
    inner = struct.pack("<HI", 5, len(pem)) + pem
    qe_data = (
        cert.qe_report.raw
        + cert.qe_report_signature
        + struct.pack("<H", len(cert.qe_auth_data))
        + cert.qe_auth_data
        + inner
    )
    signature_data = (
        sig.signature + sig.attestation_key + struct.pack("<HI", 6, len(qe_data)) + qe_data
    )
    return q.signed_region + struct.pack("<I", len(signature_data)) + signature_data


def _platform_ca_key(sim: SimulatedTdx) -> ec.EllipticCurvePrivateKey:
    return sim._keys.platform_ca


def test_pck_leaf_without_the_pck_name_fails_pck_chain(sim: SimulatedTdx) -> None:
    # Same key, same SGX extension, same issuer: only the subject says it is not a PCK cert.
    pck = sim.pck_certificate
    sgx = next(e for e in pck.extensions if e.oid.dotted_string == "1.2.840.113741.1.13.1")
    platform_ca = x509.load_pem_x509_certificates(
        sim.collateral()["pck_crl_issuer_chain"].encode()
    )[0]
    impostor = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some TLS Server")]))
        .issuer_name(pck.issuer)
        .public_key(pck.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(pck.not_valid_before_utc)
        .not_valid_after(pck.not_valid_after_utc)
        .add_extension(sgx.value, critical=False)
        .sign(_platform_ca_key(sim), hashes.SHA256())
    )
    pem = b"".join(
        c.public_bytes(Encoding.PEM) for c in (impostor, platform_ca, sim.root_certificate)
    )
    report = _sim(sim, quote=_with_pck_chain(sim.quote(bytes(64)), pem + b"\x00"))
    _only_failure(report, "pck_chain")
    assert "not an SGX PCK certificate" in report.check("pck_chain").detail


def test_rebuilt_quote_with_the_same_chain_still_verifies(sim: SimulatedTdx) -> None:
    # Guards the helper above: rebuilding alone changes nothing.
    quote = sim.quote(bytes(64))
    pem = parse_quote(quote).signature_data.certification.pck_chain_pem
    assert _with_pck_chain(quote, pem) == quote
    assert _sim(sim, quote=_with_pck_chain(quote, pem)).ok


def test_pck_crl_of_a_sibling_ca_fails_pck_revocation(sim: SimulatedTdx) -> None:
    # A genuine CRL from another CA under the same root says nothing about this PCK.
    sibling_k = _key()
    root = sim.root_certificate
    sibling = _cert(
        "Simulated SGX PCK Processor CA",
        sibling_k,
        root,
        root_key(sim),
        path_length=0,
        start=SIM_NOW - 3600,
    )
    begin = dt.datetime.fromtimestamp(SIM_NOW - 3600, tz=dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(sibling.subject)
        .last_update(begin)
        .next_update(begin + dt.timedelta(days=30))
        .sign(sibling_k, hashes.SHA256())
    )
    collateral = {
        **sim.collateral(),
        "pck_crl": crl.public_bytes(Encoding.DER).hex(),
        "pck_crl_issuer_chain": (
            sibling.public_bytes(Encoding.PEM) + root.public_bytes(Encoding.PEM)
        ).decode(),
    }
    report = _sim(sim, collateral=collateral)
    _only_failure(report, "pck_revocation")
    assert "the PCK CRL is issued by" in report.check("pck_revocation").detail


def test_pck_crl_is_stale_from_the_second_of_its_next_update() -> None:
    # dcap-qvl (webpki) treats a CRL as expired at nextUpdate itself; so do we.
    case = tdx_case("v4-uptodate")
    crl = x509.load_der_x509_crl(bytes.fromhex(case.collateral_json["pck_crl"]))
    assert crl.next_update_utc is not None
    end = int(crl.next_update_utc.timestamp())
    assert _real(now=end - 1).ok
    _only_failure(_real(now=end), "pck_crl")


# --- Robustness: arbitrary damage never escapes as an exception -----------------------------------

_V4 = tdx_case("v4-uptodate")
_V4_COLLATERAL = Collateral.from_json(_V4.collateral_json)
_V4_VERIFIED = VerifiedCollateral.prepare(_V4_COLLATERAL)


@settings(max_examples=300, deadline=None)
@given(
    offset=st.integers(min_value=0, max_value=len(_V4.quote) - 1),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_flipped_quote_byte_gives_a_full_report(offset: int, mask: int) -> None:
    report = verify_quote(_flip(_V4.quote, offset, mask), _V4_VERIFIED, now=_V4.now)
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    if report.ok:
        # Only a byte whose change leaves every signed and hashed value identical can pass:
        # base64 padding bits or PEM whitespace in the certificate chain.
        assert report.quote is not None
        pem = report.quote.signature_data.certification.pck_chain_pem
        assert _offset_of(_V4.quote, b"-----BEGIN CERTIFICATE-----") <= offset
        assert offset < _offset_of(_V4.quote, b"-----BEGIN CERTIFICATE-----") + len(pem)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_give_a_failed_quote_format(data: bytes) -> None:
    report = verify_quote(data, _V4_VERIFIED, now=_V4.now)
    assert not report.ok
    assert [c.name for c in report.checks] == list(CHECK_NAMES)


@settings(max_examples=300, deadline=None)
@given(
    offset=st.integers(min_value=0, max_value=len(_V4.collateral_json["tcb_info"]) - 1),
    char=st.characters(codec="utf-8"),
)
def test_damaged_tcb_info_text_is_refused_or_fails_its_signature(offset: int, char: str) -> None:
    raw = _V4.collateral_json["tcb_info"]
    damaged = raw[:offset] + char + raw[offset + 1 :]
    try:
        collateral = Collateral.from_json({**_V4.collateral_json, "tcb_info": damaged})
    except CollateralError:
        return
    report = verify_quote(_V4.quote, collateral, now=_V4.now)
    if damaged != raw:
        assert _status(report, "tcb_info_signature") is CheckStatus.FAIL


def _damage_pem_cert(pem: str, index: int, offset: int, mask: int) -> str:
    def edit(der: bytes) -> bytes:
        return _flip(der, offset % len(der), mask)

    return _tamper_pem_cert(pem.encode(), index, edit).decode()


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # cryptography, on bad names
@pytest.mark.filterwarnings("ignore:Parsed a serial number")  # cryptography, on bad serials
@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(
        ["tcb_info_issuer_chain", "qe_identity_issuer_chain", "pck_crl_issuer_chain"]
    ),
    index=st.integers(min_value=0, max_value=1),
    offset=st.integers(min_value=0, max_value=1000),
    mask=st.integers(min_value=1, max_value=255),
)
def test_damaged_collateral_certificate_never_escapes(
    key: str, index: int, offset: int, mask: int
) -> None:
    damaged = _damage_pem_cert(_V4.collateral_json[key], index, offset, mask)
    collateral = Collateral.from_json({**_V4.collateral_json, key: damaged})
    report = verify_quote(_V4.quote, collateral, now=_V4.now)
    assert [c.name for c in report.checks] == list(CHECK_NAMES)


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # cryptography, on bad names
@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["root_ca_crl", "pck_crl"]),
    offset=st.integers(min_value=0, max_value=4000),
    mask=st.integers(min_value=1, max_value=255),
)
# Found by this test: a damaged name in a CRL made cryptography raise TypeError on access.
@example(key="root_ca_crl", offset=2447, mask=15)
def test_damaged_crl_never_escapes(key: str, offset: int, mask: int) -> None:
    der = bytes.fromhex(_V4.collateral_json[key])
    damaged = _flip(der, offset % len(der), mask).hex()
    report = verify_quote(
        _V4.quote, Collateral.from_json({**_V4.collateral_json, key: damaged}), now=_V4.now
    )
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    if damaged != _V4.collateral_json[key]:
        assert not report.ok


def test_certificate_with_unknown_version_in_collateral_is_a_failed_check() -> None:
    # X.509 version field: the first INTEGER inside [0] EXPLICIT of TBSCertificate.
    pem = _V4.collateral_json["tcb_info_issuer_chain"]

    def bad_version(der: bytes) -> bytes:
        at = der.index(bytes.fromhex("a003020102"))  # [0] { INTEGER 2 } = v3
        return der[: at + 4] + b"\x07" + der[at + 5 :]

    damaged = _tamper_pem_cert(pem.encode(), 0, bad_version).decode()
    report = verify_quote(
        _V4.quote,
        Collateral.from_json({**_V4.collateral_json, "tcb_info_issuer_chain": damaged}),
        now=_V4.now,
    )
    _assert_fails(report, "root_ca")
    assert "is not a valid X509 version" in report.check("root_ca").detail


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # cryptography, on bad names
@pytest.mark.filterwarnings("ignore:Parsed a serial number")  # cryptography, on bad serials
@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=1),
    offset=st.integers(min_value=0, max_value=1500),
    mask=st.integers(min_value=1, max_value=255),
)
# Found by this test: a damaged curve OID made cryptography raise UnsupportedAlgorithm.
@example(index=1, offset=306, mask=1)
def test_damaged_pck_certificate_in_quote_never_escapes(index: int, offset: int, mask: int) -> None:
    pem = parse_quote(_V4.quote).signature_data.certification.pck_chain_pem.rstrip(b"\x00")
    damaged = _tamper_pem_cert(pem, index, lambda der: _flip(der, offset % len(der), mask))
    report = verify_quote(_V4.quote.replace(pem, damaged), _V4_VERIFIED, now=_V4.now)
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert not report.ok


# --- Round 3: faults no earlier test noticed -----------------------------------------------------


def _root_crl(
    sim: SimulatedTdx,
    *,
    start: int = SIM_NOW - 3600,
    issuer: x509.Name | None = None,
    serials: tuple[int, ...] = (),
) -> str:
    """A root CA CRL validly signed by the simulated root's key, with the given fields."""
    begin = dt.datetime.fromtimestamp(start, tz=dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(sim.root_certificate.subject if issuer is None else issuer)
        .last_update(begin)
        .next_update(begin + dt.timedelta(days=365))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(begin).build()
        )
    return builder.sign(root_key(sim), hashes.SHA256()).public_bytes(Encoding.DER).hex()


def _der_tlvs(data: bytes) -> list[bytes]:
    """Split concatenated DER TLVs (definite lengths only), each returned whole."""
    out, pos = [], 0
    while pos < len(data):
        length, head = data[pos + 1], 2
        if length & 0x80:
            n = length & 0x7F
            length, head = int.from_bytes(data[pos + 2 : pos + 2 + n], "big"), 2 + n
        out.append(data[pos : pos + head + length])
        pos += head + length
    return out


def _der_content(tlv: bytes) -> bytes:
    return tlv[2 + (tlv[1] & 0x7F if tlv[1] & 0x80 else 0) :]


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _root_crl_without_next_update(sim: SimulatedTdx) -> str:
    """cryptography cannot build a CRL without nextUpdate (RFC 5280 5.1.2.5 makes it optional
    in ASN.1), so drop the field from a built one and sign the TBSCertList again."""
    crl = bytes.fromhex(_root_crl(sim))
    tbs, algorithm, _ = _der_tlvs(_der_content(crl))
    fields = _der_tlvs(_der_content(tbs))
    # TBSCertList: version, signature, issuer, thisUpdate, nextUpdate, ...
    assert fields[4][0] in (0x17, 0x18)  # UTCTime / GeneralizedTime
    new_tbs = _der(0x30, b"".join(fields[:4] + fields[5:]))
    signature = root_key(sim).sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return _der(0x30, new_tbs + algorithm + _der(0x03, b"\x00" + signature)).hex()


def test_root_listed_in_its_own_crl_fails_root_ca_crl(sim: SimulatedTdx) -> None:
    crl = _root_crl(sim, serials=(sim.root_certificate.serial_number,))
    report = _sim(sim, collateral={**sim.collateral(), "root_ca_crl": crl})
    _assert_fails(report, "root_ca_crl")
    assert "is revoked by the root CA CRL" in report.check("root_ca_crl").detail


def test_root_crl_dated_in_the_future_fails_root_ca_crl(sim: SimulatedTdx) -> None:
    crl = _root_crl(sim, start=SIM_NOW + 3600)
    report = _sim(sim, collateral={**sim.collateral(), "root_ca_crl": crl})
    _assert_fails(report, "root_ca_crl")
    assert "not yet valid" in report.check("root_ca_crl").detail


def test_root_crl_without_next_update_fails_root_ca_crl(sim: SimulatedTdx) -> None:
    crl = _root_crl_without_next_update(sim)
    assert x509.load_der_x509_crl(bytes.fromhex(crl)).next_update_utc is None
    report = _sim(sim, collateral={**sim.collateral(), "root_ca_crl": crl})
    _assert_fails(report, "root_ca_crl")
    assert "has no nextUpdate" in report.check("root_ca_crl").detail


def test_root_crl_naming_another_issuer_fails_root_ca_crl(sim: SimulatedTdx) -> None:
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Other CA")])
    report = _sim(sim, collateral={**sim.collateral(), "root_ca_crl": _root_crl(sim, issuer=other)})
    _assert_fails(report, "root_ca_crl")
    assert "is issued by 'CN=Some Other CA'" in report.check("root_ca_crl").detail


@pytest.mark.parametrize("identity_id", ["QE", "QVE", "td_qe"])
def test_sgx_qe_identity_for_a_tdx_quote_fails_collateral_type(
    sim: SimulatedTdx, identity_id: str
) -> None:
    collateral = sim.collateral()
    identity = {**_json(collateral, "qe_identity"), "id": identity_id}
    report = _sim(sim, collateral=resign(sim, collateral, qe_identity=identity))
    _only_failure(report, "collateral_type")
    assert "QE Identity id" in report.check("collateral_type").detail


def _tcb_signer(
    sim: SimulatedTdx,
    *,
    cn: str = "Shroud Simulated SGX TCB Signing",
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = False,
    digital_signature: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate issued by the simulated root, shaped like (or unlike) its TCB signer."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    begin = dt.datetime.fromtimestamp(SIM_NOW - 3600, tz=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(sim.root_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=not digital_signature,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(root_key(sim), hashes.SHA256())
    )
    return cert, key


def _signed_tcb_info_with_chain(
    sim: SimulatedTdx, chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey
) -> dict[str, str]:
    collateral = sim.collateral()
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in chain).decode()
    return {
        **collateral,
        "tcb_info_issuer_chain": pem,
        "tcb_info_signature": sign_raw(key, collateral["tcb_info"].encode()).hex(),
    }


def test_tcb_info_signed_with_a_p384_key_fails_tcb_info_signature(sim: SimulatedTdx) -> None:
    cert, _ = _tcb_signer(sim, key=ec.generate_private_key(ec.SECP384R1()))
    collateral = sim.collateral()
    chain = (cert.public_bytes(Encoding.PEM) + sim.root_pem).decode()
    report = _sim(sim, collateral={**collateral, "tcb_info_issuer_chain": chain})
    _only_failure(report, "tcb_info_signature")
    assert "does not hold a P-256 key" in report.check("tcb_info_signature").detail


def test_tcb_info_resigned_by_the_pck_key_fails_tcb_info_chain(sim: SimulatedTdx) -> None:
    # The PCK key holder has a valid chain to the root, but the PCK is no TCB signer.
    certs = sim._certs
    chain = [certs.pck, certs.platform_ca, certs.root]
    report = _sim(sim, collateral=_signed_tcb_info_with_chain(sim, chain, sim._keys.pck))
    _assert_fails(report, "tcb_info_chain")
    assert "issued directly by the root" in report.check("tcb_info_chain").detail
    assert _status(report, "tcb_info_signature") is CheckStatus.SKIP


def test_tcb_info_resigned_by_the_platform_ca_fails_tcb_info_chain(sim: SimulatedTdx) -> None:
    # Directly under the root and unrevoked: only its role says it may not sign TCB levels.
    certs = sim._certs
    chain = [certs.platform_ca, certs.root]
    collateral = _signed_tcb_info_with_chain(sim, chain, sim._keys.platform_ca)
    report = _sim(sim, collateral=collateral)
    _only_failure(report, "tcb_info_chain")
    assert "is not a TCB Signing certificate" in report.check("tcb_info_chain").detail


@pytest.mark.parametrize(
    ("ca", "digital_signature", "detail"),
    [
        (True, True, "is a CA"),
        (False, False, "is not allowed digitalSignature"),
    ],
)
def test_tcb_signer_shaped_wrongly_fails_tcb_info_chain(
    sim: SimulatedTdx, ca: bool, digital_signature: bool, detail: str
) -> None:
    cert, key = _tcb_signer(sim, ca=ca, digital_signature=digital_signature)
    report = _sim(sim, collateral=_signed_tcb_info_with_chain(sim, [cert, sim._certs.root], key))
    _only_failure(report, "tcb_info_chain")
    assert detail in report.check("tcb_info_chain").detail


def test_qe_identity_resigned_by_the_pck_key_fails_qe_identity_chain(sim: SimulatedTdx) -> None:
    certs = sim._certs
    collateral = sim.collateral()
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in (certs.pck, certs.platform_ca))
    forged = {
        **collateral,
        "qe_identity_issuer_chain": pem.decode(),
        "qe_identity_signature": sign_raw(sim._keys.pck, collateral["qe_identity"].encode()).hex(),
    }
    report = _sim(sim, collateral=forged)
    _assert_fails(report, "qe_identity_chain")
    assert "issued directly by the root" in report.check("qe_identity_chain").detail


def test_a_fresh_tcb_signer_under_the_root_is_accepted(sim: SimulatedTdx) -> None:
    # The rule is about role and position, not this platform's one certificate.
    cert, key = _tcb_signer(sim)
    report = _sim(sim, collateral=_signed_tcb_info_with_chain(sim, [cert], key))
    assert report.ok, report.failed


def test_expired_root_leaves_no_trusted_root_in_the_report(sim: SimulatedTdx) -> None:
    # A report must not name a root whose check failed: a policy reads it as "chains to".
    report = _sim(sim, now=SIM_NOW + 31 * 365 * 86_400)
    _assert_fails(report, "root_ca")
    assert report.trusted_root_sha256 is None


def test_expired_pck_leaves_no_fmspc_in_the_report(sim: SimulatedTdx) -> None:
    # The PCK leaf (7 years) expires long before the root (30 years).
    report = _sim(sim, now=SIM_NOW + 8 * 365 * 86_400)
    assert _status(report, "root_ca") is CheckStatus.PASS
    _assert_fails(report, "pck_chain")
    assert report.fmspc is None
