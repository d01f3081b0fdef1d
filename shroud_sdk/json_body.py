"""Reading a request body as JSON where disclosed fields are checked: strictly, never crashing.

Both ends read the same fields out of a request body: the SDK to disclose them, the bridge to
check that the body agrees with what was disclosed. Two readings of one body must never
differ, so a body either parses one way or is refused:

- **duplicate keys** (at any depth) are refused: parsers disagree on them (Python keeps the
  last, others the first), so ``{"max_tokens": 100000, "max_tokens": 2}`` could be checked as
  2 and run as 100000;
- **nesting too deep** for the parser (``[`` x 50,000) is refused with a typed error instead
  of Python's ``RecursionError``;
- anything else that does not parse (not UTF-8, not JSON at all) is reported as
  :data:`NOT_JSON`, and the caller decides.

Nothing here echoes the body: error messages are fixed text.
"""

from __future__ import annotations

import json
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


def parse_json_body(body: bytes) -> Any:
    """The parsed document, :data:`NOT_JSON`, or :class:`JsonBodyError` (see module doc)."""
    try:
        return json.loads(body, object_pairs_hook=_object)
    except RecursionError:
        raise JsonBodyError("too_deep", "the JSON body nests too deeply") from None
    except JsonBodyError:
        raise
    except (ValueError, UnicodeDecodeError):
        return NOT_JSON
