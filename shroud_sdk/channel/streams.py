"""Per-stream state machines and the table of a connection's streams (protocol.md §6.4).

Each stream has two halves: what this side sends (``local``) and what the peer sends
(``remote``). Each half follows one small transition table, h11-style; an illegal transition
raises an error naming the state and the record type. RESET ends both halves at once.
Stream ids are chosen by the client, strictly increasing, never reused.

This module knows nothing about encryption or record contents.
"""

from __future__ import annotations

import enum
from collections import OrderedDict

from shroud_sdk.channel.constants import MAX_STREAM_ID, RecordType
from shroud_sdk.errors import ChannelError, LocalProtocolError, ProtocolError


class HalfState(enum.Enum):
    """State of one direction of a stream."""

    IDLE = "idle"  # no HEADERS yet
    OPEN = "open"  # HEADERS sent, DATA may follow
    ENDED = "ended"  # END sent; nothing more in this direction

    # Members are singletons compared by identity, so identity hashing is equivalent to
    # Enum's (a Python-level hash of the name) and keeps the transition lookup, done for
    # every record sent and received, in C.
    __hash__ = object.__hash__


# Read on every record (``Stream.done``): a module global, not an Enum class lookup.
_ENDED = HalfState.ENDED

# The whole per-half state machine. RESET is handled per stream (it ends both halves).
_TRANSITIONS: dict[tuple[HalfState, RecordType], HalfState] = {
    (HalfState.IDLE, RecordType.HEADERS): HalfState.OPEN,
    (HalfState.OPEN, RecordType.DATA): HalfState.OPEN,
    (HalfState.OPEN, RecordType.END): HalfState.ENDED,
}


def next_state(
    state: HalfState, record_type: RecordType, error: type[ChannelError], stream_id: int
) -> HalfState:
    """Look up a transition; raise ``error`` naming the refused (state, record) pair."""
    try:
        return _TRANSITIONS[state, record_type]
    except KeyError:
        raise error(
            "stream-state",
            f"stream {stream_id}: {record_type.name} not allowed in state {state.value}",
        ) from None


class Stream:
    """Both halves of one stream, plus whether it was reset."""

    __slots__ = ("local", "remote", "reset", "stream_id")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.local = HalfState.IDLE
        self.remote = HalfState.IDLE
        self.reset = False

    @property
    def done(self) -> bool:
        """True once reset, or once both halves have ended."""
        return self.reset or (self.local is _ENDED and self.remote is _ENDED)


class StreamTable:
    """A connection's live streams, its concurrency limit and the never-reuse rule.

    After this side resets a stream, records the peer sent before seeing the RESET can still
    arrive; their ids are remembered (bounded) so they are ignored instead of being treated
    as a protocol violation.
    """

    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = max_concurrent
        self.streams: dict[int, Stream] = {}
        self.highest_id = 0
        self._locally_reset: OrderedDict[int, None] = OrderedDict()
        self._locally_reset_cap = max(64, 8 * max_concurrent)

    def open(self, stream_id: int, error: type[ChannelError]) -> Stream:
        """Create a stream; ids must increase and stay under the concurrency limit."""
        if not self.highest_id < stream_id <= MAX_STREAM_ID:
            raise error("stream-id", f"stream id {stream_id} reused or out of order")
        if len(self.streams) >= self.max_concurrent:
            raise error("max-streams", f"more than {self.max_concurrent} concurrent streams")
        self.highest_id = stream_id
        stream = self.streams[stream_id] = Stream(stream_id)
        return stream

    def next_id(self) -> int:
        """The id the client uses for its next request."""
        if self.highest_id >= MAX_STREAM_ID:
            raise LocalProtocolError("stream-id", "stream ids exhausted; open a new connection")
        return self.highest_id + 1

    def get_local(self, stream_id: int) -> Stream:
        """The stream this side wants to send on, or ``LocalProtocolError``."""
        stream = self.streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError("stream-state", f"stream {stream_id} is not open")
        return stream

    def get_remote(self, stream_id: int) -> Stream | None:
        """The stream a received record belongs to; None means "ignore: we reset it"."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        if stream_id in self._locally_reset:
            return None
        raise ProtocolError("stream-state", f"record for unknown or closed stream {stream_id}")

    def retire(self, stream: Stream, *, locally_reset: bool = False) -> None:
        """Forget a finished stream (its id stays used forever via ``highest_id``)."""
        self.streams.pop(stream.stream_id, None)
        if locally_reset and stream.remote is not HalfState.ENDED:
            self._locally_reset[stream.stream_id] = None
            while len(self._locally_reset) > self._locally_reset_cap:
                self._locally_reset.popitem(last=False)

    def forget_reset(self, stream_id: int) -> None:
        """The peer finished (END/RESET) a stream we had reset: stop ignoring its id."""
        self._locally_reset.pop(stream_id, None)
