"""Every shroud/1 constant, in one place, each naming its section of docs/protocol.md.

Changing any value here changes the wire protocol: bump ``PROTOCOL_VERSION`` and the spec.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from typing import Final

# protocol.md §1 "Versions and suites"
PROTOCOL_VERSION: Final = 1


class Suite(enum.IntEnum):
    """Suite identifiers (protocol.md §1). Only implemented suites can be negotiated."""

    P256_HKDF_SHA256_AES256GCM = 1
    # Hybrid key agreement: P-256 ECDH and ML-KEM-768 (FIPS 203), both secrets into HKDF.
    HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM = 2
    # The same cryptography as suites 1 and 2, but the evidence comes from a simulated TEE. A
    # client only offers them when its allowed-suites set names them explicitly.
    SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM = 0x7F01
    SIMULATED_TEE_HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM = 0x7F02

    @property
    def description(self) -> str:
        """What the suite means to a user, e.g. in error messages (protocol.md §1)."""
        kind = "hybrid P-256 + ML-KEM-768" if self in HYBRID_SUITES else "classical P-256"
        if self in SIMULATED_SUITES:
            return f"{kind}, SIMULATED TEE"
        return f"{kind}, post-quantum" if self in HYBRID_SUITES else kind


def describe_suites(suites: Iterable[int]) -> str:
    """``"2 (hybrid P-256 + ML-KEM-768, post-quantum), 1 (classical P-256)"``, for messages."""
    return ", ".join(_describe_suite(suite) for suite in suites) or "none"


def _describe_suite(suite: int) -> str:
    try:
        return f"{suite} ({Suite(suite).description})"
    except ValueError:
        return f"{suite} (unknown)"


IMPLEMENTED_SUITES: Final = frozenset(Suite)
SIMULATED_SUITES: Final = frozenset(
    {
        Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM,
        Suite.SIMULATED_TEE_HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM,
    }
)
# Suites whose key agreement includes ML-KEM-768 (post-quantum confidentiality).
HYBRID_SUITES: Final = frozenset(
    {
        Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM,
        Suite.SIMULATED_TEE_HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM,
    }
)
# Post-quantum by default: a client offers the hybrid suite first, then classical suite 1 (for
# bridges that lack suite 2). A policy with require_post_quantum narrows this to hybrid only.
DEFAULT_CLIENT_SUITES: Final = frozenset(
    {Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM, Suite.P256_HKDF_SHA256_AES256GCM}
)
MAX_OFFERED_SUITES: Final = 8

# protocol.md §3 "Handshake": sizes of fixed-length fields
NONCE_LEN: Final = 32
P256_POINT_LEN: Final = 65  # SEC 1 §2.3.3 uncompressed: 0x04 || X || Y
P256_UNCOMPRESSED_PREFIX: Final = 0x04
MLKEM768_ENCAPSULATION_KEY_LEN: Final = 1184  # FIPS 203 §8, ML-KEM-768 ek
MLKEM768_CIPHERTEXT_LEN: Final = 1088  # FIPS 203 §8, ML-KEM-768 ciphertext
FIN_LEN: Final = 32
SIGNATURE_LEN: Final = 64  # ECDSA P-256 raw r || s, 32 bytes each, big-endian
REPORT_DATA_LEN: Final = 64  # TDX REPORTDATA field size
MAX_AUDIENCE_LEN: Final = 255
MAX_CLIENT_HELLO_LEN: Final = 4096
MAX_BRIDGE_HELLO_LEN: Final = 1 << 20
MAX_EVIDENCE_TYPE_LEN: Final = 32
MAX_EVENT_LOGS: Final = 8

# protocol.md §4 "Bindings": domain labels (ASCII, no terminator)
LABEL_REPORT_DATA: Final = b"shroud/1 reportdata"
LABEL_TRANSCRIPT: Final = b"shroud/1 transcript"
# protocol.md §4.3 "Attested-key binding" and §4.4 "Transcript signature"
LABEL_ATTESTED_KEY: Final = b"shroud/1 attested key"
LABEL_TRANSCRIPT_SIGNATURE: Final = b"shroud/1 transcript signature"
MAX_WINDOW_BOUND: Final = (1 << 64) - 1  # not_before / not_after are u64 UNIX seconds
# protocol.md §3.6 "Window check": how far a client's clock may run behind the bridge's when a
# new attested key is first seen. Only before not_before: past not_after nothing is granted, so
# a skewed clock never lengthens a key's life.
CLOCK_SKEW_SECONDS: Final = 60
LABEL_USAGE: Final = "shroud/1 usage"

# protocol.md §5 "Key schedule": HKDF-Expand-Label prefix and labels
EXPAND_LABEL_PREFIX: Final = b"shroud1 "
KS_C2B_KEY: Final = b"c2b key"
KS_C2B_IV: Final = b"c2b iv"
KS_B2C_KEY: Final = b"b2c key"
KS_B2C_IV: Final = b"b2c iv"
KS_FINISHED: Final = b"finished"
KS_EXPORTER: Final = b"exporter"
AEAD_KEY_LEN: Final = 32
AEAD_IV_LEN: Final = 12
AEAD_TAG_LEN: Final = 16
HASH_LEN: Final = 32

# protocol.md §6 "Records"
DIRECTION_C2B: Final = b"shroud/1 c2b"
DIRECTION_B2C: Final = b"shroud/1 b2c"
RECORD_HEADER: Final = struct.Struct(">BBHI")  # version, type, metadata length, stream id
RECORD_HEADER_LEN: Final = RECORD_HEADER.size
CONTENT_LENGTH: Final = struct.Struct(">I")  # inner-plaintext prefix holding the true length
PADDING_BUCKETS: Final = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
MAX_INNER_PLAINTEXT: Final = PADDING_BUCKETS[-1]
MAX_CONTENT_LEN: Final = MAX_INNER_PLAINTEXT - CONTENT_LENGTH.size
MAX_METADATA_LEN: Final = 1024
MAX_RECORD_LEN: Final = RECORD_HEADER_LEN + MAX_METADATA_LEN + MAX_INNER_PLAINTEXT + AEAD_TAG_LEN
MAX_STREAM_ID: Final = 0xFFFFFFFF
CONNECTION_STREAM_ID: Final = 0  # CLOSE records only


class RecordType(enum.IntEnum):
    """Record types (protocol.md §6)."""

    HEADERS = 1
    DATA = 2
    END = 3
    RESET = 4
    CLOSE = 5


# protocol.md §8 "Limits": per direction, then a new handshake
MAX_RECORDS_PER_DIRECTION: Final = 1 << 23
MAX_BYTES_PER_DIRECTION: Final = 1 << 34
MAX_CONCURRENT_STREAMS: Final = 100
MAX_HEADERS: Final = 128
MAX_HEADER_NAME_LEN: Final = 256
MAX_HEADER_VALUE_LEN: Final = 8192
MAX_PATH_LEN: Final = 2048
MAX_METHOD_LEN: Final = 16
MAX_REASON_LEN: Final = 256

# protocol.md §2 "Encoding": strict CBOR bounds
CBOR_MAX_DEPTH: Final = 8
CBOR_MAX_ITEMS: Final = 4096

# protocol.md §7 "Selective disclosure": field name -> allowed JSON value type
DISCLOSABLE_FIELDS: Final[dict[str, type]] = {
    "model": str,
    "stream": bool,
    "max_tokens": int,
    "max_completion_tokens": int,
    "n": int,
}
MAX_DISCLOSED_STRING_LEN: Final = 256

# protocol.md §9 "Errors and closing": RESET / CLOSE codes
CLOSE_NORMAL: Final = 0
CLOSE_GOING_AWAY: Final = 1
CLOSE_LIMIT_REACHED: Final = 2
RESET_CANCELLED: Final = 0
RESET_REFUSED: Final = 1
RESET_INTERNAL_ERROR: Final = 2
