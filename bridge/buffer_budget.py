"""The memory budget for request bytes the bridge holds: global, per source, per session.

The bridge must hold a request's whole body before forwarding it (the disclosed metadata is
checked against the whole body), and keeps it until the request is done. Without a bound a
client can open many streams, send most of each body and never END them. So every request
byte held is charged, from the HEADERS record (method, path, headers) to the stream's end, to
three accounts at once:

- the session's share (``max_session_buffered_bytes``, at least one maximal request): past
  it, 429, so one connection cannot take the whole budget;
- the source's share (``max_source_buffered_bytes``): past it, 429, so one client address
  cannot take it with many connections;
- the bridge-wide budget (``max_buffered_bytes``): past it, 503.

A refused charge changes nothing (all or nothing); :meth:`SessionBuffers.close` gives back
whatever the session still holds, whatever the reason it ended. The caller answers the refusal
(``bridge.dispatch``); this module only counts. Source accounts exist only while they hold
bytes, so the table is bounded by the number of sessions.

The same three-account budget, counting one unit per request instead of bytes
(:data:`STREAM_REFUSALS`), bounds the requests in flight: each holds an upstream connection
(a file descriptor), a task and the upstream's capacity, from its HEADERS until it is done
(``max_streams_per_session``, ``max_source_streams``, ``max_streams``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

from shroud_sdk.refusals import OverloadLimit


class BudgetRefusals(NamedTuple):
    """Which limit a refused charge names, per account."""

    session: OverloadLimit
    source: OverloadLimit
    whole: OverloadLimit


BYTES_REFUSALS: Final = BudgetRefusals(
    OverloadLimit.SESSION_BUFFERED_BYTES,
    OverloadLimit.SOURCE_BUFFERED_BYTES,
    OverloadLimit.BUFFERED_BYTES,
)
STREAM_REFUSALS: Final = BudgetRefusals(
    OverloadLimit.STREAMS_PER_SESSION, OverloadLimit.SOURCE_STREAMS, OverloadLimit.STREAMS
)


class BufferBudget:
    """Bridge-wide budget of buffered request bytes (or of other units, named by
    ``refusals``); ``on_change(used)`` reports the total."""

    def __init__(
        self,
        limit: int,
        *,
        source_share: int,
        on_change: Callable[[int], None] | None = None,
        refusals: BudgetRefusals = BYTES_REFUSALS,
    ) -> None:
        if limit <= 0 or source_share <= 0:
            raise ValueError("the budget and the source share must be positive")
        self.limit = limit
        self.source_share = min(source_share, limit)
        self.used = 0
        self._by_source: dict[str, int] = {}
        self._on_change = on_change
        self.refusals = refusals

    def session(self, share: int, source: str) -> SessionBuffers:
        """A new session's account for ``source``, allowed ``share`` bytes of this budget.

        A share above the source's is not cut down: the source's account refuses first then,
        and its refusal names the limit that was really met."""
        return SessionBuffers(self, share, source)

    def used_by(self, source: str) -> int:
        """Bytes ``source``'s sessions hold."""
        return self._by_source.get(source, 0)

    def _take(self, source: str, size: int) -> OverloadLimit | None:
        held = self._by_source.get(source, 0)
        if held + size > self.source_share:
            return self.refusals.source
        if self.used + size > self.limit:
            return self.refusals.whole
        if size:
            self._by_source[source] = held + size
            self.used += size
            self._report()
        return None

    def _give(self, source: str, size: int) -> None:
        held = self._by_source[source] - size  # SessionBuffers never gives back more
        if held:
            self._by_source[source] = held
        else:
            del self._by_source[source]
        self.used -= size
        self._report()

    def _report(self) -> None:
        if self._on_change is not None:
            self._on_change(self.used)


class SessionBuffers:
    """One session's share of a :class:`BufferBudget`."""

    def __init__(self, budget: BufferBudget, share: int, source: str) -> None:
        self._budget = budget
        self.share = share
        self.source = source
        self.used = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"SessionBuffers(source={self.source!r}, used={self.used}, share={self.share})"

    def charge(self, size: int) -> OverloadLimit | None:
        """Charge ``size`` bytes; the limit that refused it, or None (then it is charged)."""
        if size < 0:
            raise ValueError("cannot charge a negative size")
        if self._closed or self.used + size > self.share:
            return self._budget.refusals.session
        refused = self._budget._take(self.source, size)
        if refused is None:
            self.used += size
        return refused

    def release(self, size: int) -> None:
        """Give back ``size`` bytes charged earlier."""
        if size > self.used or size < 0:
            raise ValueError("released more than was charged")
        if size:
            self.used -= size
            self._budget._give(self.source, size)

    def close(self) -> None:
        """The session ended: give back everything, refuse every later charge."""
        self._closed = True
        self.release(self.used)
