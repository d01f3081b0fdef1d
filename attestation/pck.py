"""The Intel SGX extensions of a PCK certificate, and the PEM chain a quote carries.

A PCK (Provisioning Certification Key) leaf certificate says which platform signed a quote:
its FMSPC selects the TCB Info to compare against, and its TCB SVNs and PCESVN are the
platform's TCB level. Intel puts these in one private extension (OID 1.2.840.113741.1.13.1,
[PCK] section 1.3.5) whose value is a SEQUENCE of (OID, value) pairs. ``cryptography`` exposes
that value as opaque bytes, so this module decodes it with a small, strict DER reader
(definite minimal lengths only, no trailing bytes, every known OID at most once), and encodes
it back (``encode_pck_extensions``) for the simulated TDX platform.

This module does not check signatures, validity dates or revocation, and does not decide
whether a TCB level is acceptable: that is ``attestation.verify`` against Intel's collateral.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import NamedTuple

from cryptography import x509

from attestation import _spec
from attestation._memo import identity_memo
from attestation.errors import CertificateError

# ASN.1 universal tags used by the extension (X.690 section 8; DER rules in section 10).
_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_ENUMERATED = 0x0A
_TAG_SEQUENCE = 0x30

_TAG_NAMES = {
    _TAG_BOOLEAN: "BOOLEAN",
    _TAG_INTEGER: "INTEGER",
    _TAG_OCTET_STRING: "OCTET STRING",
    _TAG_OID: "OBJECT IDENTIFIER",
    _TAG_ENUMERATED: "ENUMERATED",
    _TAG_SEQUENCE: "SEQUENCE",
}


class SgxType(IntEnum):
    """``SGX Type`` (ENUMERATED, [PCK] 1.3.5): which SGX flavour the platform runs."""

    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True)
class PckConfiguration:
    """The optional ``Configuration`` group (platform CA certificates only).

    Each flag is ``None`` when Intel left it out of the certificate.
    """

    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


@dataclass(frozen=True)
class PckExtensions:
    """The decoded SGX extension of a PCK leaf certificate."""

    ppid: bytes  # 16, the platform's provisioning ID (encrypted form's plaintext)
    tcb_components: tuple[int, ...]  # the sixteen SGX TCB component SVNs, comp01 first
    pce_svn: int
    cpu_svn: bytes  # 16
    pce_id: bytes  # 2
    fmspc: bytes  # 6, Family-Model-Stepping-Platform-CustomSKU: selects the TCB Info
    sgx_type: SgxType
    platform_instance_id: bytes | None = None  # 16, platform CA certificates only
    configuration: PckConfiguration | None = None  # platform CA certificates only


# --- A strict DER reader ------------------------------------------------------------------


class _Tlv(NamedTuple):
    tag: int
    value: bytes
    offset: int  # of the tag byte, within the buffer the TLV was read from


def _read_tlvs(data: bytes, what: str) -> list[_Tlv]:
    """Split ``data`` into consecutive DER TLVs; the last one must end exactly at the end."""
    items: list[_Tlv] = []
    pos = 0
    while pos < len(data):
        start = pos
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            # High tag numbers never occur in this extension.
            raise CertificateError(f"{what}: unsupported multi-byte tag at offset {start}")
        pos += 1
        if pos >= len(data):
            raise CertificateError(f"{what}: truncated length at offset {pos}")
        first = data[pos]
        pos += 1
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise CertificateError(f"{what}: indefinite length at offset {pos - 1} (not DER)")
        else:
            count = first & 0x7F
            if count > 4 or pos + count > len(data):
                raise CertificateError(f"{what}: bad length-of-length at offset {pos - 1}")
            length_bytes = data[pos : pos + count]
            pos += count
            length = int.from_bytes(length_bytes, "big")
            # DER: the shortest form only (X.690 10.1).
            if length_bytes[0] == 0 or length < 0x80:
                raise CertificateError(f"{what}: non-minimal length at offset {start + 1}")
        if pos + length > len(data):
            raise CertificateError(
                f"{what}: element at offset {start} declares {length} bytes, "
                f"{len(data) - pos} remain"
            )
        items.append(_Tlv(tag, data[pos : pos + length], start))
        pos += length
    return items


def _expect(tlv: _Tlv, tag: int, what: str) -> bytes:
    if tlv.tag != tag:
        raise CertificateError(
            f"{what}: expected {_TAG_NAMES[tag]}, got tag 0x{tlv.tag:02x} at offset {tlv.offset}"
        )
    return tlv.value


def _decode_oid(body: bytes, what: str) -> str:
    if not body or body[-1] & 0x80:
        raise CertificateError(f"{what}: malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in body:
        if fresh and byte == 0x80:
            raise CertificateError(f"{what}: non-minimal OBJECT IDENTIFIER arc")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def _decode_unsigned(body: bytes, maximum: int, what: str) -> int:
    """A DER INTEGER/ENUMERATED body as a non-negative int no larger than ``maximum``."""
    if not body:
        raise CertificateError(f"{what}: empty integer")
    if len(body) > 1 and (
        (body[0] == 0x00 and not body[1] & 0x80) or (body[0] == 0xFF and body[1] & 0x80)
    ):
        raise CertificateError(f"{what}: non-minimal integer encoding")
    if body[0] & 0x80:
        raise CertificateError(f"{what}: negative integer")
    value = int.from_bytes(body, "big")
    if value > maximum:
        raise CertificateError(f"{what}: value {value} exceeds {maximum}")
    return value


def _decode_boolean(body: bytes, what: str) -> bool:
    # DER allows exactly 0x00 and 0xFF (X.690 11.1).
    if body == b"\x00":
        return False
    if body == b"\xff":
        return True
    raise CertificateError(f"{what}: BOOLEAN must be one byte 0x00 or 0xFF")


def _octets(body: bytes, size: int, what: str) -> bytes:
    if len(body) != size:
        raise CertificateError(f"{what}: expected {size} bytes, got {len(body)}")
    return body


def _pairs(body: bytes, what: str) -> dict[str, _Tlv]:
    """Decode SEQUENCE OF SEQUENCE { OID, value } into {oid: value TLV}, refusing duplicates."""
    result: dict[str, _Tlv] = {}
    for item in _read_tlvs(body, what):
        inner = _read_tlvs(_expect(item, _TAG_SEQUENCE, what), what)
        if len(inner) != 2:
            raise CertificateError(f"{what}: entry at offset {item.offset} is not (OID, value)")
        oid = _decode_oid(_expect(inner[0], _TAG_OID, what), what)
        if oid in result:
            raise CertificateError(f"{what}: {oid} appears twice")
        result[oid] = inner[1]
    return result


def _refuse_unknown(pairs: dict[str, _Tlv], known: set[str], what: str) -> None:
    # Intel's profile defines every member; an unknown one means we would silently ignore
    # something the issuer asserted, so refuse it.
    unknown = sorted(set(pairs) - known)
    if unknown:
        raise CertificateError(f"{what}: unknown member(s) {', '.join(unknown)}")


def _required(pairs: dict[str, _Tlv], oid: str, what: str) -> _Tlv:
    try:
        return pairs[oid]
    except KeyError:
        raise CertificateError(f"{what}: required member {oid} is missing") from None


_TCB_COMPONENT_OIDS = tuple(f"{_spec.TCB_OID}.{i}" for i in range(1, _spec.TCB_COMPONENT_COUNT + 1))
_CONFIGURATION_FLAGS = (
    ("dynamic_platform", _spec.DYNAMIC_PLATFORM_OID),
    ("cached_keys", _spec.CACHED_KEYS_OID),
    ("smt_enabled", _spec.SMT_ENABLED_OID),
)


def decode_sgx_extension(value: bytes) -> PckExtensions:
    """Decode the DER value of the SGX extension (the bytes inside the extnValue OCTET STRING).

    Raises ``CertificateError`` naming the member that is missing, duplicated, unknown or
    malformed.
    """
    top = _read_tlvs(value, "SGX extension")
    if len(top) != 1:
        raise CertificateError("SGX extension: expected exactly one SEQUENCE")
    pairs = _pairs(_expect(top[0], _TAG_SEQUENCE, "SGX extension"), "SGX extension")
    _refuse_unknown(
        pairs,
        {
            _spec.PPID_OID,
            _spec.TCB_OID,
            _spec.PCEID_OID,
            _spec.FMSPC_OID,
            _spec.SGX_TYPE_OID,
            _spec.PLATFORM_INSTANCE_ID_OID,
            _spec.CONFIGURATION_OID,
        },
        "SGX extension",
    )

    def octets(oid: str, size: int, name: str) -> bytes:
        body = _expect(_required(pairs, oid, name), _TAG_OCTET_STRING, name)
        return _octets(body, size, name)

    tcb = _pairs(_expect(_required(pairs, _spec.TCB_OID, "TCB"), _TAG_SEQUENCE, "TCB"), "TCB")
    _refuse_unknown(tcb, {*_TCB_COMPONENT_OIDS, _spec.PCESVN_OID, _spec.CPUSVN_OID}, "TCB")
    components = tuple(
        _decode_unsigned(
            _expect(_required(tcb, oid, f"TCB comp{i:02d}"), _TAG_INTEGER, f"TCB comp{i:02d}"),
            _spec.TCB_COMPONENT_MAX,
            f"TCB comp{i:02d}",
        )
        for i, oid in enumerate(_TCB_COMPONENT_OIDS, start=1)
    )
    pce_svn = _decode_unsigned(
        _expect(_required(tcb, _spec.PCESVN_OID, "PCESVN"), _TAG_INTEGER, "PCESVN"),
        _spec.PCESVN_MAX,
        "PCESVN",
    )
    cpu_svn = _octets(
        _expect(_required(tcb, _spec.CPUSVN_OID, "CPUSVN"), _TAG_OCTET_STRING, "CPUSVN"),
        _spec.CPUSVN_SIZE,
        "CPUSVN",
    )

    sgx_type_raw = _decode_unsigned(
        _expect(_required(pairs, _spec.SGX_TYPE_OID, "SGX Type"), _TAG_ENUMERATED, "SGX Type"),
        max(SgxType),
        "SGX Type",
    )

    instance_id = None
    if _spec.PLATFORM_INSTANCE_ID_OID in pairs:
        instance_id = octets(
            _spec.PLATFORM_INSTANCE_ID_OID, _spec.PLATFORM_INSTANCE_ID_SIZE, "Platform Instance ID"
        )

    configuration = None
    if _spec.CONFIGURATION_OID in pairs:
        config = _pairs(
            _expect(pairs[_spec.CONFIGURATION_OID], _TAG_SEQUENCE, "Configuration"),
            "Configuration",
        )
        _refuse_unknown(config, {oid for _, oid in _CONFIGURATION_FLAGS}, "Configuration")
        flags = {
            name: _decode_boolean(_expect(config[oid], _TAG_BOOLEAN, name), name)
            for name, oid in _CONFIGURATION_FLAGS
            if oid in config
        }
        configuration = PckConfiguration(**flags)

    return PckExtensions(
        ppid=octets(_spec.PPID_OID, _spec.PPID_SIZE, "PPID"),
        tcb_components=components,
        pce_svn=pce_svn,
        cpu_svn=cpu_svn,
        pce_id=octets(_spec.PCEID_OID, _spec.PCEID_SIZE, "PCE-ID"),
        fmspc=octets(_spec.FMSPC_OID, _spec.FMSPC_SIZE, "FMSPC"),
        sgx_type=SgxType(sgx_type_raw),
        platform_instance_id=instance_id,
        configuration=configuration,
    )


# A platform's PCK leaf is the same certificate object in every quote it makes (the parsed
# chain is cached by its PEM bytes), so its extension is decoded once. Errors are not cached.
@identity_memo(maxsize=64)
def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """The SGX extension of a PCK leaf certificate, decoded.

    Raises ``CertificateError`` if the certificate has no (or a duplicated) SGX extension or
    if its value is malformed.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(_spec.SGX_EXTENSIONS_OID))
    except x509.ExtensionNotFound:
        raise CertificateError("PCK certificate has no SGX extension") from None
    except (x509.DuplicateExtension, x509.UnsupportedGeneralNameType, ValueError) as exc:
        raise CertificateError(f"PCK certificate extensions are malformed: {exc}") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):  # pragma: no cover (library)
        raise CertificateError("SGX extension was not left opaque by the X.509 library")
    return decode_sgx_extension(ext.value.value)


