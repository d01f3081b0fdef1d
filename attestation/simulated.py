"""A simulated Intel TDX platform, for development and tests without TDX hardware.

``SimulatedTdx`` generates everything a real TDX quote depends on, shaped like Intel's: a root
CA, a PCK Platform CA, a PCK leaf certificate carrying the SGX extensions, a TCB Signing
certificate, the root and PCK CRLs, a Quoting Enclave (attestation key and QE report signed by
the PCK key) and Intel-shaped collateral (TDX TCB Info v3 and TD_QE identity v2, signed by the
TCB Signing key). Its quotes are byte-compatible with quote v4 from real hardware, so
``attestation.verify`` runs exactly the code it runs for a real quote, and they verify only when
the simulated root is passed as trusted: the root is not Intel's, and its name says so.

``SimulatedTd`` is one TD on such a platform: measurement registers that the TD can extend at
runtime (RTMR2 and RTMR3; RTMR0/1 are boot's) and quotes that reflect their current values.

With a seed, generation is deterministic: keys come from HKDF(seed, label), serials and
identifiers likewise, and every signature is deterministic ECDSA (RFC 6979), so the same seed and
parameters give the same certificates, collateral and quotes byte for byte.

What this module deliberately is not: a security boundary. It holds every private key of the
simulated hierarchy in process memory, and ``save`` writes them to disk unencrypted. It is for
development, CI and demos; a verifier must never trust its root unless a developer passed it
explicitly, and the default trusted root (Intel's) rejects all of its quotes.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import secrets
import struct
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pydantic
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from attestation import _spec, eventlog
from attestation.collateral import (
    QE_IDENTITY_ID_TD_QE,
    QE_IDENTITY_VERSION,
    TCB_INFO_ID_TDX,
    TCB_INFO_VERSION,
)
from attestation.errors import AttestationError, CertificateError
from attestation.pck import PckConfiguration, PckExtensions, SgxType, encode_pck_extensions
from attestation.quote import AttestationKeyType, CertificationDataType, TeeType
from attestation.report import TcbStatus
from attestation.tcb import (
    TEE_TCB_SVN_MODULE_SVN,
    TEE_TCB_SVN_MODULE_VERSION,
    module_identity_id,
)
from attestation.verify import INTEL_QE_VENDOR_ID, TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE

__all__ = [
    "DEFAULT_ADVISORY_IDS",
    "DEFAULT_FMSPC",
    "DEFAULT_TD_ATTRIBUTES",
    "EXTENDABLE_RTMRS",
    "INTEL_QE_VENDOR_ID",
    "TD_ATTR_DEBUG",
    "TD_ATTR_SEPT_VE_DISABLE",
    "Measurements",
    "PlatformConfig",
    "SimulatedTd",
    "SimulatedTdx",
    "SimulationError",
]

# --- Constants from Intel's specifications ---------------------------------------------------
# INTEL_QE_VENDOR_ID and the TD attribute bits are the verifier's constants (one place for
# each spec value); the rest are what only a quote's producer needs.
QUOTE_VERSION_V4 = 4
# Real TDX quotes leave the header's QE SVN and PCE SVN fields zero (the QE report and the PCK
# certificate carry the SVNs that are verified); we do the same to stay byte-compatible.
_HEADER_QE_SVN = 0
_HEADER_PCE_SVN = 0
# [QGL] "QE Report Certification Data": the QE's ISVPRODID when it serves TDs (TD_QE).
TD_QE_ISV_PROD_ID = 2
DEFAULT_TD_ATTRIBUTES = TD_ATTR_SEPT_VE_DISABLE.to_bytes(8, "little")  # DEBUG off

RTMR_SIZE = 48  # SHA-384
REPORT_DATA_SIZE = 64
# The registers a simulated TD may extend at runtime. By convention RTMR0 holds the firmware's
# (TDVF) configuration measurements, RTMR1 the boot loader and kernel, RTMR2 the OS (kernel
# command line, initrd), RTMR3 runtime applications. Linux 6.16+ lets a privileged guest write
# any of the four (/sys/devices/virtual/misc/tdx_guest/measurements/rtmrN:sha384), but nothing
# after boot should touch RTMR0/1, so the simulator refuses that: their values are fixed through
# ``Measurements`` when the TD is created, as boot would set them.
EXTENDABLE_RTMRS = (2, 3)

# --- Simulation choices (not from a specification) -------------------------------------------
_ORGANIZATION = "Shroud Simulated TDX (not Intel)"
_ROOT_CN = "Shroud Simulated SGX Root CA"
_PLATFORM_CA_CN = "Shroud Simulated SGX PCK Platform CA"
_PCK_CN = "Shroud Simulated SGX PCK Certificate"
_TCB_SIGNING_CN = "Shroud Simulated SGX TCB Signing"
# Intel's certificates name CRL distribution points; ours point at a reserved domain that can
# never resolve (RFC 2606), so nothing tries to fetch them.
_ROOT_CRL_URL = "https://shroud-simulated.invalid/sgx/root-ca.der"
_PCK_CRL_URL = "https://shroud-simulated.invalid/sgx/pckcrl?ca=platform&encoding=der"

_HKDF_SALT = b"shroud/simulated-tdx/v1"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_DAY = 86_400
_BACKDATE = 3_600  # certificates, CRLs and collateral start an hour before `now`
_ROOT_LIFETIME = 30 * 365 * _DAY
_CA_LIFETIME = 15 * 365 * _DAY
_LEAF_LIFETIME = 7 * 365 * _DAY
_ROOT_CRL_LIFETIME = 365 * _DAY
_DEFAULT_COLLATERAL_LIFETIME = 30 * _DAY  # Intel's TCB Info, QE Identity and PCK CRL: 30 days

_PERSIST_FORMAT = "shroud-simulated-tdx/1"
_PERSIST_FILE = "platform.json"
_ROOT_FILE = "root.pem"


class SimulationError(AttestationError):
    """A simulated platform or TD was asked for something invalid, or a saved one is corrupt."""


def _label_digest(label: str, size: int) -> bytes:
    """A fixed, recognisable stand-in for a measurement (nobody should mistake it for real)."""
    return hashlib.sha384(b"shroud simulated " + label.encode()).digest()[:size]


# --- The TD's measurements ------------------------------------------------------------------


@dataclass(frozen=True)
class Measurements:
    """The TD-chosen fields of a TD report (everything but the TDX module's and REPORTDATA).

    Defaults describe a sane production TD: DEBUG off, SEPT_VE_DISABLE on, a recognisable
    placeholder MRTD, zero configuration IDs and zero runtime registers.
    """

    mr_td: bytes = field(default_factory=lambda: _label_digest("mr_td", 48))
    mr_config_id: bytes = bytes(48)
    mr_owner: bytes = bytes(48)
    mr_owner_config: bytes = bytes(48)
    rtmr0: bytes = bytes(48)
    rtmr1: bytes = bytes(48)
    rtmr2: bytes = bytes(48)
    rtmr3: bytes = bytes(48)
    td_attributes: bytes = DEFAULT_TD_ATTRIBUTES  # 8 bytes, little-endian bit field
    xfam: bytes = bytes.fromhex("e702060000000000")  # as the real v4 test vector's TD reports

    _SIZES: ClassVar[dict[str, int]] = {"td_attributes": 8, "xfam": 8}

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            size = self._SIZES.get(f.name, 48)
            if not isinstance(value, bytes) or len(value) != size:
                raise SimulationError(f"Measurements.{f.name} must be {size} bytes")

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    def with_rtmr(self, index: int, value: bytes) -> Measurements:
        """A copy with RTMR ``index`` (0-3) replaced by ``value``."""
        if index not in range(4):
            raise SimulationError(f"RTMR index must be 0-3, not {index}")
        return replace(self, **{f"rtmr{index}": value})


# --- The platform's configuration ------------------------------------------------------------

_Bytes16 = Annotated[bytes, pydantic.Field(min_length=16, max_length=16)]
_Bytes32 = Annotated[bytes, pydantic.Field(min_length=32, max_length=32)]
_Bytes48 = Annotated[bytes, pydantic.Field(min_length=48, max_length=48)]
_Bytes8 = Annotated[bytes, pydantic.Field(min_length=8, max_length=8)]


class PlatformConfig(pydantic.BaseModel):
    """Everything that identifies a simulated platform, apart from its keys and certificates.

    The SVNs here decide which TCB level the platform matches: the collateral is generated from
    the same values, so by default the platform is exactly at its reported ``tcb_status``.
    """

    model_config = pydantic.ConfigDict(
        frozen=True, extra="forbid", strict=True, ser_json_bytes="hex", val_json_bytes="hex"
    )

    now: Annotated[int, pydantic.Field(ge=0)]  # UNIX seconds the hierarchy was generated around
    fmspc: Annotated[bytes, pydantic.Field(min_length=6, max_length=6)]
    pce_id: Annotated[bytes, pydantic.Field(min_length=2, max_length=2)]
    pce_svn: Annotated[int, pydantic.Field(ge=0, le=_spec.PCESVN_MAX)]
    cpu_svn: _Bytes16  # the 16 SGX TCB component SVNs, one byte each
    ppid: _Bytes16
    platform_instance_id: _Bytes16
    qe_id: _Bytes16  # the QE's platform identifier, the first 16 bytes of header user_data
    tee_tcb_svn: _Bytes16
    mr_seam: _Bytes48
    mr_signer_seam: _Bytes48
    seam_attributes: _Bytes8
    qe_svn: Annotated[int, pydantic.Field(ge=0, le=0xFFFF)]
    qe_mr_signer: _Bytes32
    qe_mr_enclave: _Bytes32
    qe_attributes: _Bytes16
    qe_misc_select: Annotated[int, pydantic.Field(ge=0, le=0xFFFFFFFF)]
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]
    tcb_evaluation_data_number: Annotated[int, pydantic.Field(ge=0)]


# --- Key and identifier derivation -------------------------------------------------------------


def _okm(seed: bytes, label: str, size: int) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=size, salt=_HKDF_SALT, info=label.encode())
    return hkdf.derive(seed)


@functools.lru_cache(maxsize=512)
def _derived_key(seed: bytes, label: str) -> ec.EllipticCurvePrivateKey:
    # 48 bytes reduced mod (n - 1) keeps the bias below 2^-128 and the scalar non-zero.
    scalar = int.from_bytes(_okm(seed, "key/" + label, 48), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


class _Source:
    """Where a platform's keys and identifiers come from: a seed, or the operating system."""

    def __init__(self, seed: bytes | None) -> None:
        self._seed = seed

    def key(self, label: str) -> ec.EllipticCurvePrivateKey:
        if self._seed is None:
            return ec.generate_private_key(ec.SECP256R1())
        return _derived_key(self._seed, label)

    def identifier(self, label: str, size: int) -> bytes:
        if self._seed is None:
            return secrets.token_bytes(size)
        return _okm(self._seed, "id/" + label, size)

    def serial(self, label: str) -> int:
        # X.509 serials are positive and at most 20 octets; 19 bytes with the top bit clear.
        raw = bytearray(self.identifier("serial/" + label, 19))
        raw[0] &= 0x7F
        return int.from_bytes(raw, "big") or 1


# --- Encoding helpers ---------------------------------------------------------------------------


def _sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 over ``data`` as raw r || s, the encoding quotes and collateral use."""
    der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _public_xy(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]  # drop the 0x04 prefix: quotes carry raw x || y


def _utc(seconds: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)


def _iso(seconds: int) -> str:
    """Intel's collateral date format: ISO 8601, UTC, whole seconds, 'Z'."""
    return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --- The hierarchy -------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
        ]
    )


