"""The seam between the channel core and attestation: evidence and its callbacks.

The core treats evidence as opaque except for its encoding (protocol.md §3.3). Evidence comes
in two modes (protocol.md §3.6), chosen by the client:

- *fresh*: the bridge's ``EvidenceProvider`` turns the handshake's 64-byte REPORTDATA into
  ``Evidence`` (one quote per handshake);
- *attested key*: the bridge's ``KeyEvidenceProvider`` hands out its current ``KeyEvidence``:
  evidence whose quote binds an ``AttestedKey`` (a public key and a validity window), plus a
  ``TranscriptSigner`` holding the private half, which signs each handshake's transcript.

Either way the client's ``EvidenceVerifier`` turns ``Evidence`` back into the REPORTDATA it
proves (plus a report), or raises. The core then compares REPORTDATA itself, and checks the
attested key's window and transcript signature itself, so a verifier cannot forget to.

Nothing here verifies anything; real providers and verifiers live with the attestation work,
and test doubles live in tests/.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from shroud_sdk.channel.constants import (
    CLOCK_SKEW_SECONDS,
    MAX_EVENT_LOGS,
    MAX_EVIDENCE_TYPE_LEN,
    MAX_WINDOW_BOUND,
    P256_POINT_LEN,
)
from shroud_sdk.errors import HandshakeError


class EvidenceMode(enum.Enum):
    """How the evidence binds the handshake (protocol.md §3.6)."""

    FRESH = "fresh"  # a quote over this handshake's REPORTDATA
    ATTESTED_KEY = "attested-key"  # a quote over a key that signs this handshake


@dataclass(frozen=True)
class AttestedKey:
    """The public half of a bridge's attested key and the window its quote vouches for it.

    ``public_key`` is an uncompressed P-256 point; the window is ``[not_before, not_after)``
    in UNIX seconds, as the bridge's clock read it when the quote was made.
    """

    public_key: bytes = field(repr=False)
    not_before: int
    not_after: int

    @property
    def lifetime(self) -> int:
        """``not_after - not_before`` in seconds."""
        return self.not_after - self.not_before

    def window_refusal(self, now: int) -> str | None:
        """Why a client whose clock reads ``now`` must refuse this key, or None when it is
        inside its window (protocol.md §3.6: ``not_before - 60 s <= now < not_after``)."""
        if now < self.not_before - CLOCK_SKEW_SECONDS:
            return (
                f"the attested key is not valid before {self.not_before} (now {now}, "
                f"{CLOCK_SKEW_SECONDS} s skew allowed): check this machine's clock"
            )
        if now >= self.not_after:
            return f"the attested key expired at {self.not_after} (now {now})"
        return None

    def to_cbor_value(self) -> dict[str, Any]:
        """The CBOR map of protocol.md §3.3 (``attested_key``)."""
        return {"key": self.public_key, "not_before": self.not_before, "not_after": self.not_after}

    @classmethod
    def from_cbor_value(cls, value: object) -> AttestedKey:
        """Validate the map's shape; the point itself is checked with the other key shares."""
        if not isinstance(value, dict):
            raise HandshakeError("evidence-format", "attested_key is not a map")
        _exact_keys(value, {"key", "not_before", "not_after"}, set(), "attested_key")
        key, not_before, not_after = value["key"], value["not_before"], value["not_after"]
        if not isinstance(key, bytes) or len(key) != P256_POINT_LEN:
            raise HandshakeError("evidence-format", "attested key is not a 65-byte P-256 point")
        if not _is_u64(not_before) or not _is_u64(not_after):
            raise HandshakeError("evidence-format", "not_before/not_after must be u64 seconds")
        if not not_before < not_after:
            raise HandshakeError("evidence-format", "the validity window is empty")
        return cls(key, not_before, not_after)