# --- The encoder (for the simulated platform) ---------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _encode_oid(oid: str) -> bytes:
    arcs = [int(a) for a in oid.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _der(_TAG_OID, bytes(out))


def _encode_unsigned(tag: int, value: int) -> bytes:
    # One extra leading zero byte when the top bit is set keeps the value non-negative.
    return _der(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _pair(oid: str, value: bytes) -> bytes:
    return _der(_TAG_SEQUENCE, _encode_oid(oid) + value)


def encode_pck_extensions(ext: PckExtensions) -> bytes:
    """DER of the SGX extension value, members in the order Intel's certificates use.

    Raises ``CertificateError`` if a field is out of range (so a simulated certificate can
    never carry something the decoder would refuse).
    """
    checks: list[tuple[bool, str]] = [
        (len(ext.ppid) == _spec.PPID_SIZE, "PPID"),
        (len(ext.tcb_components) == _spec.TCB_COMPONENT_COUNT, "TCB components"),
        (all(0 <= c <= _spec.TCB_COMPONENT_MAX for c in ext.tcb_components), "TCB components"),
        (0 <= ext.pce_svn <= _spec.PCESVN_MAX, "PCESVN"),
        (len(ext.cpu_svn) == _spec.CPUSVN_SIZE, "CPUSVN"),
        (len(ext.pce_id) == _spec.PCEID_SIZE, "PCE-ID"),
        (len(ext.fmspc) == _spec.FMSPC_SIZE, "FMSPC"),
        (
            ext.platform_instance_id is None
            or len(ext.platform_instance_id) == _spec.PLATFORM_INSTANCE_ID_SIZE,
            "Platform Instance ID",
        ),
    ]
    for ok, name in checks:
        if not ok:
            raise CertificateError(f"cannot encode SGX extension: {name} out of range")

    tcb = b"".join(
        _pair(oid, _encode_unsigned(_TAG_INTEGER, svn))
        for oid, svn in zip(_TCB_COMPONENT_OIDS, ext.tcb_components, strict=True)
    )
    tcb += _pair(_spec.PCESVN_OID, _encode_unsigned(_TAG_INTEGER, ext.pce_svn))
    tcb += _pair(_spec.CPUSVN_OID, _der(_TAG_OCTET_STRING, ext.cpu_svn))
    members = [
        _pair(_spec.PPID_OID, _der(_TAG_OCTET_STRING, ext.ppid)),
        _pair(_spec.TCB_OID, _der(_TAG_SEQUENCE, tcb)),
        _pair(_spec.PCEID_OID, _der(_TAG_OCTET_STRING, ext.pce_id)),
        _pair(_spec.FMSPC_OID, _der(_TAG_OCTET_STRING, ext.fmspc)),
        _pair(_spec.SGX_TYPE_OID, _encode_unsigned(_TAG_ENUMERATED, int(ext.sgx_type))),
    ]
    if ext.platform_instance_id is not None:
        members.append(
            _pair(_spec.PLATFORM_INSTANCE_ID_OID, _der(_TAG_OCTET_STRING, ext.platform_instance_id))
        )
    if ext.configuration is not None:
        flags = b"".join(
            _pair(oid, _der(_TAG_BOOLEAN, b"\xff" if flag else b"\x00"))
            for name, oid in _CONFIGURATION_FLAGS
            if (flag := getattr(ext.configuration, name)) is not None
        )
        members.append(_pair(_spec.CONFIGURATION_OID, _der(_TAG_SEQUENCE, flags)))
    return _der(_TAG_SEQUENCE, b"".join(members))


# --- The PEM chain inside a quote ---------------------------------------------------------

# One PEM certificate block: the armour lines and base64 with whitespace between. The body's
# character class excludes "-", so a greedy match cannot run past the END line.
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*-----END CERTIFICATE-----",
)


def split_pem_chain(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM chain, in order (leaf first as in a quote).

    Refuses anything but certificate blocks separated by whitespace: no other PEM types, no
    stray text. Trailing NUL bytes are allowed because the quoting library NUL-terminates the
    chain in real quotes. Raises ``CertificateError``.
    """
    return list(_split_pem_chain(bytes(pem)))


def clear_pck_caches() -> None:
    """Forget parsed PEM chains and PCK extensions (``attestation.certs.clear_parse_caches``)."""
    _split_pem_chain.cache_clear()
    parse_pck_extensions.cache_clear()


# Quotes from one platform carry the same chain every time; certificates are immutable, so the
# parsed result of identical bytes can be shared.
@lru_cache(maxsize=64)
def _split_pem_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    text = pem.rstrip(b"\x00")
    certs: list[x509.Certificate] = []
    pos = 0
    for match in _PEM_BLOCK.finditer(text):
        if text[pos : match.start()].strip():
            raise CertificateError(f"PEM chain: unexpected data at byte {pos}")
        try:
            cert = x509.load_pem_x509_certificate(match.group(0))
        # InvalidVersion is not a ValueError: a bad version field would otherwise escape.
        except (ValueError, x509.InvalidVersion) as exc:
            raise CertificateError(
                f"PEM chain: certificate {len(certs)} is malformed: {exc}"
            ) from None
        # RFC 5280 4.1.2.2: serials are positive. cryptography still loads others (with a
        # deprecation warning); refuse them here rather than wait for the library to.
        if cert.serial_number <= 0:
            raise CertificateError(f"PEM chain: certificate {len(certs)} has a non-positive serial")
        certs.append(cert)
        pos = match.end()
    if text[pos:].strip():
        raise CertificateError(f"PEM chain: unexpected data at byte {pos}")
    if not certs:
        raise CertificateError("PEM chain holds no certificate")
    return tuple(certs)
