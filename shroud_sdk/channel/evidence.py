"""The seam between the channel core and attestation: evidence and its two callbacks.

The core treats evidence as opaque except for its encoding (protocol.md §3.3): the bridge's
``EvidenceProvider`` turns the 64-byte REPORTDATA into ``Evidence``; the client's
``EvidenceVerifier`` turns ``Evidence`` back into the REPORTDATA it proves (plus a report), or
raises. The core then compares REPORTDATA itself, so a verifier cannot forget to.

Nothing here verifies anything; real providers and verifiers live with the attestation work,
and test doubles live in tests/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from shroud_sdk.channel.constants import MAX_EVENT_LOGS, MAX_EVIDENCE_TYPE_LEN
from shroud_sdk.errors import HandshakeError


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
    fine).
    """

    type: str
    quote: bytes = field(repr=False)
    event_logs: tuple[EventLog, ...] = ()
    collateral: bytes | None = field(default=None, repr=False)

    def to_cbor_value(self) -> dict[str, Any]:
        """The CBOR map of protocol.md §3.3 (``collateral`` omitted when absent)."""
        value: dict[str, Any] = {
            "type": self.type,
            "quote": self.quote,
            "event_logs": [{"format": log.format, "data": log.data} for log in self.event_logs],
        }
        if self.collateral is not None:
            value["collateral"] = self.collateral
        return value

    @classmethod
    def from_cbor_value(cls, value: object) -> Evidence:
        """Validate the decoded evidence map's shape; raise ``HandshakeError`` if wrong."""
        if not isinstance(value, dict):
            raise HandshakeError("evidence-format", "evidence is not a map")
        _exact_keys(value, {"type", "quote", "event_logs"}, {"collateral"}, "evidence")
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
        return cls(kind, quote, tuple(parsed), collateral)


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
    """Bridge side: produce evidence over exactly this 64-byte REPORTDATA, or raise.

    Called synchronously from ``BridgeConnection.receive_data``; an asyncio shell should run
    that call in a worker thread because quote generation blocks.
    """

    def __call__(self, report_data: bytes, /) -> Evidence: ...


class EvidenceVerifier(Protocol):
    """Client side: verify ``evidence`` for the negotiated ``suite``; return what it proves.

    Raise to refuse (an error subclassing ``HandshakeError`` passes through unchanged; any
    other exception is wrapped in ``HandshakeError(check="evidence")``). The verifier must
    refuse simulated evidence unless ``suite`` is a simulated suite, and vice versa.
    """

    def __call__(self, evidence: Evidence, suite: int, /) -> VerifiedEvidence: ...
