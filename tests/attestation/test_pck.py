"""The PCK certificate SGX extension decoder/encoder and the PEM chain splitter.

Real PCK certificates from the vectors are decoded and compared with dcap-qvl's independent
decoding; re-encoding them must give Intel's bytes back exactly. Malformed extensions are
built by editing the real encoding one element at a time, so each negative test differs from
a valid certificate in exactly the way its name says.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation import _spec
from attestation.errors import CertificateError
from attestation.pck import (
    PckConfiguration,
    PckExtensions,
    SgxType,
    decode_sgx_extension,
    encode_pck_extensions,
    parse_pck_extensions,
    split_pem_chain,
)
from attestation.quote_parser import parse_quote
from tests.vectors import TDX_CASES, intel_root_pem, tdx_case


def _chain(name: str) -> bytes:
    return parse_quote(tdx_case(name).quote).signature_data.certification.pck_chain_pem


def _leaf(name: str) -> x509.Certificate:
    return split_pem_chain(_chain(name))[0]


def _real_extension_der(name: str = "v4-uptodate") -> bytes:
    ext = _leaf(name).extensions.get_extension_for_oid(
        x509.ObjectIdentifier(_spec.SGX_EXTENSIONS_OID)
    )
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    return ext.value.value


# --- A tiny independent DER toolkit for building malformed variants ---------------------------


@dataclass
class Node:
    tag: int
    body: bytes
    children: list[Node] | None = None  # set for SEQUENCEs

    def encode(self) -> bytes:
        body = self.body if self.children is None else b"".join(c.encode() for c in self.children)
        return _tlv(self.tag, body)


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _parse(data: bytes) -> list[Node]:
    nodes = []
    pos = 0
    while pos < len(data):
        tag, first = data[pos], data[pos + 1]
        pos += 2
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        else:
            length = first
        body = data[pos : pos + length]
        pos += length
        nodes.append(Node(tag, body, _parse(body) if tag == 0x30 else None))
    return nodes


def _oid_body(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def _root() -> Node:
    (root,) = _parse(_real_extension_der())
    return root


def _member(root: Node, oid: str) -> Node:
    """The (OID, value) SEQUENCE for ``oid`` among the children of ``root``."""
    assert root.children is not None
    for child in root.children:
        assert child.children is not None
        if child.children[0].body == _oid_body(oid):
            return child
    raise AssertionError(oid)


def _value(root: Node, oid: str) -> Node:
    pair = _member(root, oid)
    assert pair.children is not None
    return pair.children[1]


def _tcb(root: Node) -> Node:
    return _value(root, _spec.TCB_OID)


def _decode_edited(root: Node) -> PckExtensions:
    return decode_sgx_extension(root.encode())


# --- Real certificates -------------------------------------------------------------------------


@pytest.mark.parametrize("name", TDX_CASES)
def test_real_pck_extensions_match_dcap_qvl(name: str) -> None:
    ours = parse_pck_extensions(_leaf(name))
    theirs = dcap_qvl.parse_quote(tdx_case(name).quote).pck_extension()
    assert ours.ppid == bytes(theirs.ppid)
    assert ours.cpu_svn == bytes(theirs.cpu_svn)
    assert ours.pce_svn == theirs.pce_svn
    assert ours.pce_id == bytes(theirs.pce_id)
    assert ours.fmspc == bytes(theirs.fmspc)
    assert int(ours.sgx_type) == theirs.sgx_type
    assert ours.platform_instance_id == (
        None if theirs.platform_instance_id is None else bytes(theirs.platform_instance_id)
    )
    assert ours.fmspc.hex().upper() == tdx_case(name).expected["fmspc"]


@pytest.mark.parametrize("name", TDX_CASES)
def test_real_tcb_components_equal_cpusvn_bytes(name: str) -> None:
    # Intel issues the sixteen component SVNs as the bytes of CPUSVN, in order.
    ext = parse_pck_extensions(_leaf(name))
    assert len(ext.tcb_components) == 16
    assert bytes(ext.tcb_components) == ext.cpu_svn


@pytest.mark.parametrize("name", TDX_CASES)
def test_real_platform_certificates_carry_configuration_flags(name: str) -> None:
    ext = parse_pck_extensions(_leaf(name))
    assert ext.sgx_type is SgxType.SCALABLE
    assert ext.configuration is not None
    flags = (
        ext.configuration.dynamic_platform,
        ext.configuration.cached_keys,
        ext.configuration.smt_enabled,
    )
    assert all(isinstance(f, bool) for f in flags)


@pytest.mark.parametrize("name", TDX_CASES)
def test_encoding_a_decoded_real_extension_gives_intels_bytes_back(name: str) -> None:
    der = _real_extension_der(name)
    assert encode_pck_extensions(decode_sgx_extension(der)) == der


def test_encoder_round_trips_without_optional_members() -> None:
    ext = parse_pck_extensions(_leaf("v4-uptodate"))
    bare = replace(ext, platform_instance_id=None, configuration=None, sgx_type=SgxType.STANDARD)
    assert decode_sgx_extension(encode_pck_extensions(bare)) == bare
    partial = replace(ext, configuration=PckConfiguration(cached_keys=False))
    assert decode_sgx_extension(encode_pck_extensions(partial)) == partial


def test_encoder_handles_svns_with_the_top_bit_set() -> None:
    ext = parse_pck_extensions(_leaf("v4-uptodate"))
    high = replace(ext, tcb_components=(0xFF, 0x80, *ext.tcb_components[2:]), pce_svn=0xFFFF)
    assert decode_sgx_extension(encode_pck_extensions(high)) == high


@pytest.mark.parametrize(
    "change",
    [
        {"ppid": bytes(15)},
        {"cpu_svn": bytes(17)},
        {"pce_id": bytes(3)},
        {"fmspc": bytes(5)},
        {"tcb_components": (0,) * 15},
        {"tcb_components": (256,) + (0,) * 15},
        {"pce_svn": 0x10000},
        {"pce_svn": -1},
        {"platform_instance_id": bytes(4)},
    ],
)
def test_encoder_refuses_out_of_range_fields(change: dict[str, object]) -> None:
    ext = parse_pck_extensions(_leaf("v4-uptodate"))
    with pytest.raises(CertificateError):
        encode_pck_extensions(replace(ext, **change))  # type: ignore[arg-type]


def test_certificate_without_sgx_extension_is_rejected() -> None:
    root = x509.load_pem_x509_certificate(intel_root_pem())
    with pytest.raises(CertificateError, match="no SGX extension"):
        parse_pck_extensions(root)


# --- Malformed extension values ------------------------------------------------------------


def test_missing_fmspc_is_rejected() -> None:
    root = _root()
    assert root.children is not None
    root.children.remove(_member(root, _spec.FMSPC_OID))
    with pytest.raises(CertificateError, match=r"1\.2\.840\.113741\.1\.13\.1\.4 is missing"):
        _decode_edited(root)


@pytest.mark.parametrize(
    "oid", [_spec.PPID_OID, _spec.TCB_OID, _spec.PCEID_OID, _spec.SGX_TYPE_OID]
)
def test_missing_required_member_is_rejected(oid: str) -> None:
    root = _root()
    assert root.children is not None
    root.children.remove(_member(root, oid))
    with pytest.raises(CertificateError, match="missing"):
        _decode_edited(root)


@pytest.mark.parametrize("index", [1, 16, 17, 18])
def test_missing_tcb_member_is_rejected(index: int) -> None:
    root = _root()
    tcb = _tcb(root)
    assert tcb.children is not None
    tcb.children.remove(_member(tcb, f"{_spec.TCB_OID}.{index}"))
    with pytest.raises(CertificateError, match="missing"):
        _decode_edited(root)


def test_duplicated_fmspc_is_rejected() -> None:
    # A second FMSPC could select a different TCB Info than the one a check looked at.
    root = _root()
    assert root.children is not None
    root.children.append(_member(root, _spec.FMSPC_OID))
    with pytest.raises(CertificateError, match="appears twice"):
        _decode_edited(root)


def test_duplicated_tcb_component_is_rejected() -> None:
    root = _root()
    tcb = _tcb(root)
    assert tcb.children is not None
    tcb.children.append(_member(tcb, f"{_spec.TCB_OID}.1"))
    with pytest.raises(CertificateError, match="appears twice"):
        _decode_edited(root)


def test_unknown_member_is_rejected() -> None:
    root = _root()
    assert root.children is not None
    unknown = Node(
        0x30,
        b"",
        [Node(0x06, _oid_body(_spec.SGX_EXTENSIONS_OID + ".99"), None), Node(0x04, b"\x00", None)],
    )
    root.children.append(unknown)
    with pytest.raises(CertificateError, match="unknown member"):
        _decode_edited(root)


def _fmspc_oid_node(root: Node) -> Node:
    pair = _member(root, _spec.FMSPC_OID)
    assert pair.children is not None
    return pair.children[0]


def test_non_minimal_oid_arc_is_rejected() -> None:
    # 0x80 in front of an arc adds nothing to its value: decoded leniently, a second encoding
    # of the FMSPC OID would be read as the FMSPC. DER has exactly one encoding.
    root = _root()
    node = _fmspc_oid_node(root)
    node.body = node.body[:-1] + b"\x80" + node.body[-1:]
    with pytest.raises(CertificateError, match="non-minimal OBJECT IDENTIFIER arc"):
        _decode_edited(root)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda body: body + b"\x81", id="last-arc-unterminated"),
        pytest.param(lambda body: b"", id="empty"),
    ],
)
def test_malformed_oid_is_rejected(edit: Callable[[bytes], bytes]) -> None:
    # An unterminated trailing arc would otherwise be dropped (leaving the FMSPC OID), and an
    # empty one would have no arcs at all.
    root = _root()
    node = _fmspc_oid_node(root)
    node.body = edit(node.body)
    with pytest.raises(CertificateError, match="malformed OBJECT IDENTIFIER"):
        _decode_edited(root)


def test_fmspc_of_wrong_size_is_rejected() -> None:
    root = _root()
    _value(root, _spec.FMSPC_OID).body = bytes(7)
    with pytest.raises(CertificateError, match="FMSPC"):
        _decode_edited(root)


def test_fmspc_with_wrong_tag_is_rejected() -> None:
    root = _root()
    _value(root, _spec.FMSPC_OID).tag = 0x02
    with pytest.raises(CertificateError, match="expected OCTET STRING"):
        _decode_edited(root)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\x01\x00", "exceeds"),  # 256
        (b"\x80", "negative"),
        (b"\x00\x05", "non-minimal"),
        (b"", "empty"),
    ],
)
def test_malformed_tcb_component_is_rejected(body: bytes, why: str) -> None:
    root = _root()
    _value(_tcb(root), f"{_spec.TCB_OID}.3").body = body
    with pytest.raises(CertificateError, match=why):
        _decode_edited(root)


def test_pcesvn_above_u16_is_rejected() -> None:
    root = _root()
    _value(_tcb(root), _spec.PCESVN_OID).body = b"\x01\x00\x00"
    with pytest.raises(CertificateError, match="PCESVN"):
        _decode_edited(root)


def test_unknown_sgx_type_is_rejected() -> None:
    root = _root()
    _value(root, _spec.SGX_TYPE_OID).body = b"\x03"
    with pytest.raises(CertificateError, match="SGX Type"):
        _decode_edited(root)


def test_non_der_boolean_is_rejected() -> None:
    root = _root()
    config = _value(root, _spec.CONFIGURATION_OID)
    _value(config, _spec.SMT_ENABLED_OID).body = b"\x01"
    with pytest.raises(CertificateError, match="BOOLEAN"):
        _decode_edited(root)


def test_trailing_bytes_after_the_extension_are_rejected() -> None:
    with pytest.raises(CertificateError, match="exactly one SEQUENCE"):
        decode_sgx_extension(_real_extension_der() + b"\x05\x00")


def test_truncation_anywhere_in_the_extension_is_rejected() -> None:
    der = _real_extension_der()
    for cut in range(len(der)):
        with pytest.raises(CertificateError):
            decode_sgx_extension(der[:cut])


def test_indefinite_length_is_rejected() -> None:
    der = _real_extension_der()
    assert der[:2] == b"\x30\x82"
    with pytest.raises(CertificateError, match="indefinite"):
        decode_sgx_extension(b"\x30\x80" + der[4:] + b"\x00\x00")


def test_non_minimal_length_is_rejected() -> None:
    # PPID's pair (30 1e ...) rewritten with a long-form length (30 81 1e ...).
    der = _real_extension_der()
    inner = der[4:]
    assert inner[:2] == b"\x30\x1e"
    padded = b"\x30\x81\x1e" + inner[2:]
    with pytest.raises(CertificateError, match="non-minimal length"):
        decode_sgx_extension(_tlv(0x30, padded))


def test_high_tag_number_is_rejected() -> None:
    with pytest.raises(CertificateError, match="multi-byte tag"):
        decode_sgx_extension(b"\x1f\x81\x00\x00")


# --- The PEM chain splitter -----------------------------------------------------------------


@pytest.mark.parametrize("name", TDX_CASES)
def test_real_chain_splits_into_leaf_intermediate_root(name: str) -> None:
    certs = split_pem_chain(_chain(name))
    names = [c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in certs]
    assert names == [
        "Intel SGX PCK Certificate",
        "Intel SGX PCK Platform CA",
        "Intel SGX Root CA",
    ]
    assert certs[2] == x509.load_pem_x509_certificate(intel_root_pem())


def test_chain_with_nul_terminator_is_accepted_and_without_too() -> None:
    pem = _chain("v4-uptodate")
    assert pem.endswith(b"\x00")
    assert len(split_pem_chain(pem.rstrip(b"\x00"))) == 3


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"\x00\x00",
        b"hello",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n",
    ],
)
def test_malformed_chain_is_rejected(pem: bytes) -> None:
    with pytest.raises(CertificateError):
        split_pem_chain(pem)


def test_nul_inside_chain_is_rejected() -> None:
    pem = _chain("v4-uptodate").rstrip(b"\x00")
    cut = pem.index(b"-----BEGIN", 10)
    with pytest.raises(CertificateError, match="unexpected data"):
        split_pem_chain(pem[:cut] + b"\x00" + pem[cut:])


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


def test_certificate_with_unknown_x509_version_is_a_certificate_error() -> None:
    # cryptography raises InvalidVersion (not a ValueError) for this; it must not escape.
    der = _leaf("v4-uptodate").public_bytes(serialization.Encoding.DER)
    version_v3 = b"\xa0\x03\x02\x01\x02"
    assert der.count(version_v3) == 1
    bad = der.replace(version_v3, b"\xa0\x03\x02\x01\x06")
    with pytest.raises(CertificateError, match="certificate 0 is malformed"):
        split_pem_chain(_pem(bad))


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_certificate_with_non_positive_serial_is_rejected() -> None:
    der = _leaf("v4-uptodate").public_bytes(serialization.Encoding.DER)
    # tbsCertificate: SEQUENCE hdr (4) SEQUENCE hdr (4), version [0] (5), then the serial.
    serial_at = 4 + 4 + 5
    assert der[serial_at] == 0x02
    length = der[serial_at + 1]
    bad = der[: serial_at + 2] + b"\x80" + der[serial_at + 3 : serial_at + 2 + length]
    bad += der[serial_at + 2 + length :]
    assert len(bad) == len(der)
    with pytest.raises(CertificateError, match="non-positive serial"):
        split_pem_chain(_pem(bad))
