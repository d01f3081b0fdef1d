"""shroud/1 handshake messages and the two hashes computed over their exact bytes.

ClientHello and BridgeHello (protocol.md §3) are parsed strictly into frozen dataclasses;
REPORTDATA and the transcript hash (protocol.md §4) are computed over the bytes as received,
never over a re-encoding. This module holds no state and no keys: ``connection`` drives it.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import (
    DISCLOSABLE_FIELDS,
    FIN_LEN,
    LABEL_REPORT_DATA,
    LABEL_TRANSCRIPT,
    MAX_AUDIENCE_LEN,
    MAX_BRIDGE_HELLO_LEN,
    MAX_CLIENT_HELLO_LEN,
    MAX_OFFERED_SUITES,
    NONCE_LEN,
    P256_POINT_LEN,
    P256_UNCOMPRESSED_PREFIX,
    PROTOCOL_VERSION,
)
from shroud_sdk.channel.evidence import Evidence
from shroud_sdk.errors import HandshakeError


@dataclass(frozen=True)
class ClientHello:
    """protocol.md §3.1. ``suites`` in preference order; ``disclose`` sorted, unique."""

    version: int
    suites: tuple[int, ...]
    nonce: bytes = field(repr=False)
    kx: bytes = field(repr=False)
    audience: str
    disclose: tuple[str, ...]

    def encode(self) -> bytes:
        """Deterministic CBOR of the ClientHello map."""
        return cbor.encode(
            {
                "v": self.version,
                "suites": list(self.suites),
                "nonce": self.nonce,
                "kx": self.kx,
                "aud": self.audience,
                "disclose": list(self.disclose),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> ClientHello:
        """Strictly parse ClientHello bytes; raise ``HandshakeError``/``MalformedCborError``."""
        value = cbor.decode(data, max_len=MAX_CLIENT_HELLO_LEN)
        _require_map(value, {"v", "suites", "nonce", "kx", "aud", "disclose"}, "ClientHello")
        version = _version(value["v"])
        suites = value["suites"]
        if (
            not isinstance(suites, list)
            or not 0 < len(suites) <= MAX_OFFERED_SUITES
            or not all(_is_uint(s, 0xFFFF) for s in suites)
            or len(set(suites)) != len(suites)
        ):
            raise HandshakeError("client-hello", "suites must be 1-8 unique uint16 values")
        nonce = value["nonce"]
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_LEN:
            raise HandshakeError("client-hello", f"nonce must be {NONCE_LEN} bytes")
        audience = value["aud"]
        if not isinstance(audience, str) or not 0 < len(audience) <= MAX_AUDIENCE_LEN:
            raise HandshakeError("client-hello", "aud must be a 1-255 character text string")
        return cls(
            version,
            tuple(suites),
            nonce,
            check_p256_point(value["kx"], "client key share"),
            audience,
            check_disclose(value["disclose"]),
        )


@dataclass(frozen=True)
class BridgeHelloCore:
    """protocol.md §3.2: everything in BridgeHello except ``fin``."""

    version: int
    suite: int
    kx: bytes = field(repr=False)
    usage_key: bytes = field(repr=False)
    disclose: tuple[str, ...]
    evidence: Evidence

    def encode(self) -> bytes:
        """Deterministic CBOR of the core map; these bytes are hashed into the transcript."""
        return cbor.encode(
            {
                "v": self.version,
                "suite": self.suite,
                "kx": self.kx,
                "usage_key": self.usage_key,
                "disclose": list(self.disclose),
                "evidence": self.evidence.to_cbor_value(),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> BridgeHelloCore:
        """Strictly parse the core bytes taken from a BridgeHello."""
        value = cbor.decode(data, max_len=MAX_BRIDGE_HELLO_LEN)
        _require_map(
            value, {"v", "suite", "kx", "usage_key", "disclose", "evidence"}, "BridgeHello"
        )
        version = _version(value["v"])
        suite = value["suite"]
        if not _is_uint(suite, 0xFFFF):
            raise HandshakeError("bridge-hello", "suite must be a uint16")
        return cls(
            version,
            suite,
            check_p256_point(value["kx"], "bridge key share"),
            check_p256_point(value["usage_key"], "usage key"),
            check_disclose(value["disclose"]),
            Evidence.from_cbor_value(value["evidence"]),
        )


def encode_bridge_hello(core_bytes: bytes, fin: bytes) -> bytes:
    """BridgeHello = CBOR array ``[core: bstr, fin: bstr]`` (the core kept as exact bytes)."""
    return cbor.encode([core_bytes, fin])


def decode_bridge_hello(data: bytes) -> tuple[bytes, bytes]:
    """Split BridgeHello bytes into (core bytes, fin) after strict decoding."""
    value = cbor.decode(data, max_len=MAX_BRIDGE_HELLO_LEN)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], bytes)
        or not isinstance(value[1], bytes)
    ):
        raise HandshakeError("bridge-hello", "BridgeHello must be [core: bstr, fin: bstr]")
    core_bytes, fin = value
    if len(fin) != FIN_LEN:
        raise HandshakeError("bridge-hello", f"fin must be {FIN_LEN} bytes")
    return core_bytes, fin


def compute_report_data(
    client_hello: bytes, suite: int, bridge_kx: bytes, usage_key: bytes
) -> bytes:
    """REPORTDATA = SHA-512(label || u32 len(CH) || CH || u16 suite || kx || usage key)."""
    return hashlib.sha512(
        LABEL_REPORT_DATA
        + struct.pack(">I", len(client_hello))
        + client_hello
        + struct.pack(">H", suite)
        + bridge_kx
        + usage_key
    ).digest()


def compute_transcript_hash(client_hello: bytes, bridge_hello_core: bytes) -> bytes:
    """TH = SHA-256(label || u32 len(CH) || CH || u32 len(core) || core)."""
    return hashlib.sha256(
        LABEL_TRANSCRIPT
        + struct.pack(">I", len(client_hello))
        + client_hello
        + struct.pack(">I", len(bridge_hello_core))
        + bridge_hello_core
    ).digest()


def check_p256_point(value: object, what: str) -> bytes:
    """Accept only an uncompressed, on-curve P-256 point (SEC 1 §2.3.4); return its bytes."""
    if (
        not isinstance(value, bytes)
        or len(value) != P256_POINT_LEN
        or value[0] != P256_UNCOMPRESSED_PREFIX
    ):
        raise HandshakeError("key-share", f"{what} is not an uncompressed P-256 point")
    load_p256_point(value, what)
    return value


def load_p256_point(value: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """Load a point already checked by ``check_p256_point``; off-curve points are refused."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), value)
    except ValueError:
        raise HandshakeError("key-share", f"{what} is not a point on P-256") from None


def check_disclose(value: object) -> tuple[str, ...]:
    """A disclose list: allowlisted field names, strictly sorted (so unique)."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise HandshakeError("disclose", "disclose must be an array of text strings")
    for name in value:
        if name not in DISCLOSABLE_FIELDS:
            raise HandshakeError("disclose", f"field {name!r} is not disclosable")
    if any(a >= b for a, b in itertools.pairwise(value)):
        raise HandshakeError("disclose", "disclose must be sorted and without duplicates")
    return tuple(value)


def _is_uint(value: object, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def _version(value: object) -> int:
    if value != PROTOCOL_VERSION or not _is_uint(value, 0xFF):
        raise HandshakeError("version", f"unsupported protocol version {value!r}")
    return PROTOCOL_VERSION


def _require_map(value: Any, keys: set[str], what: str) -> None:
    if not isinstance(value, dict) or set(value) != keys:
        found = sorted(map(str, value)) if isinstance(value, dict) else type(value).__name__
        raise HandshakeError("hello-format", f"{what} needs exactly {sorted(keys)}, got {found}")
