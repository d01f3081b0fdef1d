"""Events the channel core hands to its I/O shell (``events_received()``).

Small frozen dataclasses in the h11 style. Fields that may hold user secrets (header values,
body bytes) are excluded from ``repr`` so that logging an event never leaks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shroud_sdk.channel.evidence import EvidenceMode
from shroud_sdk.channel.usage import SignedUsage


@dataclass(frozen=True)
class HandshakeComplete:
    """The handshake succeeded; records may flow.

    On the client, ``report`` is what the evidence verifier returned and ``usage_key`` the
    bridge's usage-signing key (uncompressed P-256). On the bridge, ``report`` is None.
    ``evidence_mode`` says whether the evidence was a quote over this handshake or the
    bridge's attested key (protocol.md §3.6).
    """

    suite: int
    simulated: bool
    transcript_hash: bytes
    disclose: tuple[str, ...]
    audience: str
    usage_key: bytes = field(repr=False)
    report: object = field(default=None, repr=False)
    evidence_mode: EvidenceMode = EvidenceMode.FRESH


@dataclass(frozen=True)
class RequestReceived:
    """Bridge side: a request's HEADERS. ``disclosed`` are the cleartext metadata values."""

    stream_id: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    disclosed: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponseReceived:
    """Client side: a response's HEADERS."""

    stream_id: int
    status: int
    headers: tuple[tuple[str, str], ...] = field(repr=False)


@dataclass(frozen=True)
class DataReceived:
    """A chunk of a request or response body."""

    stream_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class StreamEnded:
    """The peer's authenticated END for a stream; ``usage`` is verified signed usage or None."""

    stream_id: int
    usage: SignedUsage | None = None


@dataclass(frozen=True)
class StreamReset:
    """The peer abandoned a stream; nothing more arrives on it."""

    stream_id: int
    code: int
    reason: str


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer's authenticated CLOSE. ``unfinished_streams`` never saw END or RESET."""

    code: int
    reason: str
    unfinished_streams: tuple[int, ...] = ()


Event = (
    HandshakeComplete
    | RequestReceived
    | ResponseReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | ConnectionClosed
)
