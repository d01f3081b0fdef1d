"""CRL signatures: the direct check on the received bytes against ``is_signature_valid``.

``verify_crl_signature`` verifies a DCAP-shaped CRL (ecdsa-with-SHA256 inside and outside the
signed part) over the tbsCertList it cut from the DER, and any other CRL through the library
call. Both must give the same verdict on the real vectors' CRLs, on tampered ones and on
CRLs of other shapes, and the direct path must really be the one the vectors take.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attestation.certs import (
    _crl_facts,
    clear_parse_caches,
    load_der_crl,
    load_pem_chain,
    revoked_by,
    verify_crl_signature,
)
from attestation.collateral import Collateral
from attestation.errors import CertificateError
from attestation.trust import intel_sgx_root_ca
from tests.vectors import TDX_CASES, tdx_case

_SHA256_ALGORITHM = bytes.fromhex("300a06082a8648ce3d040302")
_SHA384_ALGORITHM = bytes.fromhex("300a06082a8648ce3d040303")


def _vector_crls(name: str) -> list[tuple[bytes, x509.Certificate]]:
    collateral = Collateral.from_json(tdx_case(name).collateral_json)
    platform_ca = load_pem_chain(collateral.pck_crl_issuer_chain, "PCK CRL issuer chain")[0]
    return [(collateral.root_ca_crl, intel_sgx_root_ca()), (collateral.pck_crl, platform_ca)]


def _library_verdict(der: bytes, issuer: x509.Certificate) -> bool:
    # A fresh parse, outside every cache: the reference the direct check must agree with.
    crl = x509.load_der_x509_crl(der)
    return crl.issuer == issuer.subject and crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]


def _our_verdict(der: bytes, issuer: x509.Certificate) -> bool:
    try:
        verify_crl_signature(load_der_crl(der, "CRL"), issuer, "CRL")
    except CertificateError:
        return False
    return True


def _this_update_tampered(der: bytes) -> bytes:
    # One digit of thisUpdate's seconds changed: still a well-formed CRL, no longer Intel's.
    crl = x509.load_der_x509_crl(der)
    stamp = crl.last_update_utc.strftime("%y%m%d%H%M%SZ").encode()
    assert der.count(stamp) >= 1
    at = der.index(stamp) + len(stamp) - 2
    digit = b"1" if der[at : at + 1] != b"1" else b"2"
    return der[:at] + digit + der[at + 1 :]


def _signature_tampered(der: bytes) -> bytes:
    # The last byte is the end of s inside the signature BIT STRING.
    return der[:-1] + bytes([der[-1] ^ 0x01])


@pytest.mark.parametrize("name", TDX_CASES)
def test_vector_crls_take_the_direct_path_and_agree_with_the_library(name: str) -> None:
    clear_parse_caches()
    for der, issuer in _vector_crls(name):
        crl = load_der_crl(der, "CRL")
        assert _crl_facts(crl).signed is not None  # the direct path is the one taken
        assert _our_verdict(der, issuer) is _library_verdict(der, issuer) is True


@pytest.mark.parametrize("tamper", [_this_update_tampered, _signature_tampered])
def test_tampered_vector_crls_fail_on_both_paths(tamper: object) -> None:
    assert callable(tamper)
    for der, issuer in _vector_crls("v4-uptodate"):
        bad = tamper(der)
        assert bad != der
        assert _library_verdict(bad, issuer) is False
        assert _our_verdict(bad, issuer) is False


def test_vector_crl_with_the_wrong_issuer_key_fails() -> None:
    (root_crl, _), (pck_crl, platform_ca) = _vector_crls("v4-uptodate")
    # The PCK CRL checked against the root (right shape, wrong name and key), and the root
    # CRL against the Platform CA: both refused.
    assert _our_verdict(pck_crl, intel_sgx_root_ca()) is False
    assert _our_verdict(root_crl, platform_ca) is False


def _ca(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CRL Issuer")])
    begin = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(begin)
        .not_valid_after(begin + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _crl_der(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    algorithm: hashes.SHA256 | hashes.SHA384,
) -> bytes:
    begin = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    revoked = x509.RevokedCertificateBuilder().serial_number(0x1234).revocation_date(begin).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(begin)
        .next_update(begin + dt.timedelta(days=30))
        .add_revoked_certificate(revoked)
        .sign(key, algorithm)
    )
    return crl.public_bytes(Encoding.DER)


def test_sha384_crl_takes_the_library_path_with_the_same_verdicts() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _ca(key)
    der = _crl_der(issuer, key, hashes.SHA384())
    assert _crl_facts(load_der_crl(der, "CRL")).signed is None
    assert _our_verdict(der, issuer) is _library_verdict(der, issuer) is True
    bad = _signature_tampered(der)
    assert _our_verdict(bad, issuer) is _library_verdict(bad, issuer) is False


def test_outer_algorithm_differing_from_the_signed_one_is_refused() -> None:
    # The outer (unsigned) algorithm says SHA-384 while the signed one says SHA-256. The
    # library refuses such a CRL at load, so it never reaches either signature path.
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _ca(key)
    der = _crl_der(issuer, key, hashes.SHA256())
    at = der.rindex(_SHA256_ALGORITHM)
    mixed = der[:at] + _SHA384_ALGORITHM + der[at + len(_SHA256_ALGORITHM) :]
    with pytest.raises(ValueError, match="signature algorithms do not match"):
        x509.load_der_x509_crl(mixed)
    with pytest.raises(CertificateError, match="not a valid DER CRL"):
        load_der_crl(mixed, "CRL")


def test_crl_objects_parsed_elsewhere_use_the_library_path() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _ca(key)
    der = _crl_der(issuer, key, hashes.SHA256())
    outside = x509.load_der_x509_crl(der)  # not through load_der_crl: no DER at hand
    assert _crl_facts(outside).signed is None
    verify_crl_signature(outside, issuer, "CRL")
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CertificateError, match="signature does not verify"):
        verify_crl_signature(outside, _ca(other), "CRL")


def test_revocation_reads_the_serials_of_the_parsed_crl() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _ca(key)
    crl = load_der_crl(_crl_der(issuer, key, hashes.SHA256()), "CRL")

    def leaf(serial: int) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Leaf {serial:x}")])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject)
            .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
            .serial_number(serial)
            .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
            .sign(key, hashes.SHA256())
        )

    assert revoked_by(leaf(0x1234), [(crl, "the CRL")]) == (
        "'Leaf 1234' (serial 1234) is revoked by the CRL"
    )
    assert revoked_by(leaf(0x1235), [(crl, "the CRL")]) is None
