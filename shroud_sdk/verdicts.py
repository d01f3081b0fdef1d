"""A process-wide memory of *accepted* evidence verifications, each valid for a bounded time.

A bridge in attested-key mode (docs/protocol.md §3.6) sends the same evidence bytes to every
client until it rotates its key, so verifying them again on every handshake (the quote, the
collateral, the event logs, the policy) repeats work whose answer cannot have changed. The
verifier keeps its acceptances here, keyed by everything that decides the verification, and a
reconnect or a second client in the same process then pays only for the checks run on every
handshake: the verifier's window and policy judgement, and the channel core's REPORTDATA,
transcript signature and ``fin``.

Rules, each with a test in ``tests/sdk/test_evidence_modes.py``:

- only acceptances are stored (``put`` is called after every check passed); a refusal leaves no
  trace, so retrying refused evidence verifies it again from scratch;
- an entry answers only inside ``[verified_at, expires_at)``, where ``expires_at`` is the
  earliest end of the evidence window, of the collateral's validity and of the policy's
  collateral-age limit; a clock that went back before ``verified_at`` misses too;
- keys are opaque to this module; the verifier builds them from the exact evidence bytes, the
  collateral bytes, the suite and the policy (roots included).

It is bounded twice over: adding an entry first drops every entry expired at that moment (so
verdicts of rotated keys do not sit in memory until the size bound pushes them out), then, past
``max_entries``, the least recently used. It is thread-safe. It does nothing on its
own: the verifier decides what to store and still checks each evidence window on every use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

_V = TypeVar("_V")

DEFAULT_MAX_ENTRIES: Final = 256


@dataclass(frozen=True)
class _Entry(Generic[_V]):
    value: _V
    verified_at: int
    expires_at: int


class VerdictCache(Generic[_V]):
    """Accepted verdicts by key, each answering only inside its validity interval."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a verdict cache holds at least one entry")
        self._max = max_entries
        self._entries: OrderedDict[Hashable, _Entry[_V]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"VerdictCache(entries={len(self)}, max={self._max})"

    def get(self, key: Hashable, now: int) -> _V | None:
        """The accepted verdict stored under ``key`` if ``now`` is inside its interval."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            if not entry.verified_at <= now < entry.expires_at:
                if now >= entry.expires_at:
                    del self._entries[key]  # expired for good; a clock set back just misses
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value

    def put(self, key: Hashable, value: _V, *, verified_at: int, expires_at: int) -> None:
        """Remember an acceptance made at ``verified_at``, valid until ``expires_at`` (excl.)."""
        if expires_at <= verified_at:
            return  # already over: nothing to remember
        with self._lock:
            expired = [k for k, e in self._entries.items() if e.expires_at <= verified_at]
            for stale in expired:
                del self._entries[stale]
            self._entries[key] = _Entry(value, verified_at, expires_at)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every verdict (e.g. after changing trust decisions at runtime)."""
        with self._lock:
            self._entries.clear()


# One per process: every AttestationVerifier uses it unless given its own.
PROCESS_VERDICTS: Final[VerdictCache[object]] = VerdictCache()
