"""Strict CBOR for shroud/1: deterministic encoding on send, a validating pre-scan on receive.

``cbor2`` on its own keeps the last of duplicate keys, ignores trailing bytes and accepts
indefinite lengths. Here every received item is first walked structurally (no values built)
and refused unless it is in RFC 8949 §4.2.1 core deterministic form and inside our bounds;
only then does ``cbor2`` build values. The subset shroud/1 uses is small on purpose: unsigned
and negative integers, byte and text strings, arrays, maps with text keys, false/true/null.
Tags, floats, undefined and other simple values are refused.

This module does not validate message schemas; ``handshake`` and ``connection`` do that.
"""

from __future__ import annotations

from typing import Any

import cbor2

from shroud_sdk.channel.constants import CBOR_MAX_DEPTH, CBOR_MAX_ITEMS
from shroud_sdk.errors import MalformedCborError

# RFC 8949 §3: major types and the additional-information values we care about
_MT_UINT, _MT_NINT, _MT_BYTES, _MT_TEXT, _MT_ARRAY, _MT_MAP, _MT_TAG, _MT_SIMPLE = range(8)
_AI_FALSE, _AI_TRUE, _AI_NULL = 20, 21, 22
_AI_INDEFINITE = 31
# Smallest value each argument width may carry in shortest form (RFC 8949 §4.2.1).
_MIN_FOR_WIDTH = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}
_WIDTH_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}


def encode(value: Any) -> bytes:
    """Encode ``value`` in core deterministic form (RFC 8949 §4.2.1)."""
    return cbor2.dumps(value, canonical=True)


def decode(
    data: bytes, *, max_len: int, max_depth: int = CBOR_MAX_DEPTH, max_items: int = CBOR_MAX_ITEMS
) -> Any:
    """Decode exactly one deterministic CBOR item from ``data``, or raise ``MalformedCborError``.

    The checks (size, depth, item count, definite lengths, shortest arguments, sorted unique
    text map keys, no trailing bytes, allowed types) all run before any value is built.
    """
    if len(data) > max_len:
        raise MalformedCborError("cbor-size", f"item of {len(data)} bytes exceeds limit {max_len}")
    scanner = _Scanner(data, max_depth, max_items)
    end = scanner.item(0, 0)
    if end != len(data):
        raise MalformedCborError(
            "cbor-trailing", f"{len(data) - end} trailing bytes after the item"
        )
    try:
        return cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
        # The scan accepted the structure, so this is e.g. invalid UTF-8 in a text string.
        raise MalformedCborError("cbor-value", type(exc).__name__) from None


class _Scanner:
    """Walks item headers only; each method returns the offset after what it consumed."""

    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.max_depth = max_depth
        self.items_left = max_items

    def _need(self, pos: int, count: int) -> None:
        if count > len(self.data) - pos:
            raise MalformedCborError("cbor-truncated", f"item at offset {pos} runs past the end")

    def _argument(self, pos: int, info: int) -> tuple[int, int]:
        if info < 24:
            return info, pos
        width = _WIDTH_BYTES.get(info)
        if width is None:
            raise MalformedCborError("cbor-reserved", f"reserved additional information {info}")
        self._need(pos, width)
        value = int.from_bytes(self.data[pos : pos + width], "big")
        if value < _MIN_FOR_WIDTH[info]:
            raise MalformedCborError("cbor-non-canonical", f"argument at offset {pos} not shortest")
        return value, pos + width

    def item(self, pos: int, depth: int) -> int:
        if depth > self.max_depth:
            raise MalformedCborError("cbor-depth", f"nesting deeper than {self.max_depth}")
        self.items_left -= 1
        if self.items_left < 0:
            raise MalformedCborError("cbor-items", "too many items")
        self._need(pos, 1)
        initial = self.data[pos]
        major, info = initial >> 5, initial & 0x1F
        pos += 1
        if info == _AI_INDEFINITE:
            raise MalformedCborError("cbor-indefinite", f"indefinite length at offset {pos - 1}")
        if major == _MT_SIMPLE:
            if info not in (_AI_FALSE, _AI_TRUE, _AI_NULL):
                raise MalformedCborError("cbor-type", f"float or simple value {info} not allowed")
            return pos
        if major == _MT_TAG:
            raise MalformedCborError("cbor-type", "tags are not allowed")
        arg, pos = self._argument(pos, info)
        if major in (_MT_UINT, _MT_NINT):
            return pos
        if major in (_MT_BYTES, _MT_TEXT):
            self._need(pos, arg)
            return pos + arg
        # Every element takes at least one byte: refuse absurd counts before looping.
        count = arg if major == _MT_ARRAY else 2 * arg
        self._need(pos, count)
        if major == _MT_ARRAY:
            for _ in range(arg):
                pos = self.item(pos, depth + 1)
            return pos
        previous_key: bytes | None = None
        for _ in range(arg):
            key_start = pos
            # The count check above bounds only the total; earlier values may have used these bytes.
            self._need(pos, 1)
            if self.data[pos] >> 5 != _MT_TEXT:
                raise MalformedCborError(
                    "cbor-key", f"map key at offset {pos} is not a text string"
                )
            pos = self.item(pos, depth + 1)
            key = self.data[key_start:pos]
            if previous_key is not None:
                if key == previous_key:
                    raise MalformedCborError(
                        "cbor-duplicate-key", f"duplicate map key at {key_start}"
                    )
                if key < previous_key:
                    raise MalformedCborError(
                        "cbor-key-order", f"map key at {key_start} out of order"
                    )
            previous_key = key
            pos = self.item(pos, depth + 1)
        return pos
