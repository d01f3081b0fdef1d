"""Usage metering of one upstream response on its way to the client.

``UsageMeter`` reads the ``usage`` object the upstream reports (the last one of an SSE stream,
or the top-level one of a JSON body) so that the bridge can sign it into the stream's END, and
drops the usage-only SSE chunk the bridge itself asked for (``stream_options.include_usage``
injected by ``bridge.dispatch``), so the client sees the stream it asked for. Every other byte
passes unchanged, in the chunks it came in: a chunk holding whole events is returned as is
(no copy), so the events one upstream read brought stay one piece (one record).

A JSON body is never kept: a push parser (``ijson`` over the C library yajl) reads it as it
passes, and only the top-level ``usage`` object's three counts are held. So a body of any size
costs a bounded amount of memory (one JSON token of at most ``_MAX_JSON_TOKEN`` bytes, a byte
per open container up to ``_MAX_JSON_DEPTH``, the events of ``_JSON_SLICE`` bytes), and its
usage is read whatever its size (bodies over 8 MiB included: the meter used to keep up to
8 MiB of each body and read no usage past that).

Deliberately not here: deciding whether usage is injected (``bridge.dispatch``), signing it
(the channel core), sending anything (``bridge.streaming``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from typing import Final, Protocol

from ijson.common import JSONError
from ijson.utils import sendable_list

from shroud_sdk.channel.usage import Usage

_log = logging.getLogger(__name__)

try:
    from ijson.backends import yajl2_c as _ijson
except ImportError:  # ijson's wheels carry the C extension
    # An ijson built without its C extension (no wheel for the platform, no compiler): the
    # pure-Python parser gives the same results at about a tenth of the speed, on the event
    # loop. Slower JSON responses beat unmetered ones; the operator is told once.
    from ijson.backends import python as _ijson

    _log.warning(
        "ijson's C backend is not installed: JSON usage is read by its pure-Python parser, "
        "about ten times slower (reinstall ijson from a wheel)"
    )

JSON_BACKEND: Final[str] = _ijson.backend_name
"""The ``ijson`` backend that reads JSON bodies: ``"yajl2_c"`` unless the C one is missing."""

# The most body bytes the parser may take without producing an event: it keeps an unfinished
# token (a string, a number) whole, so this bounds what it holds. A body with a longer token
# (no upstream writes a 1 MiB string but to echo a prompt that long) gets no usage read.
_MAX_JSON_TOKEN: Final = 1024 * 1024
# The deepest nesting followed: the parser keeps a byte per open container (json.loads
# itself gives up, RecursionError, at about this depth).
_MAX_JSON_DEPTH: Final = 1000
# A JSON chunk is parsed this many bytes at a time, which bounds the events held at once.
_JSON_SLICE: Final = 64 * 1024
_COUNTS: Final = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
# How each event of ijson's basic parser changes the nesting depth.
_DEPTH_STEP: Final = {
    "start_map": 1,
    "start_array": 1,
    "end_map": -1,
    "end_array": -1,
    "map_key": 0,
    "string": 0,
    "number": 0,
    "integer": 0,
    "double": 0,
    "boolean": 0,
    "null": 0,
}
# What a count that is an object or an array is recorded as (``usage_from`` refuses it).
_NOT_A_COUNT: Final = object()
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


class _PushParser(Protocol):
    """An ``ijson`` push parser (a coroutine): bytes in with ``send``, the end with ``close``."""

    def send(self, data: memoryview, /) -> None: ...

    def close(self) -> None: ...


class _TopLevelUsage:
    """The top-level ``usage`` of a JSON body fed to it in pieces, read without keeping it.

    ``result()`` is the usage only when the whole body was one valid JSON object (RFC 8259);
    the last top-level ``usage`` member wins, as with ``json.loads``. Of that member only the
    three counts are kept, so its size costs nothing either. Anything else (invalid or cut
    JSON, another top-level value, trailing bytes, a token over ``_MAX_JSON_TOKEN``, nesting
    deeper than ``_MAX_JSON_DEPTH``, a number the parser cannot hold in 64 bits) yields None,
    and from then on nothing more is parsed.
    """

    __slots__ = ("_counts", "_depth", "_events", "_key", "_member", "_parser", "_quiet", "_usage")

    def __init__(self) -> None:
        self._events = sendable_list()
        # use_float: numbers as int or float, not Decimal (several times faster); an integer
        # past 64 bits is then a parse error, and no count past 63 bits is valid anyway.
        self._parser: _PushParser | None = _ijson.basic_parse_coro(self._events, use_float=True)
        self._depth = 0  # containers open
        self._key: object = None  # the top-level member being read
        self._member: object = None  # the member of its "usage" object being read
        self._counts: dict[object, object] | None = None  # while inside a usage object
        self._usage: Usage | None = None  # the last complete top-level usage so far
        self._quiet = 0  # bytes fed since the parser's last event

    def feed(self, chunk: bytes) -> None:
        """Parse the next bytes of the body."""
        if self._parser is None:
            return
        view = memoryview(chunk)
        for start in range(0, len(view), _JSON_SLICE):
            piece = view[start : start + _JSON_SLICE]
            try:
                self._parser.send(piece)
            except (JSONError, ValueError):
                self._give_up()
                return
            events = self._events
            if events:
                # The token now unfinished began after this piece's last event.
                self._quiet = len(piece)
                going = self._take(events)
                events.clear()
                if not going:
                    return
            else:
                self._quiet += len(piece)
            if self._quiet > _MAX_JSON_TOKEN:
                self._give_up()
                return

    def result(self) -> Usage | None:
        """The body ended: its top-level usage, or None."""
        parser = self._parser
        if parser is None:
            return None
        self._parser = None
        try:
            parser.close()
        except (JSONError, ValueError):
            return None
        self._take(self._events)  # the events the end itself brought
        self._events.clear()
        return self._usage

    def __del__(self) -> None:
        # A body left midway (the stream was reset): the parser is closed here, where its
        # complaint about unfinished JSON is expected, not by the garbage collector (the
        # pure-Python backend's parser raises from its finaliser).
        with contextlib.suppress(Exception):
            self._close()

    def _give_up(self) -> None:
        self._close()  # the parser's buffers go with it
        self._events.clear()
        self._counts = None
        self._usage = None

    def _close(self) -> None:
        parser, self._parser = self._parser, None
        if parser is not None:
            with contextlib.suppress(JSONError, ValueError):
                parser.close()

    def _take(self, events: list[tuple[str, object]]) -> bool:
        """Follow ``events``; False if they nest too deep to follow."""
        # Once per parser event of the body (millions for a large one), so kept lean: one dict
        # look-up and one comparison for an event nested below a top-level member's value.
        depth = self._depth
        for event, value in events:
            step = _DEPTH_STEP[event]
            if step:
                depth += step
                if depth > 2:
                    if step < 0:
                        continue
                    if depth == 3 and self._counts is not None and self._member in _COUNTS:
                        self._counts[self._member] = _NOT_A_COUNT
                    elif depth > _MAX_JSON_DEPTH:
                        self._give_up()
                        return False
                elif step > 0:
                    if depth == 2 and self._key == "usage":
                        self._counts = {} if event == "start_map" else None
                        self._member = None
                elif depth == 1 and self._key == "usage":
                    self._usage = usage_from(self._counts)
                    self._counts = None
            elif depth == 1:
                if event == "map_key":
                    self._key = value
                elif self._key == "usage":  # "usage": null, a number, a string...
                    self._usage = None
            elif depth == 2 and self._counts is not None:
                if event == "map_key":
                    self._member = value
                elif self._member in _COUNTS:
                    self._counts[self._member] = value
        self._depth = depth
        return True


class UsageMeter:
    """Reads ``usage`` from a response on its way to the client, changing nothing else.

    JSON bodies are passed through chunk by chunk and parsed as they pass, never kept (the
    top-level usage of a body of any size is read, in bounded memory). SSE bodies are passed
    through event by event (each event's bytes unchanged), and the last event with a ``usage``
    object wins. When the bridge itself injected ``stream_options.include_usage``, the
    usage-only chunk it caused (``"choices": []`` with ``usage``) is dropped so the client sees
    the stream it asked for.
    """

    def __init__(self, *, sse: bool, strip_usage_chunk: bool) -> None:
        self._strip = strip_usage_chunk
        self._buffer = bytearray()
        self._json = None if sse else _TopLevelUsage()
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take upstream bytes; return the bytes to forward now."""
        json_body = self._json
        if json_body is not None:
            json_body.feed(chunk)
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
        json_body = self._json
        if json_body is not None:
            self.usage = json_body.result()
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
