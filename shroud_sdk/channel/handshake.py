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

from cryptography.hazmat.primitives.asymmetric import ec, mlkem

from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import (
    DISCLOSABLE_FIELDS,
    FIN_LEN,
    HYBRID_SUITES,
    LABEL_ATTESTED_KEY,
    LABEL_REPORT_DATA,
    LABEL_TRANSCRIPT,
    LABEL_TRANSCRIPT_SIGNATURE,
    MAX_AUDIENCE_LEN,
    MAX_BRIDGE_HELLO_LEN,
    MAX_CLIENT_HELLO_LEN,
    MAX_OFFERED_SUITES,
    MLKEM768_CIPHERTEXT_LEN,
    MLKEM768_ENCAPSULATION_KEY_LEN,
    NONCE_LEN,
    P256_POINT_LEN,
    P256_UNCOMPRESSED_PREFIX,
    PROTOCOL_VERSION,
    SIGNATURE_LEN,
)
from shroud_sdk.channel.ecdsa import verify_raw
from shroud_sdk.channel.evidence import AttestedKey, Evidence
from shroud_sdk.errors import HandshakeError


@dataclass(frozen=True)
class ClientHello:
    """protocol.md §3.2. ``suites`` in preference order; ``disclose`` sorted, unique.

    ``kem`` (an ML-KEM-768 encapsulation key) is present exactly when a hybrid suite is offered.
    ``fresh`` asks for a quote over this handshake instead of the bridge's attested key
    (protocol.md §3.6); on the wire ``"fresh": true`` is present only then.
    """

    version: int
    suites: tuple[int, ...]
    nonce: bytes = field(repr=False)
    kx: bytes = field(repr=False)
    audience: str
    disclose: tuple[str, ...]
    kem: bytes | None = field(default=None, repr=False)
    fresh: bool = False

    def encode(self) -> bytes:
        """Deterministic CBOR of the ClientHello map."""
        value: dict[str, Any] = {
            "v": self.version,
            "suites": list(self.suites),
            "nonce": self.nonce,
            "kx": self.kx,
            "aud": self.audience,
            "disclose": list(self.disclose),
        }
        if self.kem is not None:
            value["kem"] = self.kem
        if self.fresh:
            value["fresh"] = True
        return cbor.encode(value)

    @classmethod
    def decode(cls, data: bytes) -> ClientHello:
        """Strictly parse ClientHello bytes; raise ``HandshakeError``/``MalformedCborError``."""
        value = cbor.decode(data, max_len=MAX_CLIENT_HELLO_LEN)
        _require_map(
            value,
            {"v", "suites", "nonce", "kx", "aud", "disclose"},
            "ClientHello",
            {"kem", "fresh"},
        )
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
        kem = value.get("kem")
        if (kem is not None) != any(s in HYBRID_SUITES for s in suites):
            raise HandshakeError("client-hello", "kem must be present exactly when offering hybrid")
        # One encoding per meaning: attested-key mode is the absence of the key, never false.
        if "fresh" in value and value["fresh"] is not True:
            raise HandshakeError("client-hello", "fresh, when present, must be true")
        return cls(
            version,
            tuple(suites),
            nonce,
            check_p256_point(value["kx"], "client key share"),
            audience,
            check_disclose(value["disclose"]),
            None if kem is None else check_mlkem_key(kem),
            "fresh" in value,
        )


@dataclass(frozen=True)
class BridgeHelloCore:
    """protocol.md §3.3: everything in BridgeHello except ``fin``.

    ``kem_ct`` (an ML-KEM-768 ciphertext) is present exactly when the suite is hybrid.
    """

    version: int
    suite: int
    kx: bytes = field(repr=False)
    usage_key: bytes = field(repr=False)
    disclose: tuple[str, ...]
    evidence: Evidence
    kem_ct: bytes | None = field(default=None, repr=False)

    def encode(self) -> bytes:
        """Deterministic CBOR of the core map; these bytes are hashed into the transcript."""
        value: dict[str, Any] = {
            "v": self.version,
            "suite": self.suite,
            "kx": self.kx,
            "usage_key": self.usage_key,
            "disclose": list(self.disclose),
            "evidence": self.evidence.to_cbor_value(),
        }
        if self.kem_ct is not None:
            value["kem_ct"] = self.kem_ct
        return cbor.encode(value)

    @classmethod
    def decode(cls, data: bytes) -> BridgeHelloCore:
        """Strictly parse the core bytes taken from a BridgeHello."""
        value = cbor.decode(data, max_len=MAX_BRIDGE_HELLO_LEN)
        _require_map(
            value,
            {"v", "suite", "kx", "usage_key", "disclose", "evidence"},
            "BridgeHello",
            {"kem_ct"},
        )
        version = _version(value["v"])
        suite = value["suite"]
        if not _is_uint(suite, 0xFFFF):
            raise HandshakeError("bridge-hello", "suite must be a uint16")
        kem_ct = value.get("kem_ct")
        if (kem_ct is not None) != (suite in HYBRID_SUITES):
            raise HandshakeError("bridge-hello", "kem_ct must be present exactly for hybrid")
        if kem_ct is not None and (
            not isinstance(kem_ct, bytes) or len(kem_ct) != MLKEM768_CIPHERTEXT_LEN
        ):
            raise HandshakeError("key-share", "kem_ct is not an ML-KEM-768 ciphertext")
        evidence = Evidence.from_cbor_value(value["evidence"])
        if evidence.attested_key is not None:
            check_p256_point(evidence.attested_key.public_key, "attested key")
        return cls(
            version,
            suite,
            check_p256_point(value["kx"], "bridge key share"),
            check_p256_point(value["usage_key"], "usage key"),
            check_disclose(value["disclose"]),
            evidence,
            kem_ct,
        )


