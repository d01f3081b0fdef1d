"""The shroud/1 key schedule: HKDF-SHA-256 Extract and a TLS 1.3-shaped Expand-Label.

From the ECDH shared secret and the transcript hash it derives the per-direction AEAD keys
and IVs, the finished key and the exporter secret (protocol.md §5). It does not compute the
transcript itself (``handshake``) nor touch records (``records``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from shroud_sdk.channel.constants import (
    AEAD_IV_LEN,
    AEAD_KEY_LEN,
    EXPAND_LABEL_PREFIX,
    HASH_LEN,
    KS_B2C_IV,
    KS_B2C_KEY,
    KS_C2B_IV,
    KS_C2B_KEY,
    KS_EXPORTER,
    KS_FINISHED,
)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869 §2.2)."""
    return HKDF.extract(hashes.SHA256(), salt, ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256 (RFC 5869 §2.3)."""
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def hkdf_expand_label(
    secret: bytes,
    label: bytes,
    context: bytes,
    length: int,
    *,
    prefix: bytes = EXPAND_LABEL_PREFIX,
) -> bytes:
    """HKDF-Expand-Label in the shape of RFC 8446 §7.1, with shroud/1's label prefix.

    ``info = uint16(length) || uint8(len(prefix+label)) || prefix+label || uint8(len(context))
    || context``. With ``prefix=b"tls13 "`` this is exactly TLS 1.3's function, which is how it
    is checked against RFC 8448.
    """
    full_label = prefix + label
    if not 0 < len(full_label) <= 255 or len(context) > 255 or not 0 < length <= 0xFFFF:
        raise ValueError("HKDF-Expand-Label argument out of range")
    info = (
        struct.pack(">HB", length, len(full_label))
        + full_label
        + struct.pack(">B", len(context))
        + context
    )
    return hkdf_expand(secret, info, length)


@dataclass(frozen=True)
class SessionKeys:
    """Everything the key schedule yields for one connection. Never printed (``repr=False``)."""

    c2b_key: bytes = field(repr=False)
    c2b_iv: bytes = field(repr=False)
    b2c_key: bytes = field(repr=False)
    b2c_iv: bytes = field(repr=False)
    finished_key: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)


def derive_session_keys(shared_secret: bytes, transcript_hash: bytes) -> SessionKeys:
    """Run protocol.md §5: Extract(salt=transcript hash, ikm=ECDH secret), then the expands."""
    secret = hkdf_extract(transcript_hash, shared_secret)
    return SessionKeys(
        c2b_key=hkdf_expand_label(secret, KS_C2B_KEY, b"", AEAD_KEY_LEN),
        c2b_iv=hkdf_expand_label(secret, KS_C2B_IV, b"", AEAD_IV_LEN),
        b2c_key=hkdf_expand_label(secret, KS_B2C_KEY, b"", AEAD_KEY_LEN),
        b2c_iv=hkdf_expand_label(secret, KS_B2C_IV, b"", AEAD_IV_LEN),
        finished_key=hkdf_expand_label(secret, KS_FINISHED, b"", HASH_LEN),
        exporter_secret=hkdf_expand_label(secret, KS_EXPORTER, b"", HASH_LEN),
    )


def finished_mac(finished_key: bytes, transcript_hash: bytes) -> bytes:
    """``fin = HMAC-SHA-256(finished_key, transcript_hash)`` (protocol.md §5)."""
    return hmac.new(finished_key, transcript_hash, hashlib.sha256).digest()


def export_keying_material(
    exporter_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """Application keying material bound to this session (protocol.md §5, "Exporter").

    ``context`` is hashed first so any length is allowed.
    """
    return hkdf_expand_label(exporter_secret, label, hashlib.sha256(context).digest(), length)
