"""The quote parser against the real TDX vectors, and every way a quote can be malformed.

Decoded fields are compared with the independently produced ``expected.json`` of each vector;
the signed region and the QE report slices are checked by verifying the real signatures over
them, which only works if the parser cut the bytes exactly where Intel's quoting library did.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation import _spec
from attestation.errors import QuoteFormatError
from attestation.pck import parse_pck_extensions, split_pem_chain
from attestation.quote import BodyType, Quote
from attestation.quote_parser import load_quote_bytes, parse_quote
from tests.vectors import TDX_CASES, tdx_case

INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")

# expected.json key -> TdReport attribute, for the keys whose names differ.
_EXPECTED_TO_FIELD = {
    "rt_mr0": "rtmr0",
    "rt_mr1": "rtmr1",
    "rt_mr2": "rtmr2",
    "rt_mr3": "rtmr3",
    "tee_tcb_svn2": "tee_tcb_svn_2",
}
# expected.json keys that are not decoded quote fields.
_EXPECTED_META = {
    "now",
    "reference_result",
    "expect_accept_default_policy",
    "note",
    "source",
    "quote_version",
    "fmspc",
}


def _verify_p256(public_xy: bytes, signature_rs: bytes, message: bytes) -> None:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + public_xy)
    der = encode_dss_signature(
        int.from_bytes(signature_rs[:32], "big"), int.from_bytes(signature_rs[32:], "big")
    )
    key.verify(der, message, ec.ECDSA(hashes.SHA256()))


# --- Building quotes from parts (to make consistent variants of real quotes) --------------


@dataclass
class Parts:
    """A quote's fields as bytes, so a test can change one and rebuild the rest consistently."""

    header: bytes
    body: bytes
    body_type: int | None  # None for v4 (no body descriptor)
    signature: bytes
    attestation_key: bytes
    qe_report: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    pem: bytes
    outer_type: int = 6
    inner_type: int = 5

    @classmethod
    def of(cls, quote: Quote) -> Parts:
        sig = quote.signature_data
        cert = sig.certification
        return cls(
            header=quote.header.raw,
            body=quote.signed_region[len(quote.signed_region) - _body_len(quote) :],
            body_type=None if quote.version == 4 else int(quote.body_type),
            signature=sig.signature,
            attestation_key=sig.attestation_key,
            qe_report=cert.qe_report.raw,
            qe_report_signature=cert.qe_report_signature,
            qe_auth_data=cert.qe_auth_data,
            pem=cert.pck_chain_pem,
        )

    def build(self) -> bytes:
        descriptor = b""
        if self.body_type is not None:
            descriptor = struct.pack("<HI", self.body_type, len(self.body))
        inner = struct.pack("<HI", self.inner_type, len(self.pem)) + self.pem
        qe = (
            self.qe_report
            + self.qe_report_signature
            + struct.pack("<H", len(self.qe_auth_data))
            + self.qe_auth_data
            + inner
        )
        outer = struct.pack("<HI", self.outer_type, len(qe)) + qe
        sig_data = self.signature + self.attestation_key + outer
        return self.header + descriptor + self.body + struct.pack("<I", len(sig_data)) + sig_data


def _body_len(quote: Quote) -> int:
    return _spec.TD_REPORT15_SIZE if quote.body_type is BodyType.TDX_15 else 584


@dataclass(frozen=True)
class LengthField:
    name: str
    offset: int
    size: int  # bytes: 2 or 4


def _length_fields(quote: Quote) -> list[LengthField]:
    """Absolute offsets of every length field of a parsed quote, from the spec layout."""
    fields = []
    pos = _spec.HEADER_SIZE
    if quote.version == 5:
        fields.append(LengthField("body_size", pos + 2, 4))
        pos += 6
    pos += _body_len(quote)
    fields.append(LengthField("signature_data_length", pos, 4))
    pos += 4 + _spec.ECDSA_SIGNATURE_SIZE + _spec.ECDSA_PUBLIC_KEY_SIZE
    fields.append(LengthField("certification_data.size", pos + 2, 4))
    pos += 6 + _spec.QE_REPORT_SIZE + _spec.QE_REPORT_SIGNATURE_SIZE
    fields.append(LengthField("qe_auth_data.size", pos, 2))
    pos += 2 + len(quote.signature_data.certification.qe_auth_data)
    fields.append(LengthField("pck_cert_chain.size", pos + 2, 4))
    return fields


