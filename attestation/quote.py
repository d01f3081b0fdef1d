"""The TDX quote as typed structures (Intel TDX DCAP Quote Generation Library API, quote v4/v5).

This module only describes what a quote contains. Turning bytes into these structures is
``attestation.quote_parser``; checking signatures and collateral is ``attestation.verify``.
All multi-byte integers in a quote are little-endian; measurement registers are kept as the
raw bytes the TD reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class TeeType(IntEnum):
    """Header ``tee_type`` (quote header, offset 4)."""

    SGX = 0x00000000
    TDX = 0x00000081


class AttestationKeyType(IntEnum):
    """Header ``att_key_type`` (quote header, offset 2)."""

    ECDSA_P256 = 2
    ECDSA_P384 = 3


class BodyType(IntEnum):
    """Quote v5 body type: which report follows the header."""

    SGX_ENCLAVE = 1
    TDX_10 = 2
    TDX_15 = 3


class CertificationDataType(IntEnum):
    """Certification data types (Intel DCAP quote format, ``Certification Data Type``)."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048_ENCRYPTED = 2
    PPID_RSA3072_ENCRYPTED = 3
    PCK_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERTIFICATION_DATA = 6
    PLATFORM_MANIFEST = 7


@dataclass(frozen=True)
class QuoteHeader:
    """The 48-byte quote header."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes  # 16 bytes; Intel's QE: 939A7233F79C4CA9940A0DB3957F0607
    user_data: bytes  # 20 bytes; the first 16 are the QE's platform identifier

    raw: bytes  # the exact 48 header bytes


# The TD report's measurement registers, in report order: what a policy can pin and what
# reports show. Each name is a ``TdReport`` attribute holding 48 bytes.
MEASUREMENT_REGISTERS = (
    "mr_td",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "mr_config_id",
    "mr_owner",
    "mr_owner_config",
)


@dataclass(frozen=True)
class TdReport:
    """The TD report body: TDX 1.0 (584 bytes) or TDX 1.5 (648 bytes)."""

    tee_tcb_svn: bytes  # 16
    mr_seam: bytes  # 48
    mr_signer_seam: bytes  # 48
    seam_attributes: bytes  # 8
    td_attributes: bytes  # 8, little-endian bit field (bit 0 DEBUG, bit 28 SEPT_VE_DISABLE)
    xfam: bytes  # 8
    mr_td: bytes  # 48
    mr_config_id: bytes  # 48
    mr_owner: bytes  # 48
    mr_owner_config: bytes  # 48
    rtmr0: bytes  # 48
    rtmr1: bytes  # 48
    rtmr2: bytes  # 48
    rtmr3: bytes  # 48
    report_data: bytes  # 64
    tee_tcb_svn_2: bytes | None = None  # 16, TDX 1.5 only
    mr_service_td: bytes | None = None  # 48, TDX 1.5 only

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def td_attributes_int(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def xfam_int(self) -> int:
        return int.from_bytes(self.xfam, "little")

    @property
    def is_tdx15(self) -> bool:
        return self.tee_tcb_svn_2 is not None


@dataclass(frozen=True)
class EnclaveReport:
    """An SGX enclave report (384 bytes): here, the Quoting Enclave's report."""

    cpu_svn: bytes  # 16
    misc_select: int  # u32
    attributes: bytes  # 16
    mr_enclave: bytes  # 32
    mr_signer: bytes  # 32
    isv_prod_id: int  # u16
    isv_svn: int  # u16
    report_data: bytes  # 64

    raw: bytes  # the exact 384 bytes, which the QE report signature covers


@dataclass(frozen=True)
class QeReportCertificationData:
    """Certification data type 6: the QE report, its signature, QE auth data and the PCK chain."""

    qe_report: EnclaveReport
    qe_report_signature: bytes  # 64, raw r||s, by the PCK key
    qe_auth_data: bytes
    pck_chain_pem: bytes  # certification data type 5: PCK leaf, platform/processor CA, root


@dataclass(frozen=True)
class QuoteSignatureData:
    """The ECDSA quote signature data that follows the body."""

    signature: bytes  # 64, raw r||s, by the attestation key over header || body
    attestation_key: bytes  # 64, raw P-256 x||y
    certification: QeReportCertificationData


@dataclass(frozen=True)
class Quote:
    """A parsed TDX quote (v4, or v5 with a TDX body)."""

    header: QuoteHeader
    body_type: BodyType  # v4 quotes are reported as TDX_10
    td_report: TdReport
    signature_data: QuoteSignatureData
    signed_region: bytes  # the exact bytes the quote signature covers (header and body)
    raw: bytes  # the quote exactly as long as it declared itself (padding dropped)

    @property
    def version(self) -> int:
        return self.header.version
