"""Fair admission: how many connections the bridge holds, and how many one client source may
open and how fast.

Four bounds, checked before any expensive work (docs/threat-model.md, "Availability"):

- ``max_sessions``: connections open in any state (TCP accepted, upgrading, handshaking,
  established). It bounds the memory every connection costs whatever it does;
- ``max_connections_per_source``: connections open from one source, so that one client
  address cannot take all of ``max_sessions``;
- ``max_handshakes_per_source``: new WebSocket sessions per second from one source (a token
  bucket holding as many tokens as the rate), so that one address cannot keep the handshake
  slots, and the quotes behind them, busy;
- of the ``max_concurrent_handshakes`` slots (:class:`HandshakeSlots`), one source holds at
  most half at a time: quotes are slow and serialised per host, so a source at its rate
  limit could otherwise still fill every slot while its quotes queue.

A *source* is a string naming the client: its IPv4 address, or the /64 network of its IPv6
address (one host normally holds a whole /64, so counting single IPv6 addresses would give an
attacker 2^64 sources). :func:`source_key` makes it; ``bridge.client_address`` decides which
address is the client's (the peer, or what a trusted proxy reports). Other per-source limits
(e.g. fresh quotes) key on the same string: ``Session.source``.

Tables are bounded: per-source connection counts exist only while connections are open (at
most ``max_sessions`` entries), and the token-bucket table forgets the least recently used
source beyond ``max_tracked_sources`` (a forgotten source starts again with a full bucket, a
bounded leniency). This module decides; it neither logs nor touches sockets.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from shroud_sdk.refusals import Overload, OverloadLimit

IPV6_SOURCE_PREFIX: Final = 64
MAX_TRACKED_SOURCES: Final = 65536
# Retry-After for a connection-count refusal: connections end at unknown times.
CONNECTION_RETRY_AFTER: Final = 1


def source_key(address: str) -> str:
    """The source an IP address counts as: IPv4 itself, IPv6 its /64 (``2001:db8::/64``).

    IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) count as the IPv4 address. Anything
    that is not an IP address (a Unix socket peer) is returned unchanged.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_SOURCE_PREFIX), strict=False))
    return str(ip)


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens per second, at most ``burst`` stored.

    :meth:`take` spends a token if there is one; otherwise it says how long until there is.
    Keyed by source; the table keeps at most ``max_keys`` keys (least recently used dropped).
    Usable by any per-source rate limit (handshakes here; fresh quotes elsewhere).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = MAX_TRACKED_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst at least 1, max_keys at least 1")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend one token of ``key``: 0.0 on success, else the seconds until one is there."""
        now = self._clock()
        tokens, then = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait


class HandshakeSlots:
    """Handshakes in progress (each may be making a quote): ``capacity`` in all, and at most
    ``per_source`` for any one source, so one address never holds every slot.

    Sans-wait: :meth:`take` answers at once (a slot, or the refusal); the caller gives the
    slot back with :meth:`give` when the handshake's work really ended.
    """

    def __init__(self, capacity: int, per_source: int) -> None:
        if capacity < 1 or per_source < 1:
            raise ValueError("handshake slots must be at least 1")
        self.capacity = capacity
        self.per_source = min(per_source, capacity)
        self.in_use = 0
        self._by_source: dict[str, int] = {}

    def take(self, source: str) -> Overload | None:
        """Take a slot for ``source``: None, or which limit refused it."""
        if self.in_use >= self.capacity:
            return Overload(OverloadLimit.HANDSHAKE_CAPACITY, CONNECTION_RETRY_AFTER)
        held = self._by_source.get(source, 0)
        if held >= self.per_source:
            return Overload(OverloadLimit.SOURCE_HANDSHAKE_SLOTS, CONNECTION_RETRY_AFTER)
        self._by_source[source] = held + 1
        self.in_use += 1
        return None

    def give(self, source: str) -> None:
        """Give back a slot taken for ``source``."""
        held = self._by_source[source] - 1
        if held:
            self._by_source[source] = held
        else:
            del self._by_source[source]
        self.in_use -= 1


class AdmissionTicket:
    """One admitted connection: counted until :meth:`release` (idempotent)."""

    def __init__(self, admission: Admission, source: str, counted: bool) -> None:
        self._admission = admission
        self.source = source
        self._counted = counted  # whether ``source`` holds one per-source place for us
        self._released = False

    def __repr__(self) -> str:
        return f"AdmissionTicket(source={self.source!r})"

    def assign_source(self, source: str) -> Overload | None:
        """The client turned out to be ``source`` (a trusted proxy said so): count it there.

        Returns the refusal when ``source`` already has as many connections as it may; the
        ticket then still holds its global place until released.
        """
        if self._released or (source == self.source and self._counted):
            return None
        refusal = self._admission._count_source(source)
        if refusal is not None:
            return refusal
        if self._counted:
            self._admission._uncount_source(self.source)
        self.source = source
        self._counted = True
        return None

    def release(self) -> None:
        """The connection ended: free its places."""
        if self._released:
            return
        self._released = True
        if self._counted:
            self._admission._uncount_source(self.source)
        self._admission._open -= 1


class Admission:
    """The server's admission state; see the module docstring."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_connections_per_source: int,
        handshakes_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_connections
        self._max_per_source = max_connections_per_source
        self._open = 0
        self._per_source: dict[str, int] = {}
        self._handshakes = TokenBuckets(
            handshakes_per_second, max(1.0, handshakes_per_second), clock=clock
        )

    @property
    def open_connections(self) -> int:
        """Connections admitted and not yet released."""
        return self._open

    def connections_from(self, source: str) -> int:
        """Connections currently counted for ``source``."""
        return self._per_source.get(source, 0)

    def admit(self, source: str, *, count_source: bool) -> AdmissionTicket | Overload:
        """A TCP connection from ``source`` arrived: a ticket, or the refusal.

        ``count_source`` is False when ``source`` is a trusted proxy, whose connections carry
        many clients; their own source is counted later (:meth:`AdmissionTicket.assign_source`).
        """
        if self._open >= self._max:
            return Overload(OverloadLimit.SESSIONS, CONNECTION_RETRY_AFTER)
        if count_source:
            refusal = self._count_source(source)
            if refusal is not None:
                return refusal
        self._open += 1
        return AdmissionTicket(self, source, count_source)

    def take_handshake(self, source: str) -> Overload | None:
        """Spend one of ``source``'s handshakes; the refusal says when the next one is due."""
        wait = self._handshakes.take(source)
        if wait <= 0.0:
            return None
        return Overload(OverloadLimit.HANDSHAKES_PER_SOURCE, max(1, math.ceil(wait)))

    def _count_source(self, source: str) -> Overload | None:
        count = self._per_source.get(source, 0)
        if count >= self._max_per_source:
            return Overload(OverloadLimit.CONNECTIONS_PER_SOURCE, CONNECTION_RETRY_AFTER)
        self._per_source[source] = count + 1
        return None

    def _uncount_source(self, source: str) -> None:
        count = self._per_source[source] - 1
        if count:
            self._per_source[source] = count
        else:
            del self._per_source[source]
