"""Validation of the HTTP fields, disclosure maps and RESET/CLOSE contents (protocol.md §6.4, §7.2).

Each check takes the error class to raise, so the same rule refuses a local caller
(``LocalProtocolError``) and a peer (``ProtocolError``). Nothing here holds state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import (
    DISCLOSABLE_FIELDS,
    MAX_CONTENT_LEN,
    MAX_DISCLOSED_STRING_LEN,
    MAX_HEADER_NAME_LEN,
    MAX_HEADER_VALUE_LEN,
    MAX_HEADERS,
    MAX_METHOD_LEN,
    MAX_PATH_LEN,
    MAX_REASON_LEN,
)
from shroud_sdk.errors import ChannelError, LocalProtocolError, ProtocolError

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_FORBIDDEN_VALUE_CHARS = frozenset("\r\n\x00")

Headers = Iterable[tuple[str, str]]


def check_method(value: object, error: type[ChannelError]) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_METHOD_LEN
        or not all("A" <= c <= "Z" for c in value)
    ):
        raise error("headers", "method must be 1-16 uppercase letters")
    return value


def check_path(value: object, error: type[ChannelError]) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_PATH_LEN
        or not value.startswith("/")
        or any(not "\x21" <= c <= "\x7e" for c in value)
    ):
        raise error("headers", "path must start with '/' and be visible ASCII, max 2048")
    return value


def pairs(value: object) -> Headers:
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise ProtocolError("headers", "headers must be an array of [name, value] pairs")
    return [(p[0], p[1]) for p in value]


def check_headers(headers: Headers, error: type[ChannelError]) -> list[list[str]]:
    result: list[list[str]] = []
    for name, value in headers:
        if (
            not isinstance(name, str)
            or not 0 < len(name) <= MAX_HEADER_NAME_LEN
            or not set(name) <= _TOKEN_CHARS
        ):
            raise error("headers", "header names must be lowercase HTTP tokens")
        if (
            not isinstance(value, str)
            or len(value) > MAX_HEADER_VALUE_LEN
            or not _FORBIDDEN_VALUE_CHARS.isdisjoint(value)
        ):
            raise error("headers", f"value of header {name!r} is invalid (CR, LF, NUL or size)")
        result.append([name, value])
        if len(result) > MAX_HEADERS:
            raise error("headers", f"more than {MAX_HEADERS} headers")
    return result


def check_disclosed(
    disclosed: object, negotiated: tuple[str, ...], error: type[ChannelError]
) -> dict[str, object]:
    if not isinstance(disclosed, Mapping) or set(disclosed) != set(negotiated):
        raise error("disclosure", f"disclosed fields must be exactly {list(negotiated)}")
    result: dict[str, object] = {}
    for name in negotiated:
        value = disclosed[name]
        kind = DISCLOSABLE_FIELDS[name]
        ok = value is None or (
            isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        )
        if ok and isinstance(value, int) and not isinstance(value, bool):
            ok = 0 <= value < (1 << 63)
        if ok and isinstance(value, str):
            ok = len(value) <= MAX_DISCLOSED_STRING_LEN
        if not ok:
            raise error("disclosure", f"disclosed {name!r} has the wrong type or size")
        result[name] = value
    return result


def check_code(code: int) -> int:
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 0xFFFF:
        raise LocalProtocolError("code", "codes are integers in 0..65535")
    return code


def check_reason(reason: str) -> str:
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LEN:
        raise LocalProtocolError("reason", f"reason must be a string of at most {MAX_REASON_LEN}")
    return reason


def decode_map(content: bytes, keys: set[str], what: str) -> dict[str, Any]:
    value = cbor.decode(content, max_len=MAX_CONTENT_LEN)
    if not isinstance(value, dict) or set(value) != keys:
        raise ProtocolError("content-format", f"{what} must have exactly {sorted(keys)}")
    return value


def parse_code_reason(content: bytes, what: str) -> tuple[int, str]:
    value = decode_map(content, {"code", "reason"}, what)
    code, reason = value["code"], value["reason"]
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 0xFFFF:
        raise ProtocolError("content-format", f"{what} code must be in 0..65535")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LEN:
        raise ProtocolError("content-format", f"{what} reason must be short text")
    return code, reason
