"""Certificate rules of attestation.certs that the end-to-end tests cannot isolate.

Each fault here is also refused further along a full verification (by another rule), so it is
tested on the function that owns the rule, where removing the rule changes the outcome.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attestation.certs import MAX_CHAIN_LENGTH, load_pem_chain, verify_chain, verify_root
from attestation.errors import CertificateError
from tests.attestation.conftest import SIM_NOW


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    basic_constraints: x509.BasicConstraints | None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    begin = dt.datetime.fromtimestamp(SIM_NOW - 3600, tz=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + dt.timedelta(days=365))
    )
    if basic_constraints is not None:
        builder = builder.add_extension(basic_constraints, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


CA = x509.BasicConstraints(ca=True, path_length=None)
LEAF = x509.BasicConstraints(ca=False, path_length=None)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_self_signed_leaf_passed_as_trusted_root_is_refused() -> None:
    # A trusted root signs the chain's CAs; a self-signed end-entity certificate may not.
    key = _key()
    leaf = _cert("Not A Root", key, None, key, basic_constraints=LEAF)
    with pytest.raises(CertificateError, match="'Not A Root' is not a CA"):
        verify_root(leaf)


def test_root_without_basic_constraints_is_refused() -> None:
    key = _key()
    bare = _cert("Bare Root", key, None, key, basic_constraints=None)
    with pytest.raises(CertificateError, match="'Bare Root' has no basicConstraints"):
        verify_root(bare)


def test_intermediate_without_basic_constraints_cannot_issue() -> None:
    # Without basicConstraints a certificate is not a CA (RFC 5280 4.2.1.9), whatever it signs.
    root_k, mid_k, leaf_k = _key(), _key(), _key()
    root = _cert("Root", root_k, None, root_k, basic_constraints=CA)
    mid = _cert("Unmarked CA", mid_k, root, root_k, basic_constraints=None)
    leaf = _cert("Leaf", leaf_k, mid, mid_k, basic_constraints=LEAF)
    with pytest.raises(CertificateError, match="'Unmarked CA' has no basicConstraints"):
        verify_chain([leaf, mid], root)


def test_pem_bundle_with_too_many_certificates_is_refused_before_parsing() -> None:
    # A sender must not make us parse (and later verify) an unbounded chain.
    key = _key()
    pem = _cert("Root", key, None, key, basic_constraints=CA).public_bytes(Encoding.PEM)
    assert len(load_pem_chain(pem * MAX_CHAIN_LENGTH, "bundle")) == MAX_CHAIN_LENGTH
    with pytest.raises(CertificateError, match=f"more than {MAX_CHAIN_LENGTH} certificates"):
        load_pem_chain(pem * (MAX_CHAIN_LENGTH + 1), "bundle")
