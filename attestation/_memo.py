"""Memoisation by object identity, for what is derived from one parsed certificate or CRL.

``functools.lru_cache`` keys by hash and equality, and ``cryptography`` hashes a certificate
by walking its whole parsed structure (names included): several microseconds per lookup, paid
dozens of times in one verification. The objects memoised here come out of content-keyed parse
caches (``attestation.pck`` keys parsed chains by their PEM bytes, ``attestation.certs``
parsed CRLs by their DER), so identical bytes already yield the very same object, and identity
is the cheap key. An equal but distinct object merely gets its own entry.

Safe by construction: every entry holds its object, so no other object can take its ``id``
while the entry exists, and a lookup also checks ``entry[0] is obj``. Exceptions are never
stored. Only pure functions of one immutable object belong here; nothing that depends on
another object, on time or on a verdict. ``remember`` lets a parser record such a value when
it has the object's bytes at hand (``fn`` then computes the same facts, or fewer, without
them).

Deliberately not here: anything keyed by content (the parse caches do that).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


class IdentityMemo(Generic[_T, _R]):
    """``fn(obj)`` remembered per object, for at most ``maxsize`` objects (oldest out first)."""

    def __init__(self, fn: Callable[[_T], _R], maxsize: int) -> None:
        self._fn = fn
        self._maxsize = maxsize
        self._entries: dict[int, tuple[_T, _R]] = {}
        self._lock = threading.Lock()
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, obj: _T) -> _R:
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = self._fn(obj)
        self.remember(obj, value)
        return value

    def remember(self, obj: _T, value: _R) -> None:
        """Record ``value`` as ``fn(obj)``: for a parser that learnt it from bytes at hand."""
        with self._lock:
            self._entries[id(obj)] = (obj, value)
            while len(self._entries) > self._maxsize:
                del self._entries[next(iter(self._entries))]

    def cache_clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


def identity_memo(maxsize: int) -> Callable[[Callable[[_T], _R]], IdentityMemo[_T, _R]]:
    """Decorator form of ``IdentityMemo``."""

    def wrap(fn: Callable[[_T], _R]) -> IdentityMemo[_T, _R]:
        return IdentityMemo(fn, maxsize)

    return wrap