def _certificate(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial: int,
    not_before: int,
    lifetime: int,
    ca_path_length: int | None,
    is_ca: bool,
    crl_url: str,
    extra: tuple[x509.ExtensionType, ...] = (),
) -> x509.Certificate:
    """An X.509 v3 certificate with the extensions Intel's SGX certificates carry."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    issuer_ski = (
        ski
        if issuer is None
        else issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    key_usage = x509.KeyUsage(
        digital_signature=not is_ca,
        content_commitment=not is_ca,  # Intel's leaves assert nonRepudiation
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=is_ca,
        crl_sign=is_ca,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_before + lifetime))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True)
    )
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)


def _crl(
    *,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    this_update: int,
    lifetime: int,
    revoked_serials: tuple[int, ...],
) -> x509.CertificateRevocationList:
    """A v2 CRL shaped like Intel's: CRL number 1, AKI, keyCompromise entries."""
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(_utc(this_update))
        .next_update(_utc(this_update + lifetime))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(_utc(this_update))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    return builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)


# --- The platform ----------------------------------------------------------------------------

# Defaults mirror a real TDX 1.0 platform (Sapphire Rapids, as in the v4 test vector) so the
# simulated TCB levels look like Intel's; FMSPC spells "SHROUD" so no real family matches it.
DEFAULT_FMSPC = b"SHROUD"
DEFAULT_CPU_SVN = bytes.fromhex("03030202040100050000000000000000")
DEFAULT_PCE_SVN = 11
DEFAULT_TEE_TCB_SVN = bytes.fromhex("06010300000000000000000000000000")  # module 1.x, SVN 6
DEFAULT_QE_SVN = 4
DEFAULT_ADVISORY_IDS = ("INTEL-SA-00960", "INTEL-SA-00982")  # used when not UpToDate
# The QE's ATTRIBUTES as real TD QEs report them (flags INIT, MODE64BIT, PROVISIONKEY; XFRM
# 0xE7), and the identity's expected value and mask as Intel publishes them: the mask ignores
# MODE64BIT (bit 2) and the whole XFRM half, so the masked flags must equal INIT|PROVISIONKEY.
_QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
_QE_IDENTITY_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
_QE_IDENTITY_ATTRIBUTES_MASK = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
_QE_AUTH_DATA = bytes(range(32))  # the QE auth data real quotes carry (the v4 vector's too)
_ALL_ONES_8 = b"\xff" * 8