def _with_u(data: bytes, offset: int, size: int, value: int) -> bytes:
    return data[:offset] + value.to_bytes(size, "little") + data[offset + size :]


# --- Every vector decodes to its expected values ------------------------------------------


@pytest.mark.parametrize("name", TDX_CASES)
def test_every_vector_decodes_to_expected_fields(name: str) -> None:
    case = tdx_case(name)
    quote = parse_quote(case.quote)
    compared = 0
    for key, want in case.expected.items():
        if key in _EXPECTED_META:
            continue
        got = getattr(quote.td_report, _EXPECTED_TO_FIELD.get(key, key))
        assert got is not None, key
        assert got.hex() == want.lower(), key
        compared += 1
    # 15 TDX 1.0 fields, plus 2 for TDX 1.5: no expected field went unchecked.
    assert compared == (17 if quote.body_type is BodyType.TDX_15 else 15)
    assert quote.version == case.expected["quote_version"]
    leaf = split_pem_chain(quote.signature_data.certification.pck_chain_pem)[0]
    assert parse_pck_extensions(leaf).fmspc.hex().upper() == case.expected["fmspc"]


@pytest.mark.parametrize("name", TDX_CASES)
def test_header_of_every_vector_is_an_intel_tdx_ecdsa_quote(name: str) -> None:
    quote = parse_quote(tdx_case(name).quote)
    assert quote.header.attestation_key_type == 2
    assert quote.header.tee_type == 0x81
    assert quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert quote.header.raw == tdx_case(name).quote[:48]


@pytest.mark.parametrize("name", TDX_CASES)
def test_signed_region_is_exactly_what_the_attestation_key_signed(name: str) -> None:
    quote = parse_quote(tdx_case(name).quote)
    sig = quote.signature_data
    _verify_p256(sig.attestation_key, sig.signature, quote.signed_region)


@pytest.mark.parametrize("name", TDX_CASES)
def test_qe_report_slices_match_the_pck_signature_and_key_binding(name: str) -> None:
    quote = parse_quote(tdx_case(name).quote)
    cert = quote.signature_data.certification
    leaf = split_pem_chain(cert.pck_chain_pem)[0]
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    _verify_p256(
        public.public_numbers().x.to_bytes(32, "big")
        + public.public_numbers().y.to_bytes(32, "big"),
        cert.qe_report_signature,
        cert.qe_report.raw,
    )
    binding = hashlib.sha256(quote.signature_data.attestation_key + cert.qe_auth_data).digest()
    assert cert.qe_report.report_data[:32] == binding
    assert len(cert.qe_report.raw) == 384


def test_qe_report_fields_are_cut_at_the_spec_offsets() -> None:
    quote = parse_quote(tdx_case("v4-uptodate").quote)
    report = quote.signature_data.certification.qe_report
    raw = report.raw
    assert report.cpu_svn == raw[0:16]
    assert report.misc_select == int.from_bytes(raw[16:20], "little")
    assert report.attributes == raw[48:64]
    assert report.mr_enclave == raw[64:96]
    assert report.mr_signer == raw[128:160]
    assert report.isv_prod_id == int.from_bytes(raw[256:258], "little")
    assert report.isv_svn == int.from_bytes(raw[258:260], "little")
    assert report.report_data == raw[320:384]


def test_v5_signed_region_includes_body_type_and_size() -> None:
    quote = parse_quote(tdx_case("v5-uptodate").quote)
    assert quote.body_type is BodyType.TDX_15
    assert quote.signed_region == quote.raw[: 48 + 6 + 648]
    # Without the descriptor the real signature does not verify: the fields are signed.
    sig = quote.signature_data
    without_descriptor = quote.signed_region[:48] + quote.signed_region[54:]
    with pytest.raises(InvalidSignature):
        _verify_p256(sig.attestation_key, sig.signature, without_descriptor)


