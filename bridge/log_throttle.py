"""Log lines a peer can trigger at will: the first few of each kind, then a count.

A client (with or without an API key, before or after its handshake) or a hostile upstream
decides how often the bridge refuses a handshake, fails a connection or a stream: a line per
event would let it write the bridge's log as fast as it can connect, filling the disk and
drowning the operator's real signals. So those lines go through a :class:`LogThrottle`: per
*kind* of line, the first ``lines`` in an ``interval`` are logged as they come (an operator
debugs with them); the rest are counted, and the first line of that kind after the interval
is preceded by one summary line with the exact count suppressed. :meth:`LogThrottle.flush`
writes the summaries still owed (at shutdown). The metrics count every event regardless:
they are the exact record, the log is a sample.

A kind is an :class:`~enum.Enum` member, a name fixed in the code, never text from the
peer (an address, a path), so the throttle's state is bounded by the number of kinds
however many peers there are; a summary line names only the kind and counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

LINES: Final = 5
"""Lines of one kind logged per interval before the rest are only counted."""

INTERVAL: Final = 10.0
"""Seconds: the window over which ``LINES`` is counted."""


class LogKind(StrEnum):
    """The per-event lines a peer can trigger; each value is what its summary line names."""

    HANDSHAKE_REFUSED = "handshake refused"
    CONNECTION_FAILED = "connection failed"
    SEND_TIMEOUT = "client did not read"
    SESSION_FAILED = "session failed unexpectedly"
    UPSTREAM_FAILED = "upstream request failed"
    STREAM_UNANSWERABLE = "could not answer stream"
    STREAM_FAILED = "stream failed unexpectedly"
    RESET_IMPOSSIBLE = "cannot even RESET"
    NO_COLLATERAL = "no collateral attached to evidence"
    SCRAPE_FAILED = "metrics connection failed"


@dataclass
class _Window:
    logger: logging.Logger
    level: int  # of the kind's lines: its summary is logged at the same level
    start: float  # when the window's first line was logged
    logged: int  # lines logged in the window
    suppressed: int  # lines counted, not logged, in the window


class LogThrottle:
    """At most ``lines`` lines per kind per ``interval``, then a summary; see the module
    docstring. Thread-safe (a quote's evidence is made in a worker thread)."""

    def __init__(
        self,
        *,
        lines: int = LINES,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lines < 1 or interval <= 0:
            raise ValueError("a log throttle passes at least one line per positive interval")
        self._lines = lines
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # Keyed by Enum members only: bounded by the kinds the code names.
        self._windows: dict[Enum, _Window] = {}

    def log(self, logger: logging.Logger, kind: Enum, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` on ``logger`` unless ``kind`` used up its lines in this interval
        (then count it); True when logged. ``args`` must already be safe to log: the throttle
        bounds how often, not what."""
        if not logger.isEnabledFor(level):
            return False  # nothing to throttle: keeps a DEBUG-only line from using the budget
        with self._lock:
            now = self._clock()
            window = self._windows.get(kind)
            if window is not None and now - window.start < self._interval:
                if window.logged >= self._lines:
                    window.suppressed += 1
                    return False
                window.logged += 1
            else:
                if window is not None:
                    self._summarise(kind, window)
                self._windows[kind] = _Window(logger, level, start=now, logged=1, suppressed=0)
            logger.log(level, msg, *args)
            return True

    def flush(self) -> None:
        """Write the summary line of every kind with lines suppressed and not yet reported."""
        with self._lock:
            for kind, window in self._windows.items():
                self._summarise(kind, window)

    def reset(self) -> None:
        """Forget every window, unreported counts included (a new bridge in the same process:
        tests run many)."""
        with self._lock:
            self._windows.clear()

    def suppressed(self, kind: Enum) -> int:
        """Lines of ``kind`` counted and not yet reported in a summary."""
        with self._lock:
            window = self._windows.get(kind)
            return 0 if window is None else window.suppressed

    def _summarise(self, kind: Enum, window: _Window) -> None:
        if window.suppressed:
            window.logger.log(
                window.level,
                "log throttle: %d more '%s' line(s) suppressed (at most %d per %.0f s; the "
                "metrics count every event)",
                window.suppressed,
                kind.value,
                self._lines,
                self._interval,
            )
            window.suppressed = 0


PEER_EVENTS: Final = LogThrottle()
"""The process's throttle for the :class:`LogKind` lines."""