_KEY_NAMES = ("root", "platform_ca", "pck", "tcb_signing", "attestation")
_CERT_NAMES = ("root", "platform_ca", "pck", "tcb_signing")


@dataclass(frozen=True, repr=False)
class _Keys:
    root: ec.EllipticCurvePrivateKey
    platform_ca: ec.EllipticCurvePrivateKey
    pck: ec.EllipticCurvePrivateKey
    tcb_signing: ec.EllipticCurvePrivateKey
    attestation: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return "_Keys(<private keys not shown>)"


@dataclass(frozen=True)
class _Certificates:
    root: x509.Certificate
    platform_ca: x509.Certificate
    pck: x509.Certificate
    tcb_signing: x509.Certificate


def _pck_extensions(config: PlatformConfig) -> PckExtensions:
    return PckExtensions(
        ppid=config.ppid,
        tcb_components=tuple(config.cpu_svn),
        pce_svn=config.pce_svn,
        cpu_svn=config.cpu_svn,
        pce_id=config.pce_id,
        fmspc=config.fmspc,
        sgx_type=SgxType.SCALABLE,  # what Intel's PCK Platform CA issues to TDX platforms
        platform_instance_id=config.platform_instance_id,
        configuration=PckConfiguration(dynamic_platform=True, cached_keys=True, smt_enabled=True),
    )