def test_v5_body_type_3_gives_tee_tcb_svn_2_and_mr_service_td() -> None:
    case = tdx_case("v5-uptodate")
    report = parse_quote(case.quote).td_report
    assert report.is_tdx15
    assert report.tee_tcb_svn_2 == bytes.fromhex(case.expected["tee_tcb_svn2"])
    assert report.mr_service_td == bytes.fromhex(case.expected["mr_service_td"])


def test_v4_has_no_tdx15_fields() -> None:
    report = parse_quote(tdx_case("v4-uptodate").quote).td_report
    assert report.tee_tcb_svn_2 is None
    assert report.mr_service_td is None
    assert not report.is_tdx15


def test_v5_body_type_2_carries_a_tdx10_report() -> None:
    v4 = parse_quote(tdx_case("v4-uptodate").quote)
    parts = Parts.of(v4)
    parts.header = _with_u(parts.header, 0, 2, 5)
    parts.body_type = 2
    data = parts.build()
    quote = parse_quote(data)
    assert quote.version == 5
    assert quote.body_type is BodyType.TDX_10
    assert quote.td_report == v4.td_report
    assert quote.signed_region == data[: 48 + 6 + 584]


@pytest.mark.parametrize("name", TDX_CASES)
def test_rebuilding_from_parsed_parts_gives_the_same_bytes(name: str) -> None:
    # The parser's decomposition is complete: nothing in the quote was skipped or invented.
    quote = parse_quote(tdx_case(name).quote)
    assert Parts.of(quote).build() == quote.raw


# --- Padding and trailing data -------------------------------------------------------------


@pytest.mark.parametrize("name", TDX_CASES)
def test_zero_padding_after_declared_end_is_accepted(name: str) -> None:
    raw = parse_quote(tdx_case(name).quote).raw
    padded = parse_quote(raw + bytes(1000))
    assert padded.raw == raw


def test_vector_file_padding_is_dropped_from_raw() -> None:
    data = tdx_case("neg-outofdate").quote
    quote = parse_quote(data)
    assert len(data) > len(quote.raw)
    assert data.startswith(quote.raw)


@pytest.mark.parametrize("garbage_at", [0, 1, 69])
def test_nonzero_trailing_garbage_is_rejected(garbage_at: int) -> None:
    raw = parse_quote(tdx_case("v4-uptodate").quote).raw
    tail = bytearray(70)
    tail[garbage_at] = 0x01
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(raw + bytes(tail))
    assert err.value.field == "trailing_data"
    assert err.value.offset == len(raw) + garbage_at


# --- Truncation ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v4-uptodate", "v5-uptodate"])
def test_truncation_at_every_offset_is_a_quote_format_error(name: str) -> None:
    raw = parse_quote(tdx_case(name).quote).raw
    for cut in range(len(raw)):
        with pytest.raises(QuoteFormatError) as err:
            parse_quote(raw[:cut])
        assert err.value.field is not None, cut
        assert err.value.offset is not None, cut
        assert err.value.offset <= cut, cut


def test_empty_input_is_a_truncated_header() -> None:
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(b"")
    assert err.value.field == "header"
    assert err.value.offset == 0


def test_non_bytes_input_is_a_quote_format_error() -> None:
    with pytest.raises(QuoteFormatError):
        parse_quote("not bytes")  # type: ignore[arg-type]


# --- Length fields lying about their structure -----------------------------------------------


def _length_cases() -> list[tuple[str, str, int]]:
    cases = []
    for name in ("v4-uptodate", "v5-uptodate", "neg-debug-td"):
        for lf in _length_fields(parse_quote(tdx_case(name).quote)):
            for delta in (-1, 1, 7, 0x7FFF):
                cases.append((name, lf.name, delta))
    return cases


