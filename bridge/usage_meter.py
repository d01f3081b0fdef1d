"""Usage metering of one upstream response on its way to the client.

``UsageMeter`` reads the ``usage`` object the upstream reports (the last one of an SSE stream,
or the top-level one of a JSON body) so that the bridge can sign it into the stream's END, and
drops the usage-only SSE chunk the bridge itself asked for (``stream_options.include_usage``
injected by ``bridge.dispatch``), so the client sees the stream it asked for. Every other byte
passes unchanged, in the chunks it came in: a chunk holding whole events is returned as is
(no copy), so the events one upstream read brought stay one piece (one record).

Deliberately not here: deciding whether usage is injected (``bridge.dispatch``), signing it
(the channel core), sending anything (``bridge.streaming``).
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Final

from shroud_sdk.channel.usage import Usage

# A non-SSE response is kept (up to this size) to read its "usage" at the end.
_MAX_USAGE_BODY: Final = 8 * 1024 * 1024
# An SSE event larger than this is forwarded unparsed (its usage, if any, is not read).
_MAX_SSE_EVENT: Final = 1024 * 1024
_SSE_SEPARATOR: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# An SSE event is parsed only if it may carry a usage object: a "usage" key not followed by
# null (upstreams that were asked for usage send "usage": null in every chunk but the last).
# A key spelled with JSON escapes is not recognised, so such an upstream's usage is not read.
_MAY_CARRY_USAGE: Final = re.compile(rb'"usage"(?!\s*:\s*null\b)')
# No event of a chunk without this key can carry usage (``_MAY_CARRY_USAGE`` needs it).
_USAGE_KEY: Final = b'"usage"'
_LF: Final = 0x0A


def usage_from(value: object) -> Usage | None:
    """``Usage`` from an OpenAI ``usage`` object (completion tokens 0 when absent, as for
    embeddings), or None when it is missing or malformed."""
    if not isinstance(value, dict):
        return None
    counts = []
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        count = value.get(name, 0 if name == "completion_tokens" else None)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return None
        counts.append(count)
    try:
        return Usage(*counts)
    except ValueError:
        return None


class UsageMeter:
    """Reads ``usage`` from a response on its way to the client, changing nothing else.

    JSON bodies are passed through chunk by chunk and parsed at the end. SSE bodies are passed
    through event by event (each event's bytes unchanged), and the last event with a ``usage``
    object wins. When the bridge itself injected ``stream_options.include_usage``, the
    usage-only chunk it caused (``"choices": []`` with ``usage``) is dropped so the client sees
    the stream it asked for.
    """

    def __init__(self, *, sse: bool, strip_usage_chunk: bool) -> None:
        self._sse = sse
        self._strip = strip_usage_chunk
        self._buffer = bytearray()
        self._overflow = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take upstream bytes; return the bytes to forward now."""
        if not self._sse:
            if not self._overflow:
                self._buffer += chunk
                if len(self._buffer) > _MAX_USAGE_BODY:
                    self._overflow = True
                    self._buffer.clear()
            return chunk
        # Hot path (one call per streamed token): no copy of ``chunk`` when it holds whole
        # events and none is dropped, and no JSON parsing of events that carry no usage.
        if self._buffer:
            self._buffer += chunk
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = chunk
        last = data.rfind(b"\n\n")
        # find, not ``in``: ``bytes in bytes`` first tries the operand as an int and formats
        # the TypeError it clears, which costs more than the search.
        if (
            data.find(_USAGE_KEY) >= 0
            or data.find(b"\r") >= 0
            or (last > 0 and data[last - 1] == _LF)
        ):
            out, cut = self._split(data)
        else:
            # Faster, same result: no event here can carry usage (no "usage" key), so none is
            # parsed or dropped, and only where the last event ends matters. With no CR, the
            # separators are "\n\n" pairs, and the last pair ends the last event unless a
            # longer run of newlines pairs them differently (handled above).
            cut = last + 2 if last >= 0 else 0
            out = data[:cut]
        if cut < len(data):
            self._buffer += data[cut:]
            if len(self._buffer) > _MAX_SSE_EVENT:
                out += bytes(self._buffer)
                self._buffer.clear()
        return out

    def finish(self) -> bytes:
        """The upstream body ended; return what is left to forward."""
        if not self._sse:
            if not self._overflow and self._buffer:
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    document = json.loads(self._buffer)
                    if isinstance(document, dict):
                        self.usage = usage_from(document.get("usage"))
            self._buffer.clear()
            return b""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return self._event(rest) if rest.strip() else rest

    def _split(self, data: bytes) -> tuple[bytes, int]:
        """The bytes of ``data``'s whole events to forward (usage read, the injected usage
        chunk dropped), and where its last whole event ends."""
        pieces: list[bytes] = []
        kept_from = cut = 0
        for match in _SSE_SEPARATOR.finditer(data):
            end = match.end()
            if _MAY_CARRY_USAGE.search(data, cut, end) and not self._event(data[cut:end]):
                pieces.append(data[kept_from:cut])  # the event is dropped
                kept_from = end
            cut = end
        pieces.append(data[kept_from:cut])
        return (pieces[0] if len(pieces) == 1 else b"".join(pieces)), cut

    def _event(self, event: bytes) -> bytes:
        data = b"\n".join(
            line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
        )
        if not data.startswith(b"{"):
            return event
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return event
        if not isinstance(document, dict):
            return event
        usage = usage_from(document.get("usage"))
        if usage is not None:
            self.usage = usage
            if self._strip and document.get("choices") == []:
                return b""
        return event