def _build_hierarchy(source: _Source, config: PlatformConfig) -> tuple[_Keys, _Certificates]:
    keys = _Keys(**{name: source.key(name) for name in _KEY_NAMES})
    start = config.now - _BACKDATE
    root = _certificate(
        subject=_ROOT_CN,
        key=keys.root,
        issuer=None,
        issuer_key=keys.root,
        serial=source.serial("root"),
        not_before=start,
        lifetime=_ROOT_LIFETIME,
        is_ca=True,
        ca_path_length=1,
        crl_url=_ROOT_CRL_URL,
    )
    platform_ca = _certificate(
        subject=_PLATFORM_CA_CN,
        key=keys.platform_ca,
        issuer=root,
        issuer_key=keys.root,
        serial=source.serial("platform_ca"),
        not_before=start,
        lifetime=_CA_LIFETIME,
        is_ca=True,
        ca_path_length=0,
        crl_url=_ROOT_CRL_URL,
    )
    try:
        sgx_extension = encode_pck_extensions(_pck_extensions(config))
    except CertificateError as exc:
        raise SimulationError(f"cannot build the PCK certificate: {exc}") from None
    pck = _certificate(
        subject=_PCK_CN,
        key=keys.pck,
        issuer=platform_ca,
        issuer_key=keys.platform_ca,
        serial=source.serial("pck"),
        not_before=start,
        lifetime=_LEAF_LIFETIME,
        is_ca=False,
        ca_path_length=None,
        crl_url=_PCK_CRL_URL,
        extra=(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(_spec.SGX_EXTENSIONS_OID), sgx_extension
            ),
        ),
    )
    tcb_signing = _certificate(
        subject=_TCB_SIGNING_CN,
        key=keys.tcb_signing,
        issuer=root,
        issuer_key=keys.root,
        serial=source.serial("tcb_signing"),
        not_before=start,
        lifetime=_LEAF_LIFETIME,
        is_ca=False,
        ca_path_length=None,
        crl_url=_ROOT_CRL_URL,
    )
    return keys, _Certificates(root, platform_ca, pck, tcb_signing)


@functools.lru_cache(maxsize=64)
def _seeded_hierarchy(seed: bytes, config: PlatformConfig) -> tuple[_Keys, _Certificates]:
    # Tests generate the same seeded platform many times; everything here is immutable.
    return _build_hierarchy(_Source(seed), config)