@pytest.mark.parametrize(("name", "field", "delta"), _length_cases())
@pytest.mark.parametrize("padded", [False, True])
def test_inflated_or_deflated_length_is_rejected_naming_the_field(
    name: str, field: str, delta: int, padded: bool
) -> None:
    quote = parse_quote(tdx_case(name).quote)
    lf = next(f for f in _length_fields(quote) if f.name == field)
    value = int.from_bytes(quote.raw[lf.offset : lf.offset + lf.size], "little") + delta
    data = _with_u(quote.raw, lf.offset, lf.size, value % (1 << (8 * lf.size)))
    if padded:
        data += bytes(0x8000)  # zero padding must not make a lying length acceptable
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(data)
    assert field in str(err.value)
    assert err.value.offset is not None


def test_length_fields_are_at_the_offsets_the_tests_assume() -> None:
    # Guards the table above: each field holds the size of what follows it in the real quote.
    quote = parse_quote(tdx_case("v5-uptodate").quote)
    got = {
        lf.name: int.from_bytes(quote.raw[lf.offset : lf.offset + lf.size], "little")
        for lf in _length_fields(quote)
    }
    cert = quote.signature_data.certification
    assert got == {
        "body_size": 648,
        "signature_data_length": len(quote.raw) - len(quote.signed_region) - 4,
        "certification_data.size": len(quote.raw) - len(quote.signed_region) - 4 - 128 - 6,
        "qe_auth_data.size": len(cert.qe_auth_data),
        "pck_cert_chain.size": len(cert.pck_chain_pem),
    }


# --- Unknown kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 3, 6, 0xFFFF])
def test_unknown_quote_version_is_rejected(version: int) -> None:
    data = _with_u(tdx_case("v4-uptodate").quote, 0, 2, version)
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(data)
    assert (err.value.field, err.value.offset) == ("header.version", 0)


@pytest.mark.parametrize("key_type", [0, 1, 3, 4])
def test_attestation_key_type_other_than_p256_is_rejected(key_type: int) -> None:
    data = _with_u(tdx_case("v4-uptodate").quote, 2, 2, key_type)
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(data)
    assert (err.value.field, err.value.offset) == ("header.attestation_key_type", 2)


@pytest.mark.parametrize("tee_type", [0x00, 0x80, 0x82, 0x81 << 8])
def test_sgx_or_unknown_tee_type_is_rejected(tee_type: int) -> None:
    data = _with_u(tdx_case("v5-uptodate").quote, 4, 4, tee_type)
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(data)
    assert (err.value.field, err.value.offset) == ("header.tee_type", 4)


@pytest.mark.parametrize("body_type", [0, 1, 4, 0xFFFF])
def test_v5_body_type_other_than_td_report_is_rejected(body_type: int) -> None:
    data = _with_u(tdx_case("v5-uptodate").quote, 48, 2, body_type)
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(data)
    assert (err.value.field, err.value.offset) == ("body_type", 48)


def test_v5_body_type_that_disagrees_with_body_size_is_rejected() -> None:
    # Type 2 (584 bytes) announced over a 648-byte TDX 1.5 body.
    data = _with_u(tdx_case("v5-uptodate").quote, 48, 2, 2)
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(data)
    assert (err.value.field, err.value.offset) == ("body_size", 50)


@pytest.mark.parametrize("outer_type", [1, 2, 3, 4, 5, 7, 0xFFFF])
def test_outer_certification_data_type_other_than_qe_report_is_rejected(outer_type: int) -> None:
    parts = Parts.of(parse_quote(tdx_case("v4-uptodate").quote))
    parts.outer_type = outer_type
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(parts.build())
    assert err.value.field == "certification_data.type"
    assert err.value.offset == 48 + 584 + 4 + 128


@pytest.mark.parametrize("inner_type", [1, 2, 3, 4, 6, 7])
def test_inner_certification_data_type_other_than_pck_chain_is_rejected(inner_type: int) -> None:
    parts = Parts.of(parse_quote(tdx_case("v4-uptodate").quote))
    parts.inner_type = inner_type
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(parts.build())
    assert err.value.field == "pck_cert_chain.type"


