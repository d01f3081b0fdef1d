"""PROXY protocol v2 headers (HAProxy's proxy-protocol.txt section 2.2), parsed sans-I/O."""

from __future__ import annotations

import struct

import pytest

from bridge.proxy_protocol import (
    MAX_HEADER_LEN,
    SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    encode,
    parse,
)

# The example the specification's users show: HAProxy sending 172.19.0.1:42578 -> :80.
HAPROXY_V4 = bytes.fromhex("0d0a0d0a000d0a515549540a2111000cac130001ac130003a6520050")


def _header(data: bytes) -> ProxyHeader:
    header = parse(data)
    assert header is not None
    return header


def test_an_ipv4_header_from_haproxy_names_the_client() -> None:
    header = _header(HAPROXY_V4 + b"GET / HTTP/1.1\r\n")
    assert (header.source, header.source_port, header.length) == ("172.19.0.1", 42578, 28)


def test_encoded_headers_parse_back_in_both_families() -> None:
    assert encode("172.19.0.1", 42578, "172.19.0.3", 80) == HAPROXY_V4
    header = _header(encode("2001:db8::7", 5000, "2001:db8::1", 443))
    assert (header.source, header.source_port, header.length) == ("2001:db8::7", 5000, 52)


def test_every_prefix_of_a_header_asks_for_more() -> None:
    for cut in range(len(HAPROXY_V4)):
        assert parse(HAPROXY_V4[:cut]) is None


def test_tlvs_after_the_addresses_are_skipped_and_counted() -> None:
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP with 3 bytes
    fixed = HAPROXY_V4[:14] + struct.pack(">H", 12 + len(tlv))
    data = fixed + HAPROXY_V4[16:] + tlv + b"GET"
    header = _header(data)
    assert header.source == "172.19.0.1"
    assert data[header.length :] == b"GET"


def test_local_command_means_the_connection_itself() -> None:
    local = SIGNATURE + bytes([0x20, 0x00]) + struct.pack(">H", 0)
    assert _header(local) == ProxyHeader(None, None, 16)


def test_unspecified_family_means_the_connection_itself() -> None:
    unspec = SIGNATURE + bytes([0x21, 0x00]) + struct.pack(">H", 0)
    assert _header(unspec).source is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no header where one is required
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",  # version 1 (text) is not accepted
        SIGNATURE[:5] + b"X",
        SIGNATURE + bytes([0x11, 0x11]) + struct.pack(">H", 12) + bytes(12),  # version 1
        SIGNATURE + bytes([0x22, 0x11]) + struct.pack(">H", 12) + bytes(12),  # command 2
        SIGNATURE + bytes([0x21, 0x41]) + struct.pack(">H", 12) + bytes(12),  # family 4
        SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", 4) + bytes(4),  # short INET
        SIGNATURE + bytes([0x21, 0x21]) + struct.pack(">H", 12) + bytes(12),  # short INET6
        SIGNATURE + bytes([0x21, 0x31]) + struct.pack(">H", 8) + bytes(8),  # short UNIX
    ],
)
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)


def test_a_header_longer_than_the_bound_is_refused_before_it_arrives() -> None:
    huge = SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", MAX_HEADER_LEN)
    with pytest.raises(ProxyHeaderError, match="longer than"):
        parse(huge)
