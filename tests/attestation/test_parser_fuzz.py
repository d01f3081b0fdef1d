"""Property tests: whatever bytes come in, the parsers either parse or raise their typed error.

A crash (IndexError, struct.error, ValueError, UnicodeDecodeError...) in a parser that runs on
attacker-supplied evidence is a bug even when it fails closed, because callers catch
``AttestationError`` and nothing else. Inputs are random bytes, random bytes behind a valid
header (so the search reaches the body and signature data), and random edits of real quotes.
"""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import _spec
from attestation.errors import CertificateError, QuoteFormatError
from attestation.pck import decode_sgx_extension, encode_pck_extensions, split_pem_chain
from attestation.quote import Quote
from attestation.quote_parser import load_quote_bytes, parse_quote
from tests.vectors import TDX_CASES, tdx_case

_REAL = [parse_quote(tdx_case(name).quote).raw for name in TDX_CASES]
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_format_error(data: bytes) -> Quote | None:
    failure: QuoteFormatError | None = None
    try:
        quote = parse_quote(data)
    except QuoteFormatError as exc:
        failure = exc
    if failure is not None:
        assert failure.field is not None
        return None
    # Whatever parses must be self-consistent: raw is a prefix and only zeros follow it.
    assert data.startswith(quote.raw)
    assert not data[len(quote.raw) :].strip(b"\x00")
    assert quote.raw.startswith(quote.signed_region)
    return quote


@_SETTINGS
@given(st.binary(max_size=6000))
def test_random_bytes_only_raise_quote_format_error(data: bytes) -> None:
    _parse_or_format_error(data)


@_SETTINGS
@given(
    version=st.sampled_from([4, 5]),
    body_type=st.integers(0, 4),
    body_size=st.sampled_from([0, 584, 648, 0xFFFFFFFF]),
    tail=st.binary(max_size=2000),
)
def test_valid_header_with_random_rest_only_raises_quote_format_error(
    version: int, body_type: int, body_size: int, tail: bytes
) -> None:
    header = struct.pack("<HHI", version, 2, 0x81) + bytes(40)
    descriptor = struct.pack("<HI", body_type, body_size) if version == 5 else b""
    _parse_or_format_error(header + descriptor + tail)


def _structural_offsets(raw: bytes) -> list[int]:
    """Offsets of the length and type fields of a real quote: where edits matter most."""
    quote = parse_quote(raw)
    pos = len(quote.signed_region)
    sig_len = pos
    cert = pos + 4 + _spec.ECDSA_SIGNATURE_SIZE + _spec.ECDSA_PUBLIC_KEY_SIZE
    auth = cert + 6 + _spec.QE_REPORT_SIZE + _spec.QE_REPORT_SIGNATURE_SIZE
    inner = auth + 2 + len(quote.signature_data.certification.qe_auth_data)
    spots = [0, 1, 2, 4, sig_len, sig_len + 3, cert, cert + 2, cert + 5, auth, auth + 1]
    spots += [inner, inner + 2, inner + 5]
    if quote.version == 5:
        spots += [48, 50, 53]
    return spots


@_SETTINGS
@given(
    which=st.integers(0, len(_REAL) - 1),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.booleans()),
        min_size=1,
        max_size=6,
    ),
)
def test_random_byte_edits_of_real_quotes_only_raise_quote_format_error(
    which: int, edits: list[tuple[int, int, bool]]
) -> None:
    data = bytearray(_REAL[which])
    spots = _structural_offsets(_REAL[which])
    for position, value, structural in edits:
        index = spots[position % len(spots)] if structural else position % len(data)
        data[index] = value
    _parse_or_format_error(bytes(data))


@_SETTINGS
@given(
    which=st.integers(0, len(_REAL) - 1),
    start=st.integers(0, 6000),
    length=st.integers(0, 300),
    insert=st.binary(max_size=64),
)
def test_random_splices_of_real_quotes_only_raise_quote_format_error(
    which: int, start: int, length: int, insert: bytes
) -> None:
    raw = _REAL[which]
    start %= len(raw)
    _parse_or_format_error(raw[:start] + insert + raw[start + length :])


