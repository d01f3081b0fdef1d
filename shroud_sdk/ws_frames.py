"""Whole binary frames taken straight off the socket, while websockets' parser is between frames.

Every shroud/1 record the bridge sends is one unfragmented binary WebSocket message (protocol.md
§3.1), so almost every frame the SDK reads is the simplest kind there is: FIN set, opcode 0x2,
no RSV bits, no mask (a server's frames are never masked), length in its minimal encoding.
websockets parses each frame with a generator pipeline and builds and checks a ``Frame``
object, which costs several times what the record's decryption does, and it is on every token's
path. :func:`whole_binary_frames` splits such frames off the front of what one socket read
brought; anything else (a control frame, a text or fragmented frame, a masked frame, RSV bits,
a non-minimal length, a frame over the size limit, a frame cut by the end of the read) stops
it, and from there on the bytes go to websockets, which handles them or fails the connection
exactly as it always did. The SDK negotiates no extension, so RSV bits are always an error
there.

This is only sound while websockets' parser stands between two frames with nothing buffered
(:func:`parser_between_frames`): then the next byte of the stream starts a frame, and bytes
taken here are bytes websockets would have turned into the same messages. The check reads the
suspended generator chain (``gi_yieldfrom``, a documented generator attribute): websockets'
frame loop ``Protocol.parse`` waiting in ``StreamReader.at_eof`` for the next frame's first
byte. If a websockets release shapes its parser differently, the check answers False and every
byte goes through websockets: slower, never wrong.

The messages are still records: the channel core authenticates each one, so a frame that was
split wrongly could only fail authentication, never pass as data.
"""

from __future__ import annotations

from typing import Any, Final

from websockets.protocol import Protocol
from websockets.streams import StreamReader

_FIN_BINARY: Final = 0x82  # FIN, no RSV bits, opcode 0x2 (RFC 6455 section 5.2)
_LENGTH_16: Final = 126
_LENGTH_64: Final = 127
# None if a websockets release has no such plain function: then no generator matches.
_AT_EOF: Final = getattr(getattr(StreamReader, "at_eof", None), "__code__", None)
_FRAME_LOOP: Final = getattr(getattr(Protocol, "parse", None), "__code__", None)


def parser_between_frames(protocol: Protocol) -> bool:
    """Whether ``protocol``'s parser waits for the first byte of a new message's frame.

    Its frame loop suspended in ``at_eof``, which suspends only with nothing buffered, and
    no fragmented message unfinished (a binary frame there is a protocol error that
    websockets must see). Not between frames: after a CLOSE or a failure (the parser is
    ``discard``), or inside a frame whose header was read. While this side's own CLOSE waits
    for the answer, websockets still delivers data frames, and so does this path.

    Also False unless a frame's only limit is ``max_message_size`` (no separate fragment
    limit) and no extension is negotiated (one could transform frames without RSV bits), and
    False, never an error, when ``protocol`` lacks an attribute read here (websockets 15 and
    earlier name them differently; a later release may too).
    """
    try:
        if (
            protocol.current_size is not None
            or protocol.max_fragment_size is not None
            or protocol.extensions
        ):
            return False
        # Typed Any: typeshed gives ``gi_yieldfrom`` as a plain iterator.
        outer: Any = protocol.parser
        inner: Any = outer.gi_yieldfrom
        while inner is not None and inner.gi_yieldfrom is not None:
            outer, inner = inner, inner.gi_yieldfrom
        return inner is not None and inner.gi_code is _AT_EOF and outer.gi_code is _FRAME_LOOP
    except AttributeError:
        return False


def whole_binary_frames(data: bytes, limit: int | None) -> tuple[list[bytes], int]:
    """The payloads of the complete, simple binary frames at the start of ``data`` (each at
    most ``limit`` bytes), and how many bytes of ``data`` they took."""
    messages: list[bytes] = []
    taken = 0
    end = len(data)
    while end - taken >= 2 and data[taken] == _FIN_BINARY:
        length = data[taken + 1]  # the mask bit is its top bit: masked means >= 128
        start = taken + 2
        # An extended length cut by the end of the read reads short, and puts ``start`` past
        # the end, as does any length past the read (a 64-bit one with its top bit set
        # included): all of them end at ``stop > end``.
        if length == _LENGTH_16:
            length = int.from_bytes(data[start : start + 2], "big")
            if length < _LENGTH_16:
                break
            start += 2
        elif length == _LENGTH_64:
            length = int.from_bytes(data[start : start + 8], "big")
            if length <= 0xFFFF:
                break
            start += 8
        elif length > _LENGTH_64:
            break
        stop = start + length
        if (limit is not None and length > limit) or stop > end:
            break
        messages.append(data[start:stop])
        taken = stop
    return messages, taken
