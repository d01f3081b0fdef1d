"""The shroud/1 record layer: one AEAD record per WebSocket message (protocol.md §6).

A ``RecordSealer`` / ``RecordOpener`` pair per direction holds the AES-256-GCM object (built
once), the implicit 64-bit sequence number and the per-direction limits. It knows nothing
about streams or CBOR contents; ``connection`` does. It does not decide what happens after a
failure either: it raises, and the connection fails closed.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shroud_sdk.channel.constants import (
    AEAD_IV_LEN,
    AEAD_KEY_LEN,
    AEAD_TAG_LEN,
    CONTENT_LENGTH,
    MAX_BYTES_PER_DIRECTION,
    MAX_CONTENT_LEN,
    MAX_METADATA_LEN,
    MAX_RECORD_LEN,
    MAX_RECORDS_PER_DIRECTION,
    PADDING_BUCKETS,
    PROTOCOL_VERSION,
    RECORD_HEADER,
    RECORD_HEADER_LEN,
)
from shroud_sdk.errors import IntegrityError, LocalProtocolError, ProtocolError, RekeyRequiredError


@dataclass(frozen=True)
class Limits:
    """Per-direction limits (protocol.md §8). Lower values are for tests and cautious peers."""

    max_records: int = MAX_RECORDS_PER_DIRECTION
    max_bytes: int = MAX_BYTES_PER_DIRECTION

    def __post_init__(self) -> None:
        # The sequence number is 64 bits on the nonce; the spec limits keep it far below.
        if not 0 < self.max_records <= MAX_RECORDS_PER_DIRECTION:
            raise ValueError("max_records must be in 1..2^23")
        if not 0 < self.max_bytes <= MAX_BYTES_PER_DIRECTION:
            raise ValueError("max_bytes must be in 1..2^34")


class Record(NamedTuple):
    """One opened record: header fields, cleartext metadata and the unpadded content.

    A named tuple, not a frozen dataclass: one is built per received record, and a frozen
    dataclass's ``__init__`` costs more than the rest of the bookkeeping around the AEAD.
    """

    version: int
    type: int
    stream_id: int
    metadata: bytes
    content: bytes

    def __repr__(self) -> str:
        # The content is decrypted application data: never in a repr (logs, tracebacks).
        return (
            f"Record(version={self.version}, type={self.type}, stream_id={self.stream_id}, "
            f"metadata=<{len(self.metadata)} bytes>, content=<{len(self.content)} bytes>)"
        )


_LENGTH_PREFIX = CONTENT_LENGTH.size
_pack_header = RECORD_HEADER.pack
_pack_length = CONTENT_LENGTH.pack


def padded_length(content_len: int) -> int:
    """The inner-plaintext size for ``content_len`` bytes: the smallest bucket that fits."""
    index = bisect_left(PADDING_BUCKETS, CONTENT_LENGTH.size + content_len)
    if index == len(PADDING_BUCKETS):
        raise LocalProtocolError("record-size", f"content of {content_len} bytes exceeds a record")
    return PADDING_BUCKETS[index]


def nonce_for(iv: bytes, seq: int) -> bytes:
    """nonce = IV XOR (64-bit big-endian sequence number, left-padded to 12 bytes)."""
    return (int.from_bytes(iv, "big") ^ seq).to_bytes(AEAD_IV_LEN, "big")


class _Direction:
    def __init__(self, key: bytes, iv: bytes, label: bytes, limits: Limits) -> None:
        if len(key) != AEAD_KEY_LEN or len(iv) != AEAD_IV_LEN:
            raise ValueError("AEAD key or IV has the wrong length")
        self._aead = AESGCM(key)
        self._iv_int = int.from_bytes(iv, "big")
        self._label = label
        self._limits = limits
        # Read on every record: plain attributes (``limits`` is frozen).
        self._max_records = limits.max_records
        self._max_bytes = limits.max_bytes
        self.seq = 0
        self.bytes = 0

    def _nonce(self) -> bytes:
        return (self._iv_int ^ self.seq).to_bytes(AEAD_IV_LEN, "big")


class RecordSealer(_Direction):
    """Seals outgoing records for one direction (``label`` is that direction's AAD label)."""

    def has_room(self, records: int, inner_bytes: int) -> bool:
        """Whether ``records`` more records of ``inner_bytes`` in total fit under the limits."""
        return (
            self.seq + records <= self._limits.max_records
            and self.bytes + inner_bytes <= self._limits.max_bytes
        )

    def seal(
        self, record_type: int, stream_id: int, content: bytes, metadata: bytes = b""
    ) -> bytes:
        """Return one wire record; raise ``RekeyRequiredError`` (nothing sealed) at a limit."""
        meta_len, content_len = len(metadata), len(content)
        if meta_len > MAX_METADATA_LEN:
            raise LocalProtocolError("metadata-size", f"metadata exceeds {MAX_METADATA_LEN}")
        if content_len > MAX_CONTENT_LEN:
            raise LocalProtocolError("record-size", f"content exceeds {MAX_CONTENT_LEN} bytes")
        # padded_length, inline (one record per token): content this short always fits.
        size = PADDING_BUCKETS[bisect_left(PADDING_BUCKETS, _LENGTH_PREFIX + content_len)]
        seq = self.seq
        if seq >= self._max_records or self.bytes + size > self._max_bytes:
            raise RekeyRequiredError(
                "send-limit", "per-direction limit reached; new handshake needed"
            )
        header = _pack_header(PROTOCOL_VERSION, record_type, meta_len, stream_id)
        padding = bytes(size - _LENGTH_PREFIX - content_len)
        inner = b"".join((_pack_length(content_len), content, padding))
        nonce = (self._iv_int ^ seq).to_bytes(AEAD_IV_LEN, "big")
        sealed = self._aead.encrypt(nonce, inner, self._label + header + metadata)
        self.seq = seq + 1
        self.bytes += size
        return header + metadata + sealed


class RecordOpener(_Direction):
    """Opens incoming records for one direction, strictly in order."""

    def open(self, message: bytes) -> Record:
        """Authenticate and decrypt one wire record, or raise (every failure is fatal)."""
        if not RECORD_HEADER_LEN + AEAD_TAG_LEN <= len(message) <= MAX_RECORD_LEN:
            raise ProtocolError("record-size", f"record of {len(message)} bytes out of bounds")
        version, record_type, meta_len, stream_id = RECORD_HEADER.unpack_from(message)
        if meta_len > MAX_METADATA_LEN:
            raise ProtocolError("record-size", f"metadata length {meta_len} exceeds the limit")
        body_start = RECORD_HEADER_LEN + meta_len
        if len(message) - body_start < AEAD_TAG_LEN:
            raise ProtocolError("record-size", "metadata length runs past the record")
        inner_len = len(message) - body_start - AEAD_TAG_LEN
        if inner_len not in PADDING_BUCKETS:
            raise ProtocolError("record-padding", f"inner length {inner_len} is not a bucket")
        seq = self.seq
        if seq >= self._max_records or self.bytes + inner_len > self._max_bytes:
            raise ProtocolError("receive-limit", "peer exceeded the per-direction limit")
        try:
            inner = self._aead.decrypt(
                (self._iv_int ^ seq).to_bytes(AEAD_IV_LEN, "big"),
                message[body_start:],
                self._label + message[:body_start],
            )
        except InvalidTag:
            raise IntegrityError(
                "record-auth",
                f"record {seq} failed authentication (tampered, reordered, dropped, "
                "replayed, reflected or spliced)",
            ) from None
        self.seq = seq + 1
        self.bytes += inner_len
        (content_len,) = CONTENT_LENGTH.unpack_from(inner)
        end = CONTENT_LENGTH.size + content_len
        # Authenticated, so a bad length or non-zero padding means a broken peer: refuse.
        if end > len(inner) or inner[end:] != bytes(len(inner) - end):
            raise ProtocolError("record-padding", "padding is malformed")
        if version != PROTOCOL_VERSION:
            raise ProtocolError("version", f"record version {version} is not supported")
        metadata = message[RECORD_HEADER_LEN:body_start]
        return Record(version, record_type, stream_id, metadata, inner[CONTENT_LENGTH.size : end])
