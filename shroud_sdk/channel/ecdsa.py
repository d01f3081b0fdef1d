"""ECDSA P-256 with SHA-256 in the raw ``r || s`` form the protocol carries (64 bytes).

Both signatures of shroud/1 use it: the usage signature (protocol.md §7.3) and the attested
key's transcript signature (protocol.md §4.4). ``cryptography`` speaks DER; this converts.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from shroud_sdk.channel.constants import SIGNATURE_LEN

_COORD_LEN = SIGNATURE_LEN // 2


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 over ``data``; the signature as ``r || s``, 32 bytes each."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_COORD_LEN, "big") + s.to_bytes(_COORD_LEN, "big")


def verify_raw(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` (``r || s``) is ``key``'s signature over ``data``."""
    if len(signature) != SIGNATURE_LEN:
        return False
    der = encode_dss_signature(
        int.from_bytes(signature[:_COORD_LEN], "big"),
        int.from_bytes(signature[_COORD_LEN:], "big"),
    )
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
