"""Signed usage: token counts the bridge signs so an operator can bill but not forge them.

The bridge's per-process usage-signing key (ECDSA P-256) is bound into REPORTDATA, so a
verified quote vouches for it. The signature covers a deterministic-CBOR array with a domain
label, the session's transcript hash and the stream id (protocol.md §7.3), so usage cannot be
moved to another stream or session. Pure functions; no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import LABEL_USAGE, SIGNATURE_LEN
from shroud_sdk.channel.ecdsa import sign_raw, verify_raw
from shroud_sdk.errors import IntegrityError, ProtocolError

_MAX_TOKENS = (1 << 63) - 1


@dataclass(frozen=True)
class Usage:
    """Token counts of one response, as OpenAI reports them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def __post_init__(self) -> None:
        for value in (self.prompt_tokens, self.completion_tokens, self.total_tokens):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("token counts must be integers")
            if not 0 <= value <= _MAX_TOKENS:
                raise ValueError("token counts must be non-negative 63-bit integers")


@dataclass(frozen=True)
class SignedUsage:
    """Usage with the bridge's signature; ``signature`` is raw r || s."""

    usage: Usage
    signature: bytes

    def to_metadata(self) -> bytes:
        """The END record's cleartext metadata (protocol.md §7.3)."""
        return cbor.encode(
            {
                "usage": {
                    "prompt_tokens": self.usage.prompt_tokens,
                    "completion_tokens": self.usage.completion_tokens,
                    "total_tokens": self.usage.total_tokens,
                },
                "sig": self.signature,
            }
        )

    @classmethod
    def from_metadata(cls, metadata: bytes) -> SignedUsage:
        """Parse END metadata strictly; raise ``ProtocolError`` on any deviation."""
        value: Any = cbor.decode(metadata, max_len=len(metadata))
        if not isinstance(value, dict) or set(value) != {"usage", "sig"}:
            raise ProtocolError("usage-format", "END metadata must be {usage, sig}")
        usage, sig = value["usage"], value["sig"]
        keys = {"prompt_tokens", "completion_tokens", "total_tokens"}
        if not isinstance(usage, dict) or set(usage) != keys:
            raise ProtocolError("usage-format", "usage must have exactly the three token counts")
        if not isinstance(sig, bytes) or len(sig) != SIGNATURE_LEN:
            raise ProtocolError("usage-format", "usage signature must be 64 bytes")
        try:
            parsed = Usage(
                usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
            )
        except ValueError as exc:
            raise ProtocolError("usage-format", str(exc)) from None
        return cls(parsed, sig)


def usage_to_be_signed(transcript_hash: bytes, stream_id: int, usage: Usage) -> bytes:
    """The exact bytes signed (protocol.md §7.3).

    CBOR array: [label, transcript hash, stream id, prompt, completion, total].
    """
    return cbor.encode(
        [
            LABEL_USAGE,
            transcript_hash,
            stream_id,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
        ]
    )


def sign_usage(
    key: ec.EllipticCurvePrivateKey, transcript_hash: bytes, stream_id: int, usage: Usage
) -> SignedUsage:
    """Sign ``usage`` for ``stream_id`` of the session with ``transcript_hash``."""
    return SignedUsage(usage, sign_raw(key, usage_to_be_signed(transcript_hash, stream_id, usage)))


def verify_usage(
    public_key: bytes, transcript_hash: bytes, stream_id: int, signed: SignedUsage
) -> None:
    """Raise ``IntegrityError`` unless ``signed`` is the bridge's signature for this stream."""
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    sig = signed.signature
    if len(sig) != SIGNATURE_LEN:
        raise IntegrityError("usage-signature", "usage signature has the wrong length")
    if not verify_raw(key, sig, usage_to_be_signed(transcript_hash, stream_id, signed.usage)):
        raise IntegrityError(
            "usage-signature", f"usage signature for stream {stream_id} does not verify"
        )
