"""Bytes to ``attestation.quote.Quote``: a strict parser for TDX quotes v4 and v5.

The parser reads by declared lengths and checks that every declared length agrees with the
structure around it, so that a quote has exactly one reading: the header, the TD report body
(TDX 1.0, or for v5 TDX 1.0/1.5 by body type), the ECDSA signature data, certification data
type 6 (QE report, its signature, QE authentication data) and inside it type 5 (the PEM PCK
chain). Bytes after the declared end are accepted only when they are all zero, because real
quote files are sometimes zero-padded. Every rejection is a ``QuoteFormatError`` naming the
field and its offset from the start of the quote.

Deliberately not done here: no signature, certificate, collateral or policy check (that is
``attestation.verify``), and no judgement of the header's QE vendor ID or the TD attributes.
The parser only guarantees that what it returns is exactly what the bytes say.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re

from attestation import _spec
from attestation.errors import CertificateError, QuoteFormatError
from attestation.pck import split_pem_chain
from attestation.quote import (
    AttestationKeyType,
    BodyType,
    CertificationDataType,
    EnclaveReport,
    QeReportCertificationData,
    Quote,
    QuoteHeader,
    QuoteSignatureData,
    TdReport,
    TeeType,
)

_BODY_SIZES = {
    BodyType.TDX_10: _spec.TD_REPORT10_SIZE,
    BodyType.TDX_15: _spec.TD_REPORT15_SIZE,
}


class _Cursor:
    """Reads forward through ``data[pos:end]``; offsets in errors are absolute."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, size: int, field: str) -> bytes:
        if size > self.remaining:
            raise QuoteFormatError(
                f"truncated: {field} needs {size} bytes, {max(self.remaining, 0)} remain",
                field=field,
                offset=self.pos,
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")


def _u(raw: bytes, at: tuple[int, int]) -> int:
    offset, size = at
    return int.from_bytes(raw[offset : offset + size], "little")


def _b(raw: bytes, at: tuple[int, int]) -> bytes:
    offset, size = at
    return raw[offset : offset + size]


def _parse_header(cur: _Cursor) -> QuoteHeader:
    start = cur.pos
    raw = cur.take(_spec.HEADER_SIZE, "header")
    version = _u(raw, _spec.HEADER_VERSION)
    if version not in _spec.SUPPORTED_QUOTE_VERSIONS:
        raise QuoteFormatError(
            f"unsupported quote version {version} (only 4 and 5 are TDX quotes)",
            field="header.version",
            offset=start + _spec.HEADER_VERSION[0],
        )
    key_type = _u(raw, _spec.HEADER_ATT_KEY_TYPE)
    if key_type != AttestationKeyType.ECDSA_P256:
        raise QuoteFormatError(
            f"unsupported attestation key type {key_type} (only 2, ECDSA P-256)",
            field="header.attestation_key_type",
            offset=start + _spec.HEADER_ATT_KEY_TYPE[0],
        )
    tee_type = _u(raw, _spec.HEADER_TEE_TYPE)
    if tee_type != TeeType.TDX:
        raise QuoteFormatError(
            f"TEE type 0x{tee_type:08x} is not TDX (0x81)",
            field="header.tee_type",
            offset=start + _spec.HEADER_TEE_TYPE[0],
        )
    return QuoteHeader(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee_type,
        qe_svn=_u(raw, _spec.HEADER_QE_SVN),
        pce_svn=_u(raw, _spec.HEADER_PCE_SVN),
        qe_vendor_id=_b(raw, _spec.HEADER_QE_VENDOR_ID),
        user_data=_b(raw, _spec.HEADER_USER_DATA),
        raw=raw,
    )


def _parse_body_descriptor(cur: _Cursor) -> BodyType:
    """Quote v5's u16 body type and u32 body size, which must agree with each other."""
    type_offset = cur.pos
    raw_type = cur.u16("body_type")
    if raw_type not in (BodyType.TDX_10, BodyType.TDX_15):
        raise QuoteFormatError(
            f"body type {raw_type} is not a TD report (2 = TDX 1.0, 3 = TDX 1.5)",
            field="body_type",
            offset=type_offset,
        )
    body_type = BodyType(raw_type)
    size_offset = cur.pos
    size = cur.u32("body_size")
    if size != _BODY_SIZES[body_type]:
        raise QuoteFormatError(
            f"body size {size} does not match body type {raw_type} "
            f"({_BODY_SIZES[body_type]} bytes)",
            field="body_size",
            offset=size_offset,
        )
    return body_type


def _parse_td_report(cur: _Cursor, body_type: BodyType) -> TdReport:
    raw = cur.take(_BODY_SIZES[body_type], "td_report")
    fields = {name: raw[off : off + size] for name, off, size in _spec.TD_REPORT10_FIELDS}
    if body_type is BodyType.TDX_15:
        fields.update(
            {name: raw[off : off + size] for name, off, size in _spec.TD_REPORT15_EXTRA_FIELDS}
        )
    return TdReport(**fields)


def _parse_enclave_report(raw: bytes) -> EnclaveReport:
    return EnclaveReport(
        cpu_svn=_b(raw, _spec.ENCLAVE_REPORT_CPU_SVN),
        misc_select=_u(raw, _spec.ENCLAVE_REPORT_MISC_SELECT),
        attributes=_b(raw, _spec.ENCLAVE_REPORT_ATTRIBUTES),
        mr_enclave=_b(raw, _spec.ENCLAVE_REPORT_MR_ENCLAVE),
        mr_signer=_b(raw, _spec.ENCLAVE_REPORT_MR_SIGNER),
        isv_prod_id=_u(raw, _spec.ENCLAVE_REPORT_ISV_PROD_ID),
        isv_svn=_u(raw, _spec.ENCLAVE_REPORT_ISV_SVN),
        report_data=_b(raw, _spec.ENCLAVE_REPORT_REPORT_DATA),
        raw=raw,
    )


def _cert_data_header(
    cur: _Cursor, name: str, expected: CertificationDataType, parent: str
) -> _Cursor:
    """Read a certification data (type, size) that must exactly fill the rest of ``cur``.

    The size is checked against its parent before the type is, so that a wrong length
    anywhere earlier is reported as a length disagreement naming both fields, not as a
    confusing "unknown type" read from shifted bytes.
    """
    type_offset = cur.pos
    cert_type = cur.u16(f"{name}.type")
    size_offset = cur.pos
    size = cur.u32(f"{name}.size")
    if size != cur.remaining:
        raise QuoteFormatError(
            f"{name}.size declares {size} bytes but {parent} leaves {cur.remaining} for it",
            field=f"{name}.size",
            offset=size_offset,
        )
    if cert_type != expected:
        raise QuoteFormatError(
            f"certification data type {cert_type} where type {int(expected)} "
            f"({expected.name}) is required",
            field=f"{name}.type",
            offset=type_offset,
        )
    inner = _Cursor(cur.data, cur.pos, cur.pos + size)
    cur.pos += size
    return inner


def _parse_signature_data(cur: _Cursor) -> QuoteSignatureData:
    length_offset = cur.pos
    length = cur.u32("signature_data_length")
    if length > cur.remaining:
        raise QuoteFormatError(
            f"signature_data_length declares {length} bytes, {cur.remaining} remain",
            field="signature_data_length",
            offset=length_offset,
        )
    sig = _Cursor(cur.data, cur.pos, cur.pos + length)
    cur.pos += length

    signature = sig.take(_spec.ECDSA_SIGNATURE_SIZE, "quote_signature")
    attestation_key = sig.take(_spec.ECDSA_PUBLIC_KEY_SIZE, "attestation_key")
    qe = _cert_data_header(
        sig,
        "certification_data",
        CertificationDataType.QE_REPORT_CERTIFICATION_DATA,
        "signature_data_length",
    )

    qe_report_raw = qe.take(_spec.QE_REPORT_SIZE, "qe_report")
    qe_report_signature = qe.take(_spec.QE_REPORT_SIGNATURE_SIZE, "qe_report_signature")
    auth_offset = qe.pos
    auth_size = qe.u16("qe_auth_data.size")
    if auth_size > qe.remaining:
        raise QuoteFormatError(
            f"qe_auth_data.size declares {auth_size} bytes but certification_data.size "
            f"leaves {qe.remaining}",
            field="qe_auth_data.size",
            offset=auth_offset,
        )
    qe_auth_data = qe.take(auth_size, "qe_auth_data")
    chain = _cert_data_header(
        qe,
        "pck_cert_chain",
        CertificationDataType.PCK_CERT_CHAIN,
        "certification_data.size with qe_auth_data.size",
    )
    chain_offset = chain.pos
    pem = chain.take(chain.remaining, "pck_cert_chain")
    try:
        split_pem_chain(pem)
    except CertificateError as exc:
        raise QuoteFormatError(
            f"PCK certificate chain is not a PEM certificate chain: {exc}",
            field="pck_cert_chain",
            offset=chain_offset,
        ) from None

    return QuoteSignatureData(
        signature=signature,
        attestation_key=attestation_key,
        certification=QeReportCertificationData(
            qe_report=_parse_enclave_report(qe_report_raw),
            qe_report_signature=qe_report_signature,
            qe_auth_data=qe_auth_data,
            pck_chain_pem=pem,
        ),
    )


def parse_quote(data: bytes) -> Quote:
    """Parse a TDX quote (v4, or v5 with body type 2 or 3) from its binary form.

    ``Quote.signed_region`` is the header and body exactly as the attestation key signed them
    (for v5 this includes the body type and size fields). ``Quote.raw`` ends at the declared
    end of the signature data; trailing bytes after it must all be zero.
    ``pck_chain_pem`` is the type-5 payload exactly as carried, NUL terminator included.

    Raises ``QuoteFormatError`` (with ``field`` and ``offset``) on anything truncated,
    inconsistent or of an unknown kind; never another exception type.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise QuoteFormatError(f"a quote is bytes, not {type(data).__name__}", field="quote")
    data = bytes(data)
    cur = _Cursor(data, 0, len(data))
    header = _parse_header(cur)
    # v4 has no body descriptor: its body is always a TDX 1.0 report.
    body_type = _parse_body_descriptor(cur) if header.version == 5 else BodyType.TDX_10
    td_report = _parse_td_report(cur, body_type)
    signed_end = cur.pos
    signature_data = _parse_signature_data(cur)
    end = cur.pos
    trailing = data[end:]
    if trailing.strip(b"\x00"):
        first = end + next(i for i, b in enumerate(trailing) if b)
        raise QuoteFormatError(
            f"{len(trailing)} bytes after the declared end of the quote are not zero padding",
            field="trailing_data",
            offset=first,
        )
    return Quote(
        header=header,
        body_type=body_type,
        td_report=td_report,
        signature_data=signature_data,
        signed_region=data[:signed_end],
        raw=data[:end],
    )


# A quote starts with its u16 version, 4 or 5, little-endian.
_QUOTE_MAGIC = (b"\x04\x00", b"\x05\x00")
_HEX_TEXT = re.compile(rb"(?:0x)?[0-9a-fA-F\s]+")
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


def load_quote_bytes(data: bytes) -> bytes:
    """The binary quote from raw bytes, hex text or base64 text (as files and APIs give it).

    Binary is recognised by its first bytes (a little-endian version 4 or 5); text may have
    surrounding whitespace and line breaks, and hex may carry a ``0x`` prefix. Text that is
    both valid hex and valid base64 is read the way that yields a quote header. This only
    decodes: pass the result to ``parse_quote``. Raises ``QuoteFormatError``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise QuoteFormatError(f"a quote is bytes, not {type(data).__name__}", field="input")
    data = bytes(data)
    if data[:2] in _QUOTE_MAGIC:
        return data
    text = data.strip()
    if not text:
        raise QuoteFormatError("no quote: the input is empty", field="input", offset=0)
    decodings = []
    if _HEX_TEXT.fullmatch(text):
        digits = b"".join(text.removeprefix(b"0x").split())
        if len(digits) % 2 == 0:
            decodings.append(bytes.fromhex(digits.decode("ascii")))
    if _BASE64_TEXT.fullmatch(text):
        # Not base64 after all (bad padding): the hex reading, if any, is the only one.
        with contextlib.suppress(binascii.Error):
            decodings.append(base64.b64decode(b"".join(text.split()), validate=True))
    for decoded in decodings:
        if decoded[:2] in _QUOTE_MAGIC:
            return decoded
    if decodings:
        return decodings[0]  # parse_quote will say precisely what is wrong with it
    raise QuoteFormatError(
        "input is neither a binary quote nor hex nor base64 text", field="input", offset=0
    )
