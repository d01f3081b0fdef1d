"""PROXY protocol version 2 (HAProxy's binary header): who the client of a trusted proxy is.

A load balancer that speaks it (HAProxy, AWS NLB, Google's TCP proxy...) sends one header
before any other byte of a connection, naming the address of the client it accepted. The
format, from the HAProxy specification ``proxy-protocol.txt`` section 2.2:

====== ======= ==========================================================================
offset length  field
====== ======= ==========================================================================
0      12      signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``
12     1       version (high nibble, must be 2) and command (low nibble: 0 LOCAL, 1 PROXY)
13     1       address family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and
               transport (low nibble: 0 UNSPEC, 1 STREAM, 2 DGRAM)
14     2       length of what follows, big-endian: the address block, then TLVs
16     12/36   INET: source and destination IPv4 address, source and destination port;
               INET6: the same with IPv6 addresses (UNIX: 216 bytes of paths, ignored)
====== ======= ==========================================================================

Following the specification, a receiver configured for the protocol requires the header (it
never guesses whether one is present), uses the connection's own addresses for LOCAL (the
proxy's health checks) and for UNSPEC or UNIX families, and skips the TLVs. The header is
refused when longer than :data:`MAX_HEADER_LEN` (the TLVs real proxies send are far smaller).

Sans-I/O: :func:`parse` takes the bytes received so far and says "need more", "here is the
header and how many bytes it took", or raises :class:`ProxyHeaderError`. Which peers must send
a header is ``bridge.client_address``'s decision; this module only reads one.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_FIXED: Final = struct.Struct(">BBH")  # version/command, family/transport, length
FIXED_LEN: Final = len(SIGNATURE) + _FIXED.size  # 16
MAX_HEADER_LEN: Final = FIXED_LEN + 2048
VERSION_2: Final = 0x2
COMMAND_LOCAL: Final = 0x0
COMMAND_PROXY: Final = 0x1
FAMILY_UNSPEC: Final = 0x0
FAMILY_INET: Final = 0x1
FAMILY_INET6: Final = 0x2
FAMILY_UNIX: Final = 0x3
_INET: Final = struct.Struct(">4s4sHH")  # 12 bytes
_INET6: Final = struct.Struct(">16s16sHH")  # 36 bytes
_UNIX_LEN: Final = 216


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol v2 header (the connection is dropped)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header. ``source`` is the client address, or None when the header says to
    use the connection's own (LOCAL command, UNSPEC or UNIX family)."""

    source: str | None
    source_port: int | None
    length: int  # bytes the header took on the wire


def parse(data: bytes) -> ProxyHeader | None:
    """Parse a header at the start of ``data``; None when more bytes are needed."""
    if len(data) < len(SIGNATURE):
        if not SIGNATURE.startswith(data):
            raise ProxyHeaderError("the connection does not start with a PROXY v2 signature")
        return None
    if not data.startswith(SIGNATURE):
        raise ProxyHeaderError("the connection does not start with a PROXY v2 signature")
    if len(data) < FIXED_LEN:
        return None
    version_command, family_transport, length = _FIXED.unpack_from(data, len(SIGNATURE))
    version, command = version_command >> 4, version_command & 0x0F
    family = family_transport >> 4
    if version != VERSION_2:
        raise ProxyHeaderError(f"unsupported PROXY protocol version {version}")
    if command not in (COMMAND_LOCAL, COMMAND_PROXY):
        raise ProxyHeaderError(f"unknown PROXY command {command}")
    if family > FAMILY_UNIX:
        raise ProxyHeaderError(f"unknown PROXY address family {family}")
    total = FIXED_LEN + length
    if total > MAX_HEADER_LEN:
        raise ProxyHeaderError(f"PROXY header of {total} bytes is longer than {MAX_HEADER_LEN}")
    if len(data) < total:
        return None
    block = data[FIXED_LEN:total]
    if command == COMMAND_LOCAL or family in (FAMILY_UNSPEC, FAMILY_UNIX):
        if family == FAMILY_UNIX and len(block) < _UNIX_LEN:
            raise ProxyHeaderError("PROXY UNIX address block is truncated")
        return ProxyHeader(None, None, total)
    layout, address_type = (
        (_INET, ipaddress.IPv4Address) if family == FAMILY_INET else (_INET6, ipaddress.IPv6Address)
    )
    if len(block) < layout.size:
        raise ProxyHeaderError("PROXY address block is shorter than its family needs")
    source, _, source_port, _ = layout.unpack_from(block)
    return ProxyHeader(str(address_type(source)), source_port, total)


def encode(source: str, source_port: int, destination: str, destination_port: int) -> bytes:
    """A PROXY v2 header (command PROXY, STREAM) for the given addresses. For tests and for
    tools that sit in front of a bridge; both addresses must be of one family."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version != dst.version:
        raise ValueError("source and destination must be of one address family")
    layout = _INET if src.version == 4 else _INET6
    family = FAMILY_INET if src.version == 4 else FAMILY_INET6
    block = layout.pack(src.packed, dst.packed, source_port, destination_port)
    fixed = _FIXED.pack((VERSION_2 << 4) | COMMAND_PROXY, (family << 4) | 0x1, len(block))
    return SIGNATURE + fixed + block