@dataclass(frozen=True)
class EventLog:
    """One event log shipped with the quote; ``format`` names its encoding (e.g. ``ccel``)."""

    format: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Evidence:
    """What BridgeHello carries to prove the bridge's identity and REPORTDATA.

    ``type`` is e.g. ``"tdx"``; ``quote`` the raw quote; ``collateral`` optional
    QuoteCollateralV3 JSON bytes the bridge fetched (Intel-signed, so untrusted transport is
    fine). ``attested_key`` is present exactly in attested-key mode: the quote then binds that
    key and window instead of the handshake.
    """

    type: str
    quote: bytes = field(repr=False)
    event_logs: tuple[EventLog, ...] = ()
    collateral: bytes | None = field(default=None, repr=False)
    attested_key: AttestedKey | None = None

    @property
    def mode(self) -> EvidenceMode:
        """Attested-key mode when the evidence carries an attested key, else fresh."""
        return EvidenceMode.FRESH if self.attested_key is None else EvidenceMode.ATTESTED_KEY

    def to_cbor_value(self, *, with_collateral: bool = True) -> dict[str, Any]:
        """The CBOR map of protocol.md §3.3 (``collateral``/``attested_key`` when present)."""
        value: dict[str, Any] = {
            "type": self.type,
            "quote": self.quote,
            "event_logs": [{"format": log.format, "data": log.data} for log in self.event_logs],
        }
        if self.collateral is not None and with_collateral:
            value["collateral"] = self.collateral
        if self.attested_key is not None:
            value["attested_key"] = self.attested_key.to_cbor_value()
        return value

    @classmethod
    def from_cbor_value(cls, value: object) -> Evidence:
        """Validate the decoded evidence map's shape; raise ``HandshakeError`` if wrong."""
        if not isinstance(value, dict):
            raise HandshakeError("evidence-format", "evidence is not a map")
        _exact_keys(
            value, {"type", "quote", "event_logs"}, {"collateral", "attested_key"}, "evidence"
        )
        kind, quote, logs = value["type"], value["quote"], value["event_logs"]
        if not isinstance(kind, str) or not 0 < len(kind) <= MAX_EVIDENCE_TYPE_LEN:
            raise HandshakeError("evidence-format", "evidence type must be a short text string")
        if not isinstance(quote, bytes) or not quote:
            raise HandshakeError("evidence-format", "quote must be a non-empty byte string")
        if not isinstance(logs, list) or len(logs) > MAX_EVENT_LOGS:
            raise HandshakeError("evidence-format", "event_logs must be a short array")
        parsed: list[EventLog] = []
        for entry in logs:
            if not isinstance(entry, dict):
                raise HandshakeError("evidence-format", "event log entry is not a map")
            _exact_keys(entry, {"format", "data"}, set(), "event log")
            fmt, data = entry["format"], entry["data"]
            if not isinstance(fmt, str) or not isinstance(data, bytes):
                raise HandshakeError("evidence-format", "event log format/data have wrong types")
            parsed.append(EventLog(fmt, data))
        collateral = value.get("collateral")
        if collateral is not None and not isinstance(collateral, bytes):
            raise HandshakeError("evidence-format", "collateral must be a byte string")
        attested = value.get("attested_key")
        attested_key = None if attested is None else AttestedKey.from_cbor_value(attested)
        return cls(kind, quote, tuple(parsed), collateral, attested_key)


def _is_u64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_WINDOW_BOUND


def _exact_keys(value: dict[Any, Any], required: set[str], optional: set[str], what: str) -> None:
    keys = set(value)
    if missing := required - keys:
        raise HandshakeError("evidence-format", f"{what} lacks {sorted(missing)}")
    if unknown := keys - required - optional:
        names = sorted(map(str, unknown))
        raise HandshakeError("evidence-format", f"{what} has unknown keys {names}")


class VerifiedEvidence(Protocol):
    """What a verifier returns: the REPORTDATA the evidence proves, and its report."""

    @property
    def report_data(self) -> bytes: ...

    @property
    def report(self) -> object: ...


class EvidenceProvider(Protocol):
    """Bridge side, fresh mode: evidence over exactly this 64-byte REPORTDATA, or raise.

    Called synchronously from ``BridgeConnection.receive_data``; an asyncio shell should run
    that call in a worker thread because quote generation blocks.
    """

    def __call__(self, report_data: bytes, /) -> Evidence: ...


class TranscriptSigner(Protocol):
    """The private half of an attested key: ECDSA P-256 with SHA-256 over ``data``.

    Returns the raw signature ``r || s`` (64 bytes). Implementations keep the key in memory
    only and never show it in a repr.
    """

    def sign(self, data: bytes, /) -> bytes: ...


@dataclass(frozen=True)
class KeyEvidence:
    """Bridge side, attested-key mode: the current evidence and the key it vouches for.

    One object is one consistent snapshot (a rotation replaces the whole object), so the
    evidence sent and the key that signs can never come from two different rotations.
    """

    evidence: Evidence
    signer: TranscriptSigner = field(repr=False)

    def __post_init__(self) -> None:
        if self.evidence.attested_key is None:
            raise ValueError("attested-key evidence must carry its attested key")


class KeyEvidenceProvider(Protocol):
    """Bridge side, attested-key mode: the current ``KeyEvidence``, or raise.

    Called synchronously from ``BridgeConnection.receive_data`` and must not block: it hands
    out what a background rotation prepared. It raises when it has no evidence that is still
    valid (the bridge then refuses the handshake, protocol.md §9).
    """

    def __call__(self) -> KeyEvidence: ...


class EvidenceVerifier(Protocol):
    """Client side: verify ``evidence`` for the negotiated ``suite``; return what it proves.

    Raise to refuse (an error subclassing ``HandshakeError`` passes through unchanged; any
    other exception is wrapped in ``HandshakeError(check="evidence")``). The verifier must
    refuse simulated evidence unless ``suite`` is a simulated suite, and vice versa. For
    attested-key evidence it judges whatever its policy says of the window (e.g. its longest
    accepted lifetime); the core checks the window against its clock, the REPORTDATA binding
    and the transcript signature itself.

    A verifier may have a ``requires_fresh_quote`` attribute: when true, the SDK's session asks
    the bridge for fresh mode (a quote per handshake) instead of its attested key.
    """

    def __call__(self, evidence: Evidence, suite: int, /) -> VerifiedEvidence: ...
