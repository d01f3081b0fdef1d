"""The wire vocabulary of overload refusals, shared by the bridge (which sends them) and the SDK
(which turns them into typed errors). docs/protocol.md section 9 and docs/deployment.md
("Availability limits") are the normative description.

A bridge that refuses work because a bound is reached says which bound and when to retry, in
one of three places, depending on how far the connection got:

- **before the WebSocket upgrade** (session cap, per-source connections, per-source handshake
  rate): an HTTP response with status 429 or 503, ``Retry-After`` and ``x-shroud-overload``
  headers and an OpenAI-shaped JSON body;
- **during the handshake** (handshake slots busy, for everyone or for this source): close code
  1013 (Try Again Later, RFC 6455 section 7.4.1) with the reason
  ``overloaded: <limit> retry-after=<seconds>``;
- **inside the channel** (requests in flight per session, per source and in all, the
  buffered-bytes budget, shutting down): an authenticated HTTP response on the stream, 429 or
  503, with the same headers and body.

The first two arrive before any key is agreed, so they are unauthenticated: a client may wait
and retry because of them, never weaken anything. ``limit`` names come from the closed set
below; anything else is read as :attr:`OverloadLimit.UNKNOWN`. Deliberately no ``openai``
import here (the bridge imports this module): the SDK's error classes are in
``shroud_sdk.overload``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

OVERLOAD_HEADER: Final = "x-shroud-overload"
RETRY_AFTER_HEADER: Final = "retry-after"
WS_TRY_AGAIN_LATER: Final = 1013
CLOSE_REASON_PREFIX: Final = "overloaded:"
# A client never waits longer than this because of an unauthenticated hint.
MAX_RETRY_AFTER: Final = 60
_CLOSE_REASON: Final = re.compile(r"^overloaded: ([a-z_]{1,40}) retry-after=(\d{1,6})$")


class OverloadLimit(enum.StrEnum):
    """Which bound refused the work. 429 for a client's own share, 503 for the whole bridge."""

    SESSIONS = "sessions"
    CONNECTIONS_PER_SOURCE = "connections_per_source"
    HANDSHAKES_PER_SOURCE = "handshakes_per_source"
    HANDSHAKE_CAPACITY = "handshake_capacity"
    SOURCE_HANDSHAKE_SLOTS = "source_handshake_slots"
    BUFFERED_BYTES = "buffered_bytes"
    SESSION_BUFFERED_BYTES = "session_buffered_bytes"
    SOURCE_BUFFERED_BYTES = "source_buffered_bytes"
    STREAMS_PER_SESSION = "streams_per_session"
    SOURCE_STREAMS = "source_streams"
    STREAMS = "streams"
    UNFINISHED_STREAMS = "unfinished_streams"
    SHUTTING_DOWN = "shutting_down"
    UNKNOWN = "unknown"  # a refusal this SDK does not know the name of (never sent)

    @property
    def status(self) -> int:
        """The HTTP status that carries this refusal: 429 (this client's share) or 503."""
        return 429 if self in _PER_CLIENT else 503

    @property
    def explanation(self) -> str:
        """One sentence a user can act on."""
        return _EXPLANATIONS[self]

    @classmethod
    def parse(cls, text: str) -> OverloadLimit:
        """The limit named ``text``, or ``UNKNOWN``."""
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN


_PER_CLIENT: Final = frozenset(
    {
        OverloadLimit.CONNECTIONS_PER_SOURCE,
        OverloadLimit.HANDSHAKES_PER_SOURCE,
        OverloadLimit.SOURCE_HANDSHAKE_SLOTS,
        OverloadLimit.SESSION_BUFFERED_BYTES,
        OverloadLimit.SOURCE_BUFFERED_BYTES,
        OverloadLimit.STREAMS_PER_SESSION,
        OverloadLimit.SOURCE_STREAMS,
        OverloadLimit.UNFINISHED_STREAMS,
    }
)

