"""Layout constants of TDX quotes and Intel SGX PCK certificates, in one place.

Every number here comes from an Intel specification; each group names the document and section
it is taken from, so a reviewer can check it against the source. Code elsewhere refers to these
names instead of repeating literals. This module holds data only: no parsing, no checks.

Sources:
- [QGL] Intel TDX DCAP Quote Generation Library and Quote Verification Library API,
  appendix "Quote Format": the quote v4 and quote v5 tables (header, TD quote body,
  ECDSA signature data, certification data, QE report certification data). Sections are cited
  by table title because their numbering differs between revisions of the document.
- [ECDSA] Intel SGX ECDSA Quote Library API, appendix "Quote Format", table "Enclave Report
  Body" (the layout reused for the QE report inside a TDX quote).
- [PCK] Intel SGX PCK Certificate and Certificate Revocation List Profile Specification,
  section 1.3.5 "Intel SGX PCK Certificate extensions".
"""

from __future__ import annotations

# --- Quote header ([QGL] "Quote Header"; identical in v4 and v5) -------------------------
HEADER_SIZE = 48
HEADER_VERSION = (0, 2)  # (offset, size) u16
HEADER_ATT_KEY_TYPE = (2, 2)  # u16
HEADER_TEE_TYPE = (4, 4)  # u32
HEADER_QE_SVN = (8, 2)  # u16
HEADER_PCE_SVN = (10, 2)  # u16
HEADER_QE_VENDOR_ID = (12, 16)
HEADER_USER_DATA = (28, 20)

SUPPORTED_QUOTE_VERSIONS = (4, 5)  # [QGL] quote v4 and quote v5 tables

# --- Quote v5 body descriptor ([QGL] "Quote Body Descriptor") ---------------------------
# v5 puts u16 body type and u32 body size between the header and the body. Both are covered by
# the quote signature: it signs everything from the first header byte to the end of the body.
V5_BODY_TYPE_SIZE = 2
V5_BODY_SIZE_SIZE = 4

# --- TD report body ([QGL] "TD Quote Body" (TDX 1.0) and "TD Quote Body v1.5") -----
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
# (name, offset, size); the first fifteen fields are the TDX 1.0 body, in order.
TD_REPORT10_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("tee_tcb_svn", 0, 16),
    ("mr_seam", 16, 48),
    ("mr_signer_seam", 64, 48),
    ("seam_attributes", 112, 8),
    ("td_attributes", 120, 8),
    ("xfam", 128, 8),
    ("mr_td", 136, 48),
    ("mr_config_id", 184, 48),
    ("mr_owner", 232, 48),
    ("mr_owner_config", 280, 48),
    ("rtmr0", 328, 48),
    ("rtmr1", 376, 48),
    ("rtmr2", 424, 48),
    ("rtmr3", 472, 48),
    ("report_data", 520, 64),
)
# TDX 1.5 appends these two fields to the 1.0 body.
TD_REPORT15_EXTRA_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("tee_tcb_svn_2", 584, 16),
    ("mr_service_td", 600, 48),
)

# --- ECDSA quote signature data ([QGL] "ECDSA 256-bit Quote Signature Data Structure") ---
SIG_DATA_LENGTH_SIZE = 4  # u32 that precedes the signature data
ECDSA_SIGNATURE_SIZE = 64  # raw r || s, big-endian each
ECDSA_PUBLIC_KEY_SIZE = 64  # raw x || y, big-endian each

# --- Certification data ([QGL] "Certification Data") ------------------------------------
CERT_DATA_TYPE_SIZE = 2  # u16
CERT_DATA_SIZE_SIZE = 4  # u32
CERT_DATA_HEADER_SIZE = CERT_DATA_TYPE_SIZE + CERT_DATA_SIZE_SIZE

# --- QE report certification data ([QGL] "QE Report Certification Data") ---------------
QE_REPORT_SIZE = 384
QE_REPORT_SIGNATURE_SIZE = 64
QE_AUTH_DATA_SIZE_SIZE = 2  # u16

# --- SGX enclave report body ([ECDSA] "Enclave Report Body"; the QE's report) -------------
ENCLAVE_REPORT_CPU_SVN = (0, 16)
ENCLAVE_REPORT_MISC_SELECT = (16, 4)  # u32
ENCLAVE_REPORT_ATTRIBUTES = (48, 16)
ENCLAVE_REPORT_MR_ENCLAVE = (64, 32)
ENCLAVE_REPORT_MR_SIGNER = (128, 32)
ENCLAVE_REPORT_ISV_PROD_ID = (256, 2)  # u16
ENCLAVE_REPORT_ISV_SVN = (258, 2)  # u16
ENCLAVE_REPORT_REPORT_DATA = (320, 64)

# --- PCK certificate SGX extensions ([PCK] 1.3.5) ---------------------------------------------
# The extension value is a SEQUENCE of SEQUENCE { OBJECT IDENTIFIER, value }.
SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
PPID_OID = SGX_EXTENSIONS_OID + ".1"  # OCTET STRING (16)
TCB_OID = SGX_EXTENSIONS_OID + ".2"  # SEQUENCE of (OID, value)
TCB_COMPONENT_COUNT = 16  # SGX TCB comp01..comp16 SVN: TCB_OID + ".1" .. ".16", INTEGER
PCESVN_OID = TCB_OID + ".17"  # INTEGER
CPUSVN_OID = TCB_OID + ".18"  # OCTET STRING (16)
PCEID_OID = SGX_EXTENSIONS_OID + ".3"  # OCTET STRING (2)
FMSPC_OID = SGX_EXTENSIONS_OID + ".4"  # OCTET STRING (6)
SGX_TYPE_OID = SGX_EXTENSIONS_OID + ".5"  # ENUMERATED
PLATFORM_INSTANCE_ID_OID = SGX_EXTENSIONS_OID + ".6"  # OCTET STRING (16), platform CA certs only
CONFIGURATION_OID = SGX_EXTENSIONS_OID + ".7"  # SEQUENCE of (OID, BOOLEAN), platform CA only
DYNAMIC_PLATFORM_OID = CONFIGURATION_OID + ".1"  # BOOLEAN
CACHED_KEYS_OID = CONFIGURATION_OID + ".2"  # BOOLEAN
SMT_ENABLED_OID = CONFIGURATION_OID + ".3"  # BOOLEAN

PPID_SIZE = 16
CPUSVN_SIZE = 16
PCEID_SIZE = 2
FMSPC_SIZE = 6
PLATFORM_INSTANCE_ID_SIZE = 16
TCB_COMPONENT_MAX = 0xFF  # each SGX TCB component SVN is one byte of CPUSVN
PCESVN_MAX = 0xFFFF  # PCESVN is a u16 (as in the quote header)