# --- The PEM chain ---------------------------------------------------------------------------


def _pem_variant(edit: bytes) -> bytes:
    parts = Parts.of(parse_quote(tdx_case("v4-uptodate").quote))
    parts.pem = edit
    return parts.build()


def _real_pem() -> bytes:
    return parse_quote(tdx_case("v4-uptodate").quote).signature_data.certification.pck_chain_pem


@pytest.mark.parametrize(
    "make_pem",
    [
        pytest.param(lambda pem: pem.replace(b"MII", b"MIJ", 1), id="corrupt-der"),
        pytest.param(
            lambda pem: pem.replace(
                b"-----END CERTIFICATE-----\n", b"-----END CERTIFICATE-----\nhi", 1
            ),
            id="junk-between-certs",
        ),
        pytest.param(lambda pem: b"junk" + pem, id="junk-before"),
        pytest.param(lambda pem: pem.rstrip(b"\x00") + b"junk", id="junk-after"),
        pytest.param(lambda pem: b"", id="empty"),
        pytest.param(lambda pem: bytes(100), id="only-nuls"),
        pytest.param(
            lambda pem: pem.replace(b"CERTIFICATE-----\n", b"PRIVATE KEY-----\n", 2), id="not-certs"
        ),
        pytest.param(lambda pem: pem[: len(pem) // 2], id="cut-mid-cert"),
    ],
)
def test_pck_chain_that_is_not_exactly_pem_certificates_is_rejected(
    make_pem: Callable[[bytes], bytes],
) -> None:
    data = _pem_variant(make_pem(_real_pem()))
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(data)
    assert err.value.field == "pck_cert_chain"


def test_pck_chain_holds_exactly_the_certificates_present() -> None:
    certs = split_pem_chain(_real_pem())
    assert len(certs) == _real_pem().count(b"-----BEGIN CERTIFICATE-----") == 3


# --- Loading quote files -------------------------------------------------------------------


def test_load_quote_bytes_accepts_raw_hex_and_base64() -> None:
    raw = parse_quote(tdx_case("v5-uptodate").quote).raw
    hex_text = raw.hex().encode()
    wrapped_b64 = b"\n".join(base64.b64encode(raw)[i : i + 76] for i in range(0, len(raw) * 2, 76))
    assert load_quote_bytes(raw) == raw
    assert load_quote_bytes(hex_text) == raw
    assert load_quote_bytes(b"  0x" + hex_text.upper() + b"\n") == raw
    assert load_quote_bytes(wrapped_b64 + b"\n") == raw


@pytest.mark.parametrize("text", [b"", b"   \n", b"not a quote!", b"abc", b"%%%%"])
def test_load_quote_bytes_rejects_what_is_not_a_quote_encoding(text: bytes) -> None:
    with pytest.raises(QuoteFormatError) as err:
        load_quote_bytes(text)
    assert err.value.field == "input"


def test_pck_leaf_with_unknown_x509_version_is_a_quote_format_error() -> None:
    pem = _real_pem()
    first_end = pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
    leaf = split_pem_chain(pem)[0].public_bytes(serialization.Encoding.DER)
    bad_leaf = leaf.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x06", 1)
    bad_pem = (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bad_leaf)
        + b"-----END CERTIFICATE-----\n"
        + pem[first_end:]
    )
    with pytest.raises(QuoteFormatError) as err:
        parse_quote(_pem_variant(bad_pem))
    assert err.value.field == "pck_cert_chain"


def test_load_quote_bytes_prefers_the_reading_that_is_a_quote() -> None:
    # "BAAC" is valid hex (BA AC) and valid base64 (04 00 02): only the latter is a quote start.
    assert load_quote_bytes(b"BAAC") == b"\x04\x00\x02"
    # "0400" is valid hex (04 00) and valid base64 (D3 8D 34): only the former is.
    assert load_quote_bytes(b"0400") == b"\x04\x00"


def test_load_quote_bytes_refuses_non_bytes() -> None:
    with pytest.raises(QuoteFormatError):
        load_quote_bytes("0400")  # type: ignore[arg-type]