def encode_bridge_hello(core_bytes: bytes, fin: bytes, signature: bytes | None = None) -> bytes:
    """BridgeHello = ``[core, fin]`` (fresh) or ``[core, sig, fin]`` (attested key), CBOR.

    The core is kept as exact bytes so the transcript hashes what was received.
    """
    if signature is None:
        return cbor.encode([core_bytes, fin])
    return cbor.encode([core_bytes, signature, fin])


def decode_bridge_hello(data: bytes) -> tuple[bytes, bytes | None, bytes]:
    """Split BridgeHello bytes into (core bytes, signature or None, fin) after strict decoding.

    Whether a signature *should* be there is decided by the core's evidence mode, which the
    caller checks against it (protocol.md §3.5 step 3).
    """
    value = cbor.decode(data, max_len=MAX_BRIDGE_HELLO_LEN)
    if (
        not isinstance(value, list)
        or len(value) not in (2, 3)
        or not all(isinstance(item, bytes) for item in value)
    ):
        raise HandshakeError(
            "bridge-hello", "BridgeHello must be [core: bstr, fin: bstr] or [core, sig, fin]"
        )
    core_bytes, *signature, fin = value
    if len(fin) != FIN_LEN:
        raise HandshakeError("bridge-hello", f"fin must be {FIN_LEN} bytes")
    if signature and len(signature[0]) != SIGNATURE_LEN:
        raise HandshakeError("bridge-hello", f"sig must be {SIGNATURE_LEN} bytes")
    return core_bytes, signature[0] if signature else None, fin


def compute_report_data(
    client_hello: bytes, suite: int, bridge_kx: bytes, usage_key: bytes, kem_ct: bytes = b""
) -> bytes:
    """REPORTDATA = SHA-512(label || u32 len(CH) || CH || u16 suite || kx || usage key
    || kem_ct), where ``kem_ct`` is empty except for the hybrid suite (protocol.md §4.1)."""
    return hashlib.sha512(
        LABEL_REPORT_DATA
        + struct.pack(">I", len(client_hello))
        + client_hello
        + struct.pack(">H", suite)
        + bridge_kx
        + usage_key
        + kem_ct
    ).digest()


def compute_key_report_data(attested_key: AttestedKey) -> bytes:
    """REPORTDATA = SHA-512(label || attested key || u64 not_before || u64 not_after)
    for attested-key evidence (protocol.md §4.3)."""
    return hashlib.sha512(
        LABEL_ATTESTED_KEY
        + attested_key.public_key
        + struct.pack(">QQ", attested_key.not_before, attested_key.not_after)
    ).digest()


def transcript_signature_input(transcript_hash: bytes) -> bytes:
    """What the attested key signs: ``label || TH`` (protocol.md §4.4)."""
    return LABEL_TRANSCRIPT_SIGNATURE + transcript_hash


def verify_transcript_signature(
    public_key: bytes, transcript_hash: bytes, signature: bytes
) -> None:
    """Check ``signature`` (raw ``r || s``) by the attested key over the transcript; raise
    ``HandshakeError("transcript-signature")`` if it does not verify."""
    key = load_p256_point(public_key, "attested key")
    if not verify_raw(key, signature, transcript_signature_input(transcript_hash)):
        raise HandshakeError("transcript-signature", "the attested key did not sign this handshake")


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


def check_mlkem_key(value: object) -> bytes:
    """Accept only a well-formed ML-KEM-768 encapsulation key (FIPS 203 §7.2 input checks)."""
    if not isinstance(value, bytes) or len(value) != MLKEM768_ENCAPSULATION_KEY_LEN:
        raise HandshakeError("key-share", "kem is not an ML-KEM-768 encapsulation key")
    load_mlkem_key(value)
    return value


def load_mlkem_key(value: bytes) -> mlkem.MLKEM768PublicKey:
    """Load an encapsulation key already checked by ``check_mlkem_key``."""
    try:
        return mlkem.MLKEM768PublicKey.from_public_bytes(value)
    except ValueError:
        raise HandshakeError("key-share", "kem is not a valid ML-KEM-768 key") from None


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


def _require_map(
    value: Any, keys: set[str], what: str, optional: frozenset[str] | set[str] = frozenset()
) -> None:
    if not isinstance(value, dict) or not keys <= set(value) <= keys | optional:
        found = sorted(map(str, value)) if isinstance(value, dict) else type(value).__name__
        raise HandshakeError("hello-format", f"{what} needs exactly {sorted(keys)}, got {found}")
