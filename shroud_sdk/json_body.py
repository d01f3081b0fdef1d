"""Reading a request body as JSON where disclosed fields are checked: strictly, never crashing.

Both ends read the same fields out of a request body: the SDK to disclose them, the bridge to
check that the body agrees with what was disclosed. Two readings of one body must never
differ, so a body either parses one way or is refused:

- **duplicate keys** (at any depth) are refused: parsers disagree on them (Python keeps the
  last, others the first), so ``{"max_tokens": 100000, "max_tokens": 2}`` could be checked as
  2 and run as 100000;
- **nesting too deep** for the parser (``[`` x 50,000) is refused with a typed error instead
  of Python's ``RecursionError``;
- **too many objects and arrays**, when the caller sets ``max_containers``: each costs the
  parser far more than the bytes that spell it (``[],`` is three bytes and ~0.4 µs, ~75 bytes
  of heap), so a receiver that must parse bodies it did not write (the bridge) bounds them
  before parsing; see :func:`count_containers`;
- anything else that does not parse (not UTF-8, not JSON at all) is reported as
  :data:`NOT_JSON`, and the caller decides.

Nothing here echoes the body: error messages are fixed text.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final


class JsonBodyError(ValueError):
    """The body is JSON that cannot be checked safely; ``reason`` is fixed text."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _NotJson:
    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Final = _NotJson()


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise JsonBodyError("duplicate_key", "a JSON object in the body repeats a key")
    return document


# JSON whitespace, then the opening of a container: only such a body can hold a second one.
_OPENS_CONTAINER: Final = re.compile(r"[ \t\n\r]*[\[{]")
# Characters counted at a time: bounds the exact count's transient pieces to ~64 KiB of them.
_COUNT_SLICE: Final = 1 << 16


def count_containers(text: str) -> int:
    r"""The objects and arrays in JSON ``text``: its ``{`` and ``[`` outside strings.

    Exact for valid JSON. For text that is not, it is exact up to the first error, which is as
    far as a parser gets: every container a parser builds is counted. Escapes go first (``\\``
    pairs, then ``\"``: left to right, as a parser reads them), then every ``"`` left opens or
    closes a string. All of it is C-speed string work, linear in the text; a slice at a time,
    so the pieces between quotes never exist for the whole text at once.
    """
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    count, in_string = 0, False
    for start in range(0, len(unescaped), _COUNT_SLICE):
        pieces = unescaped[start : start + _COUNT_SLICE].split('"')
        outside_strings = "".join(pieces[1 if in_string else 0 :: 2])
        count += outside_strings.count("{") + outside_strings.count("[")
        in_string ^= len(pieces) % 2 == 0  # an odd number of quotes in this slice
    return count


def parse_json_body(body: bytes, *, max_containers: int | None = None) -> Any:
    """The parsed document, :data:`NOT_JSON`, or :class:`JsonBodyError` (see module doc).

    With ``max_containers``, a body holding more objects and arrays than that is refused
    (code ``too_many_containers``) before any of it is parsed.
    """
    try:
        # As json.loads(bytes) decodes (UTF-8, -16 or -32): the count must read the same text.
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError:
        return NOT_JSON
    if (
        max_containers is not None
        and _OPENS_CONTAINER.match(text)
        # C-speed upper bound first; the exact count only when braces may sit in strings.
        and text.count("{") + text.count("[") > max_containers
        and count_containers(text) > max_containers
    ):
        raise JsonBodyError(
            "too_many_containers",
            f"the JSON body holds more than {max_containers} objects and arrays",
        )
    try:
        return json.loads(text, object_pairs_hook=_object)
    except RecursionError:
        raise JsonBodyError("too_deep", "the JSON body nests too deeply") from None
    except JsonBodyError:
        raise
    except (ValueError, UnicodeDecodeError):
        return NOT_JSON