def _with_chain(raw: bytes, pem: bytes) -> bytes:
    """``raw`` with its PCK chain replaced by ``pem`` and every enclosing length adjusted."""
    quote = parse_quote(raw)
    old = quote.signature_data.certification.pck_chain_pem
    grow = len(pem) - len(old)
    start = len(raw) - len(old)
    sig_len = len(quote.signed_region)
    cert_size = sig_len + 4 + 128 + 2
    chain_size = start - 4
    out = bytearray(raw[:start] + pem)
    for offset in (sig_len, cert_size, chain_size):
        value = int.from_bytes(out[offset : offset + 4], "little") + grow
        out[offset : offset + 4] = value.to_bytes(4, "little")
    return bytes(out)


_LEAF_DERS = [
    [
        c.public_bytes(serialization.Encoding.DER)
        for c in split_pem_chain(parse_quote(raw).signature_data.certification.pck_chain_pem)
    ]
    for raw in _REAL
]


# Edited serials can be non-positive: cryptography warns before the parser refuses them.
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@_SETTINGS
@given(
    which=st.integers(0, len(_REAL) - 1),
    cert=st.integers(0, 2),
    # Half the edits land in the first bytes (lengths, version, serial), where parsers break.
    edits=st.lists(
        st.tuples(st.integers(0, 24) | st.integers(0, 1200), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_random_edits_inside_pck_certificates_only_raise_quote_format_error(
    which: int, cert: int, edits: list[tuple[int, int]]
) -> None:
    # Edits the DER under the base64, so certificate parsing itself is what gets exercised.
    ders = [bytearray(d) for d in _LEAF_DERS[which]]
    target = ders[cert]
    for index, value in edits:
        target[index % len(target)] = value
    pem = b"".join(
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(d))
        + b"-----END CERTIFICATE-----\n"
        for d in ders
    )
    _parse_or_format_error(_with_chain(_REAL[which], pem))


def test_chain_replacement_helper_keeps_a_real_quote_valid() -> None:
    # Guards the helper above: swapping in the same chain re-encoded must still parse.
    pem = b"".join(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(d) + b"-----END CERTIFICATE-----\n"
        for d in _LEAF_DERS[0]
    )
    quote = parse_quote(_with_chain(_REAL[0], pem))
    assert quote.signature_data.certification.pck_chain_pem == pem


def _real_extension() -> bytes:
    leaf = split_pem_chain(parse_quote(_REAL[0]).signature_data.certification.pck_chain_pem)[0]
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(_spec.SGX_EXTENSIONS_OID))
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    return ext.value.value


_EXTENSION = _real_extension()


def _decode_or_certificate_error(data: bytes) -> None:
    try:
        ext = decode_sgx_extension(data)
    except CertificateError:
        return
    # What decodes is within the ranges the encoder enforces, so it re-encodes and round-trips.
    assert decode_sgx_extension(encode_pck_extensions(ext)) == ext


@_SETTINGS
@given(st.binary(max_size=600))
def test_random_extension_bytes_only_raise_certificate_error(data: bytes) -> None:
    _decode_or_certificate_error(data)


@_SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(_EXTENSION) - 1), st.integers(0, 255)), max_size=4))
def test_random_edits_of_a_real_extension_only_raise_certificate_error(
    edits: list[tuple[int, int]],
) -> None:
    data = bytearray(_EXTENSION)
    for index, value in edits:
        data[index] = value
    _decode_or_certificate_error(bytes(data))


@_SETTINGS
@given(st.binary(max_size=3000))
def test_random_pem_bytes_only_raise_certificate_error(data: bytes) -> None:
    try:
        certs = split_pem_chain(
            b"-----BEGIN CERTIFICATE-----\n" + data + b"-----END CERTIFICATE-----\n"
        )
    except CertificateError:
        return
    assert len(certs) == 1


@_SETTINGS
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_random_quote_encodings_only_raise_quote_format_error(data: bytes) -> None:
    try:
        decoded = load_quote_bytes(data)
    except QuoteFormatError as exc:
        failure = exc
    else:
        assert isinstance(decoded, bytes)
        return
    assert failure.field == "input"