def _qe_report(config: PlatformConfig, attestation_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The QE's 384-byte SGX report, binding the attestation key in its REPORTDATA."""
    report = bytearray(_spec.QE_REPORT_SIZE)

    def put(where: tuple[int, int], value: bytes) -> None:
        offset, size = where
        report[offset : offset + size] = value.ljust(size, b"\x00")

    # [QGL] "QE Report Certification Data": REPORTDATA = SHA-256(key || auth data) || 0^32.
    binding = hashlib.sha256(_public_xy(attestation_key) + _QE_AUTH_DATA).digest()
    put(_spec.ENCLAVE_REPORT_CPU_SVN, config.cpu_svn)
    put(_spec.ENCLAVE_REPORT_MISC_SELECT, config.qe_misc_select.to_bytes(4, "little"))
    put(_spec.ENCLAVE_REPORT_ATTRIBUTES, config.qe_attributes)
    put(_spec.ENCLAVE_REPORT_MR_ENCLAVE, config.qe_mr_enclave)
    put(_spec.ENCLAVE_REPORT_MR_SIGNER, config.qe_mr_signer)
    put(_spec.ENCLAVE_REPORT_ISV_PROD_ID, TD_QE_ISV_PROD_ID.to_bytes(2, "little"))
    put(_spec.ENCLAVE_REPORT_ISV_SVN, config.qe_svn.to_bytes(2, "little"))
    put(_spec.ENCLAVE_REPORT_REPORT_DATA, binding)
    return bytes(report)


def _cert_data(cert_type: int, body: bytes) -> bytes:
    return struct.pack("<HI", cert_type, len(body)) + body


class SimulatedTdx:
    """A simulated TDX platform: Intel-shaped CA hierarchy, Quoting Enclave and collateral.

    Create one with ``generate`` (or ``load``), then make quotes with ``quote`` (or through a
    ``SimulatedTd`` from ``td``) and the matching collateral with ``collateral``. Pass
    ``root_certificate`` to the verifier as the trusted root; nothing else makes its quotes
    verify. The object is immutable and safe to share between threads.

    This is a development tool: it holds the hierarchy's private keys (see the module docstring).
    """

    def __init__(self, config: PlatformConfig, keys: _Keys, certificates: _Certificates) -> None:
        """Internal: use ``generate``, ``load`` or ``from_bytes``."""
        self._config = config
        self._keys = keys
        self._certs = certificates
        self._attestation_key_xy = _public_xy(keys.attestation)
        qe_report = _qe_report(config, keys.attestation)
        chain = b"".join(_pem(c) for c in (certificates.pck, certificates.platform_ca))
        # Real quotes NUL-terminate the PEM chain; byte compatibility includes that.
        chain += _pem(certificates.root) + b"\x00"
        qe_certification = (
            qe_report
            + _sign_raw(keys.pck, qe_report)
            + struct.pack("<H", len(_QE_AUTH_DATA))
            + _QE_AUTH_DATA
            + _cert_data(CertificationDataType.PCK_CERT_CHAIN, chain)
        )
        self._certification = _cert_data(
            CertificationDataType.QE_REPORT_CERTIFICATION_DATA, qe_certification
        )
        self._header = struct.pack(
            "<HHIHH16s20s",
            QUOTE_VERSION_V4,
            AttestationKeyType.ECDSA_P256,
            TeeType.TDX,
            _HEADER_QE_SVN,
            _HEADER_PCE_SVN,
            INTEL_QE_VENDOR_ID,
            config.qe_id + bytes(4),  # user data: QE id, then 4 reserved zero bytes
        )

    def __repr__(self) -> str:
        return (
            f"SimulatedTdx(fmspc={self._config.fmspc.hex()}, "
            f"tcb_status={self._config.tcb_status.value}, root={_ROOT_CN!r})"
        )

    @classmethod
    def generate(
        cls,
        seed: bytes | None = None,
        *,
        now: int,
        fmspc: bytes = DEFAULT_FMSPC,
        tcb_status: TcbStatus | str = TcbStatus.UP_TO_DATE,
        advisory_ids: tuple[str, ...] | None = None,
        pce_id: bytes = b"\x00\x00",
        pce_svn: int = DEFAULT_PCE_SVN,
        cpu_svn: bytes = DEFAULT_CPU_SVN,
        tee_tcb_svn: bytes = DEFAULT_TEE_TCB_SVN,
        mr_seam: bytes | None = None,
        mr_signer_seam: bytes = bytes(48),
        seam_attributes: bytes = bytes(8),
        qe_svn: int = DEFAULT_QE_SVN,
        tcb_evaluation_data_number: int = 17,
    ) -> SimulatedTdx:
        """Generate a platform whose certificates and collateral are valid around ``now``.

        ``seed`` makes everything deterministic (same seed and arguments, same bytes); without
        it keys and identifiers are random. ``now`` is UNIX seconds: certificates start an hour
        before it. ``tcb_status`` is the status the collateral gives the platform's own TCB
        level (with ``advisory_ids``, by default two real advisory IDs when not UpToDate);
        ``cpu_svn`` holds the 16 SGX TCB component SVNs, ``tee_tcb_svn`` the TDX module's
        (byte 0 its SVN, byte 1 its major version). Raises ``SimulationError`` on bad values.
        """
        if seed is not None and (not isinstance(seed, bytes) or not seed):
            raise SimulationError("seed must be non-empty bytes (or None for random keys)")
        try:
            status = TcbStatus(tcb_status)
        except ValueError:
            raise SimulationError(f"unknown TCB status {tcb_status!r}") from None
        advisories = _advisories(status, advisory_ids)
        source = _Source(seed)
        try:
            config = PlatformConfig(
                now=now,
                fmspc=fmspc,
                pce_id=pce_id,
                pce_svn=pce_svn,
                cpu_svn=cpu_svn,
                ppid=source.identifier("ppid", 16),
                platform_instance_id=source.identifier("platform_instance_id", 16),
                qe_id=source.identifier("qe_id", 16),
                tee_tcb_svn=tee_tcb_svn,
                mr_seam=_label_digest("mr_seam", 48) if mr_seam is None else mr_seam,
                mr_signer_seam=mr_signer_seam,
                seam_attributes=seam_attributes,
                qe_svn=qe_svn,
                qe_mr_signer=_label_digest("qe_mr_signer", 32),
                qe_mr_enclave=source.identifier("qe_mr_enclave", 32),
                qe_attributes=_QE_ATTRIBUTES,
                qe_misc_select=0,
                tcb_status=status,
                advisory_ids=advisories,
                tcb_evaluation_data_number=tcb_evaluation_data_number,
            )
        except pydantic.ValidationError as exc:
            raise SimulationError(f"invalid platform parameter: {_first_error(exc)}") from None
        if seed is None:
            keys, certs = _build_hierarchy(source, config)
        else:
            keys, certs = _seeded_hierarchy(seed, config)
        return cls(config, keys, certs)

    # --- What a verifier and a policy need -----------------------------------------------------

    @property
    def config(self) -> PlatformConfig:
        """The platform's identifiers and SVNs (immutable)."""
        return self._config

    @property
    def root_certificate(self) -> x509.Certificate:
        """The simulated root CA: pass it as the verifier's trusted root."""
        return self._certs.root

    @property
    def root_pem(self) -> bytes:
        """The simulated root CA in PEM, for a client to store and trust across runs."""
        return _pem(self._certs.root)

    @property
    def pck_certificate(self) -> x509.Certificate:
        """The PCK leaf certificate the quotes carry (its serial is what a revocation names)."""
        return self._certs.pck

    @property
    def attestation_public_key(self) -> bytes:
        """The QE attestation key as the 64 raw bytes x || y that quotes carry."""
        return self._attestation_key_xy

    # --- Quotes -------------------------------------------------------------------------------

    def td(self, measurements: Measurements | None = None) -> SimulatedTd:
        """A TD on this platform, starting from ``measurements`` (defaults: ``Measurements()``)."""
        return SimulatedTd(self, measurements)

    def quote(self, report_data: bytes, *, measurements: Measurements | None = None) -> bytes:
        """A v4 TDX quote over ``report_data`` (64 bytes) for a TD with ``measurements``.

        The layout is the real one ([QGL] quote v4): header, 584-byte TD report, ECDSA signature
        data with certification data type 6 (QE report) wrapping type 5 (PCK chain, PEM).
        """
        if not isinstance(report_data, bytes) or len(report_data) != REPORT_DATA_SIZE:
            raise SimulationError(f"report_data must be {REPORT_DATA_SIZE} bytes")
        m = Measurements() if measurements is None else measurements
        c = self._config
        body = b"".join(
            (
                c.tee_tcb_svn,
                c.mr_seam,
                c.mr_signer_seam,
                c.seam_attributes,
                m.td_attributes,
                m.xfam,
                m.mr_td,
                m.mr_config_id,
                m.mr_owner,
                m.mr_owner_config,
                *m.rtmrs,
                report_data,
            )
        )
        signed = self._header + body
        signature_data = (
            _sign_raw(self._keys.attestation, signed)
            + self._attestation_key_xy
            + self._certification
        )
        return signed + struct.pack("<I", len(signature_data)) + signature_data

    # --- Collateral ---------------------------------------------------------------------------

    def collateral(
        self,
        *,
        now: int | None = None,
        tcb_status: TcbStatus | str | None = None,
        advisory_ids: tuple[str, ...] | None = None,
        revoke_pck: bool = False,
        revoke_platform_ca: bool = False,
        lifetime: int = _DEFAULT_COLLATERAL_LIFETIME,
        tcb_evaluation_data_number: int | None = None,
    ) -> dict[str, str]:
        """Signed collateral for this platform, in the QuoteCollateralV3 JSON shape.

        Everything is issued an hour before ``now`` (default: the ``now`` the platform was
        generated at) and valid for ``lifetime`` seconds, so ``now`` in the past gives expired
        collateral and ``now`` in the future collateral that is not yet valid. ``tcb_status``
        and ``advisory_ids`` override the platform's for this collateral; ``revoke_pck`` lists
        the PCK certificate in the PCK CRL, ``revoke_platform_ca`` the PCK Platform CA in the
        root CA CRL. ``tcb_evaluation_data_number`` overrides the platform's (as after one of
        Intel's TCB recoveries). ``Collateral.from_json`` reads the result.
        """
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
            raise SimulationError("collateral lifetime must be a positive number of seconds")
        if now is not None and (isinstance(now, bool) or not isinstance(now, int) or now < 0):
            raise SimulationError("now must be UNIX seconds (a non-negative int)")
        if tcb_status is None:
            status = self._config.tcb_status
            if advisory_ids is None:
                advisories = self._config.advisory_ids
            else:
                advisories = _advisories(status, advisory_ids)
        else:
            try:
                status = TcbStatus(tcb_status)
            except ValueError:
                raise SimulationError(f"unknown TCB status {tcb_status!r}") from None
            advisories = _advisories(status, advisory_ids)
        number = tcb_evaluation_data_number
        if number is None:
            number = self._config.tcb_evaluation_data_number
        elif isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise SimulationError("tcb_evaluation_data_number must be a non-negative int")
        issued = (self._config.now if now is None else now) - _BACKDATE
        tcb_info = _json_text(self._tcb_info(issued, issued + lifetime, status, advisories, number))
        qe_identity = _json_text(self._qe_identity(issued, issued + lifetime, number))
        root_crl = _crl(
            issuer=self._certs.root,
            issuer_key=self._keys.root,
            this_update=issued,
            lifetime=max(lifetime, _ROOT_CRL_LIFETIME),
            revoked_serials=(
                (self._certs.platform_ca.serial_number,) if revoke_platform_ca else ()
            ),
        )
        pck_crl = _crl(
            issuer=self._certs.platform_ca,
            issuer_key=self._keys.platform_ca,
            this_update=issued,
            lifetime=lifetime,
            revoked_serials=(self._certs.pck.serial_number,) if revoke_pck else (),
        )
        tcb_chain = (_pem(self._certs.tcb_signing) + self.root_pem).decode()
        return {
            "pck_crl_issuer_chain": (_pem(self._certs.platform_ca) + self.root_pem).decode(),
            "root_ca_crl": root_crl.public_bytes(serialization.Encoding.DER).hex(),
            "pck_crl": pck_crl.public_bytes(serialization.Encoding.DER).hex(),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info": tcb_info,
            "tcb_info_signature": _sign_raw(self._keys.tcb_signing, tcb_info.encode()).hex(),
            "qe_identity_issuer_chain": tcb_chain,
            "qe_identity": qe_identity,
            "qe_identity_signature": _sign_raw(self._keys.tcb_signing, qe_identity.encode()).hex(),
        }

    def _tcb_info(
        self,
        issued: int,
        next_update: int,
        status: TcbStatus,
        advisories: tuple[str, ...],
        number: int,
    ) -> dict[str, Any]:
        c = self._config
        tcb_date = _iso(issued - 30 * _DAY)

        def level(pce_svn: int, level_status: TcbStatus, ids: tuple[str, ...]) -> dict[str, Any]:
            entry: dict[str, Any] = {
                "tcb": {
                    "sgxtcbcomponents": [{"svn": svn} for svn in c.cpu_svn],
                    "pcesvn": pce_svn,
                    "tdxtcbcomponents": [{"svn": svn} for svn in c.tee_tcb_svn],
                },
                "tcbDate": tcb_date,
                "tcbStatus": level_status.value,
            }
            if ids:
                entry["advisoryIDs"] = list(ids)
            return entry

        levels = []
        if status is not TcbStatus.UP_TO_DATE:
            # Intel lists levels newest first; a platform that is not UpToDate sits below a
            # level it does not reach. One PCESVN higher is the least such level.
            if c.pce_svn >= _spec.PCESVN_MAX:
                raise SimulationError("a platform at the maximum PCESVN cannot be out of date")
            levels.append(level(c.pce_svn + 1, TcbStatus.UP_TO_DATE, ()))
        levels.append(level(c.pce_svn, status, advisories))

        module = {
            "mrsigner": c.mr_signer_seam.hex().upper(),
            "attributes": c.seam_attributes.hex().upper(),
            "attributesMask": _ALL_ONES_8.hex().upper(),
        }
        # The TDX module's major version (a TEE_TCB_SVN byte) selects the identity "TDX_<nn>";
        # its SVN (another byte) is compared with the identity's levels.
        module_svn = c.tee_tcb_svn[TEE_TCB_SVN_MODULE_SVN]
        identity = {
            "id": module_identity_id(c.tee_tcb_svn[TEE_TCB_SVN_MODULE_VERSION]),
            **module,
            "tcbLevels": [
                {"tcb": {"isvsvn": module_svn}, "tcbDate": tcb_date, "tcbStatus": "UpToDate"}
            ],
        }
        return {
            "id": TCB_INFO_ID_TDX,
            "version": TCB_INFO_VERSION,
            "issueDate": _iso(issued),
            "nextUpdate": _iso(next_update),
            "fmspc": c.fmspc.hex().upper(),
            "pceId": c.pce_id.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": number,
            "tdxModule": module,
            "tdxModuleIdentities": [identity],
            "tcbLevels": levels,
        }

    def _qe_identity(self, issued: int, next_update: int, number: int) -> dict[str, Any]:
        c = self._config
        return {
            "id": QE_IDENTITY_ID_TD_QE,
            "version": QE_IDENTITY_VERSION,
            "issueDate": _iso(issued),
            "nextUpdate": _iso(next_update),
            "tcbEvaluationDataNumber": number,
            # The report's little-endian u32 bytes, as Intel's QVL reads them.
            "miscselect": c.qe_misc_select.to_bytes(4, "little").hex().upper(),
            "miscselectMask": "FFFFFFFF",
            "attributes": _QE_IDENTITY_ATTRIBUTES.hex().upper(),
            "attributesMask": _QE_IDENTITY_ATTRIBUTES_MASK.hex().upper(),
            "mrsigner": c.qe_mr_signer.hex().upper(),
            "isvprodid": TD_QE_ISV_PROD_ID,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": c.qe_svn},
                    "tcbDate": _iso(issued - 30 * _DAY),
                    "tcbStatus": "UpToDate",
                }
            ],
        }

    # --- Persistence ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole platform, private keys included (unencrypted PEM), as JSON bytes."""
        document = {
            "format": _PERSIST_FORMAT,
            "warning": "Simulated TDX platform for development only; holds private keys.",
            "config": self._config.model_dump(mode="json"),
            "keys": {
                name: getattr(self._keys, name)
                .private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                .decode()
                for name in _KEY_NAMES
            },
            "certificates": {
                name: _pem(getattr(self._certs, name)).decode() for name in _CERT_NAMES
            },
        }
        return json.dumps(document, indent=2).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SimulatedTdx:
        """Restore a platform from ``to_bytes`` output; ``SimulationError`` if it is corrupt.

        Every key must match its certificate, every certificate must be signed by its issuer,
        and the PCK certificate's SGX extension must agree with the configuration.
        """
        try:
            document = _PersistedPlatform.model_validate_json(data)
        except pydantic.ValidationError as exc:
            raise SimulationError(f"not a saved simulated platform: {_first_error(exc)}") from None
        keys = _Keys(**{n: _load_key(n, getattr(document.keys, n)) for n in _KEY_NAMES})
        certs = _Certificates(
            **{n: _load_cert(n, getattr(document.certificates, n)) for n in _CERT_NAMES}
        )
        _check_consistent(document.config, keys, certs)
        return cls(document.config, keys, certs)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the platform to ``directory``: ``platform.json`` (owner-only) and ``root.pem``.

        ``platform.json`` holds the private keys unencrypted: this is a development tool.
        ``root.pem`` is what a client trusts. Returns the path of ``platform.json``.
        """
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
            target = path / _PERSIST_FILE
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.to_bytes())
            (path / _ROOT_FILE).write_bytes(self.root_pem)
        except OSError as exc:
            raise SimulationError(f"cannot save simulated platform to {path}: {exc}") from None
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SimulatedTdx:
        """Load a platform written by ``save`` (a directory, or its ``platform.json``)."""
        target = Path(path)
        if target.is_dir():
            target = target / _PERSIST_FILE
        try:
            data = target.read_bytes()
        except OSError as exc:
            raise SimulationError(f"cannot read simulated platform {target}: {exc}") from None
        return cls.from_bytes(data)


class _KeyPems(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True)
    root: str
    platform_ca: str
    pck: str
    tcb_signing: str
    attestation: str


class _CertPems(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True)
    root: str
    platform_ca: str
    pck: str
    tcb_signing: str


class _PersistedPlatform(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True)
    format: Literal["shroud-simulated-tdx/1"]
    warning: str
    config: PlatformConfig
    keys: _KeyPems
    certificates: _CertPems


def _first_error(exc: pydantic.ValidationError) -> str:
    # The first error names the field; pydantic's full text repeats input values, which for
    # a saved platform could include key material.
    err = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "document"
    return f"{where}: {err['msg']}"


def _load_key(name: str, pem: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise SimulationError(f"saved key {name!r} is not an unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SimulationError(f"saved key {name!r} is not a P-256 key")
    return key


def _load_cert(name: str, pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise SimulationError(f"saved certificate {name!r} is not a PEM certificate") from None


def _check_consistent(config: PlatformConfig, keys: _Keys, certs: _Certificates) -> None:
    def spki(key: ec.EllipticCurvePublicKey | object) -> bytes:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return b""
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    for name in _CERT_NAMES:
        cert: x509.Certificate = getattr(certs, name)
        key: ec.EllipticCurvePrivateKey = getattr(keys, name)
        if spki(cert.public_key()) != spki(key.public_key()):
            raise SimulationError(f"saved key {name!r} does not match its certificate")
    for child, parent in (
        ("root", "root"),
        ("platform_ca", "root"),
        ("pck", "platform_ca"),
        ("tcb_signing", "root"),
    ):
        try:
            getattr(certs, child).verify_directly_issued_by(getattr(certs, parent))
        except (ValueError, TypeError, InvalidSignature):
            raise SimulationError(
                f"saved certificate {child!r} is not issued by {parent!r}"
            ) from None
    try:
        encoded = encode_pck_extensions(_pck_extensions(config))
        ext = certs.pck.extensions.get_extension_for_oid(
            x509.ObjectIdentifier(_spec.SGX_EXTENSIONS_OID)
        ).value
    except (CertificateError, x509.ExtensionNotFound):
        raise SimulationError("saved PCK certificate has no valid SGX extension") from None
    if not isinstance(ext, x509.UnrecognizedExtension) or ext.value != encoded:
        raise SimulationError("saved PCK certificate's SGX extension disagrees with the config")


def _advisories(status: TcbStatus, advisory_ids: tuple[str, ...] | None) -> tuple[str, ...]:
    """The advisory IDs for a level: as given, or by default some when not UpToDate."""
    if advisory_ids is None:
        return () if status is TcbStatus.UP_TO_DATE else DEFAULT_ADVISORY_IDS
    # Typed callers cannot pass a lone string, but it would silently become one ID per letter.
    candidate: object = advisory_ids
    if isinstance(candidate, str) or not all(isinstance(a, str) for a in advisory_ids):
        raise SimulationError("advisory_ids must be a tuple of strings such as 'INTEL-SA-00960'")
    return tuple(advisory_ids)


def _json_text(obj: dict[str, Any]) -> str:
    # Intel signs compact JSON; the signature covers exactly these UTF-8 bytes.
    return json.dumps(obj, separators=(",", ":"))


# --- A TD ----------------------------------------------------------------------------------


class SimulatedTd:
    """One TD on a simulated platform: its measurement registers and quotes over them.

    The TD may extend RTMR2 and RTMR3 (``EXTENDABLE_RTMRS``) at runtime, as a Linux guest does
    through the kernel's measurement interface; RTMR0/1 keep their boot values. Every later
    quote reports the extended values. Extension is thread-safe.
    """

    def __init__(self, platform: SimulatedTdx, measurements: Measurements | None = None) -> None:
        self._platform = platform
        self._measurements = Measurements() if measurements is None else measurements
        self._lock = threading.Lock()

    @property
    def platform(self) -> SimulatedTdx:
        return self._platform

    @property
    def measurements(self) -> Measurements:
        """The current registers (a snapshot)."""
        with self._lock:
            return self._measurements

    def extend_rtmr(self, index: int, digest: bytes) -> bytes:
        """RTMR[index] = SHA-384(RTMR[index] || digest); returns the new value.

        Only RTMR2 and RTMR3 are extendable (RTMR0/1 hold boot measurements). ``digest`` is
        48 bytes (a SHA-384 digest). ``SimulationError`` otherwise.
        """
        if isinstance(index, bool) or index not in EXTENDABLE_RTMRS:
            raise SimulationError(
                f"RTMR{index} cannot be extended from the TD; only RTMR2 and RTMR3 can"
            )
        if not isinstance(digest, bytes) or len(digest) != RTMR_SIZE:
            raise SimulationError(f"an RTMR extension digest is {RTMR_SIZE} bytes (SHA-384)")
        with self._lock:
            value = eventlog.extend(self._measurements.rtmrs[index], digest)
            self._measurements = self._measurements.with_rtmr(index, value)
        return value

    def quote(self, report_data: bytes) -> bytes:
        """A v4 quote over ``report_data`` (64 bytes) with the TD's current registers."""
        return self._platform.quote(report_data, measurements=self.measurements)