_EXPLANATIONS: Final = {
    OverloadLimit.SESSIONS: "the bridge has as many open connections as it accepts",
    OverloadLimit.CONNECTIONS_PER_SOURCE: "this client address has as many open connections "
    "to the bridge as it may have",
    OverloadLimit.HANDSHAKES_PER_SOURCE: "this client address opened new connections faster "
    "than the bridge allows",
    OverloadLimit.HANDSHAKE_CAPACITY: "every handshake slot of the bridge is busy",
    OverloadLimit.SOURCE_HANDSHAKE_SLOTS: "this client address holds as many of the bridge's "
    "handshake slots as it may",
    OverloadLimit.BUFFERED_BYTES: "the bridge holds as many request bytes as its memory "
    "budget allows",
    OverloadLimit.SESSION_BUFFERED_BYTES: "this connection holds as many unsent request "
    "bytes as it may",
    OverloadLimit.SOURCE_BUFFERED_BYTES: "this client address holds as many unsent request "
    "bytes as it may",
    OverloadLimit.STREAMS_PER_SESSION: "this connection has as many requests in flight as the "
    "bridge allows",
    OverloadLimit.SOURCE_STREAMS: "this client address has as many requests in flight as "
    "the bridge allows it",
    OverloadLimit.STREAMS: "the bridge has as many requests in flight as it accepts",
    OverloadLimit.UNFINISHED_STREAMS: "this connection has as many requests with unfinished "
    "bodies as the bridge allows",
    OverloadLimit.SHUTTING_DOWN: "the bridge is shutting down",
    OverloadLimit.UNKNOWN: "the bridge is overloaded",
}


@dataclass(frozen=True)
class Overload:
    """One refusal: which limit, after how many seconds to retry, and its HTTP status.

    ``status`` defaults to the limit's own (429 or 503); only a refusal whose limit is not
    named (``UNKNOWN``) keeps the status it arrived with.
    """

    limit: OverloadLimit
    retry_after: int = 1
    status: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.retry_after <= 999_999:
            raise ValueError("retry_after out of range")
        if self.status == 0 or self.limit is not OverloadLimit.UNKNOWN:
            object.__setattr__(self, "status", self.limit.status)
        if self.status not in (429, 503):
            raise ValueError("an overload is answered with 429 or 503")

    def close_reason(self) -> str:
        """The WebSocket close reason (ASCII, well under the 123-byte limit)."""
        return f"{CLOSE_REASON_PREFIX} {self.limit.value} retry-after={self.retry_after}"

    def headers(self) -> tuple[tuple[str, str], ...]:
        """``Retry-After`` and ``x-shroud-overload``, lower-case names."""
        return ((RETRY_AFTER_HEADER, str(self.retry_after)), (OVERLOAD_HEADER, self.limit.value))

    @classmethod
    def from_close(cls, code: int, reason: str) -> Overload | None:
        """The refusal a close frame carries, or None when it is not one."""
        if code != WS_TRY_AGAIN_LATER:
            return None
        match = _CLOSE_REASON.match(reason)
        if match is None:
            # A 1013 without our reason (an older bridge, a proxy): busy, retry soon.
            return cls(OverloadLimit.UNKNOWN, 1)
        retry = min(int(match.group(2)), MAX_RETRY_AFTER)
        return cls(OverloadLimit.parse(match.group(1)), retry)

    @classmethod
    def from_http(cls, status: int, headers: list[tuple[str, str]]) -> Overload | None:
        """The refusal an HTTP 429/503 answer to the WebSocket upgrade carries, else None.

        A 429 or 503 from a proxy in front of the bridge (nginx ``limit_req``...) is a refusal
        too, with the limit UNKNOWN.
        """
        if status not in (429, 503):
            return None
        values = {name.lower(): value for name, value in headers}
        limit = OverloadLimit.parse(values.get(OVERLOAD_HEADER, "").strip())
        if limit.status != status:
            limit = OverloadLimit.UNKNOWN  # the status decides the error class
        retry_text = values.get(RETRY_AFTER_HEADER, "").strip()
        valid = retry_text.isdigit() and len(retry_text) <= 6
        retry = min(int(retry_text), MAX_RETRY_AFTER) if valid else 1
        return cls(limit, retry, status)
