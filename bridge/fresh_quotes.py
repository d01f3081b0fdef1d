"""How many fresh-mode quotes each client source may have: a token bucket per source.

A fresh-mode handshake (docs/protocol.md section 3.6) costs a hardware quote, which the host
serves one at a time, so a bridge cannot give one to everyone who asks. Attested-key handshakes
need no quote and are not limited here. Each *source* (a string the session supplies: today the
peer's IP address; behind a trusted proxy, the client address it reports) gets ``burst`` quotes
at once and then ``per_minute`` a minute. An IPv6 source counts as its /64 prefix: that is the
smallest block a network hands one subscriber, so one client picking a new address per
connection still draws on one budget. Refused handshakes cost no quote (the session closes
with 1013 and "fresh quote rate limit: retry after <n>s", docs/protocol.md section 9).

Memory is bounded: at most ``max_sources`` buckets are kept, least recently used dropped first.
Dropping a bucket can only hand its source a fresh burst, so the bound trades a little
generosity toward an attacker with very many addresses for a fixed footprint; the quote
concurrency cap (``max_concurrent_handshakes``) still bounds what they cost together.
This module keeps time with a monotonic clock and does no I/O.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_SOURCES: Final = 4096
# An IPv6 subscriber gets at least a /64 (the smallest subnet SLAAC works on).
IPV6_SOURCE_PREFIX: Final = 64


def source_bucket(source: str) -> str:
    """The budget ``source`` draws on: an IPv6 address's /64, otherwise ``source`` itself."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False))
    return source


@dataclass
class _Bucket:
    tokens: float
    updated: float


class FreshQuoteLimiter:
    """Per-source token buckets for fresh quotes; ``per_minute == 0`` refuses every one."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_sources: int = DEFAULT_MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 0 or burst < 1 or max_sources < 1:
            raise ValueError("per_minute >= 0, burst >= 1 and max_sources >= 1 are required")
        self._rate = per_minute / 60.0  # tokens per second
        self._burst = float(burst)
        self._max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FreshQuoteLimiter(per_minute={self._rate * 60:g}, burst={self._burst:g})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def try_acquire(self, source: str) -> float | None:
        """Take one quote for ``source``: None if granted, else seconds until one would be."""
        if self._rate == 0:
            return math.inf
        source = source_bucket(source)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(source)
            if bucket is None:
                bucket = _Bucket(self._burst, now)
                self._buckets[source] = bucket
                while len(self._buckets) > self._max_sources:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(source)
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / self._rate


def retry_after_seconds(wait: float) -> int:
    """Whole seconds to advise in a close reason (at least 1; capped for "never")."""
    if math.isinf(wait):
        return 86400
    return max(1, math.ceil(wait))
