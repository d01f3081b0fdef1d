"""Strict CBOR: each trap cbor2 would let through on its own is refused before use."""

from __future__ import annotations

from collections.abc import Callable

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shroud_sdk.channel import cbor
from shroud_sdk.channel.handshake import BridgeHelloCore, ClientHello, decode_bridge_hello
from shroud_sdk.channel.usage import SignedUsage
from shroud_sdk.errors import MalformedCborError, ProtocolError

LIMIT = 1 << 16


def _decode(data: bytes) -> object:
    return cbor.decode(data, max_len=LIMIT)


def test_duplicate_map_key_is_rejected() -> None:
    # {"a": 1, "a": 2}: cbor2 alone would keep the last value.
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex("a2616101616102"))
    assert info.value.check == "cbor-duplicate-key"


def test_duplicate_key_nested_in_array_is_rejected() -> None:
    with pytest.raises(MalformedCborError, match="duplicate"):
        _decode(bytes.fromhex("81a2616101616102"))


def test_trailing_bytes_are_rejected() -> None:
    good = cbor.encode({"a": 1})
    assert cbor2.loads(good + b"\x00") == {"a": 1}  # the trap: cbor2 ignores the extra byte
    with pytest.raises(MalformedCborError) as info:
        _decode(good + b"\x00")
    assert info.value.check == "cbor-trailing"


@pytest.mark.parametrize(
    "hex_item",
    [
        "9f01ff",  # indefinite array
        "bf616101ff",  # indefinite map
        "5f4101ff",  # indefinite byte string
        "7f6161ff",  # indefinite text string
    ],
)
def test_indefinite_length_items_are_rejected(hex_item: str) -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex(hex_item))
    assert info.value.check == "cbor-indefinite"


def test_oversized_item_is_rejected_before_parsing() -> None:
    with pytest.raises(MalformedCborError) as info:
        cbor.decode(cbor.encode(b"x" * 100), max_len=50)
    assert info.value.check == "cbor-size"


def test_length_claim_past_end_is_rejected() -> None:
    # A byte string claiming 2^32 bytes: must fail on the claim, not try to allocate.
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex("5b0000000100000000"))
    assert info.value.check == "cbor-truncated"


def test_huge_array_count_is_rejected_without_looping() -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex("9affffffff"))
    assert info.value.check == "cbor-truncated"


def test_excessive_nesting_is_rejected() -> None:
    deep = bytes.fromhex("81" * 20 + "01")
    with pytest.raises(MalformedCborError) as info:
        _decode(deep)
    assert info.value.check == "cbor-depth"


def test_too_many_items_are_rejected() -> None:
    many = cbor.encode(list(range(20)))
    with pytest.raises(MalformedCborError) as info:
        cbor.decode(many, max_len=LIMIT, max_items=10)
    assert info.value.check == "cbor-items"


@pytest.mark.parametrize(
    "hex_item",
    [
        "1801",  # 1 encoded in one extra byte
        "190001",  # 1 in two bytes
        "1a00000001",  # 1 in four bytes
        "1b0000000000000001",  # 1 in eight bytes
        "5801" + "00",  # 1-byte bstr with a long length
    ],
)
def test_non_shortest_integer_encoding_is_rejected(hex_item: str) -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex(hex_item))
    assert info.value.check == "cbor-non-canonical"


def test_unsorted_map_keys_are_rejected() -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex("a2616201616101"))  # {"b": 1, "a": 1}
    assert info.value.check == "cbor-key-order"


def test_non_text_map_key_is_rejected() -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex("a10101"))  # {1: 1}
    assert info.value.check == "cbor-key"


@pytest.mark.parametrize(
    "hex_item",
    [
        "c11a5f000000",  # tag 1 (epoch time)
        "f93c00",  # half float 1.0
        "fb3ff0000000000000",  # double 1.0
        "f7",  # undefined
        "f0",  # simple value 16
        "f820",  # simple value 32
    ],
)
def test_tags_floats_and_simple_values_are_rejected(hex_item: str) -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex(hex_item))
    assert info.value.check == "cbor-type"


@pytest.mark.parametrize("hex_item", ["1c", "1d", "1e"])
def test_reserved_additional_information_is_rejected(hex_item: str) -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex(hex_item))
    assert info.value.check == "cbor-reserved"


def test_truncated_item_is_rejected() -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex("a26161"))
    assert info.value.check == "cbor-truncated"


def test_empty_input_is_rejected() -> None:
    with pytest.raises(MalformedCborError):
        _decode(b"")


def test_invalid_utf8_text_is_rejected() -> None:
    with pytest.raises(MalformedCborError) as info:
        _decode(bytes.fromhex("62c328"))
    assert info.value.check == "cbor-value"


def test_malformed_cbor_is_a_protocol_error() -> None:
    assert issubclass(MalformedCborError, ProtocolError)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(_values)
def test_deterministic_encoding_round_trips_through_strict_decoder(value: object) -> None:
    encoded = cbor.encode(value)
    assert _decode(encoded) == value
    assert cbor.encode(_decode(encoded)) == encoded


@given(st.binary(max_size=64))
def test_accepted_bytes_are_canonical_and_nothing_else_escapes(data: bytes) -> None:
    # Any input is either refused with MalformedCborError or is exactly its canonical form.
    try:
        value = _decode(data)
    except MalformedCborError:
        return
    assert cbor.encode(value) == data


# {"a": "bbbb", <second pair missing>}: the header promises two pairs, the bytes end after one.
_MAP_TRUNCATED_BEFORE_A_KEY = bytes.fromhex("a261616462626262")


def test_map_truncated_before_a_key_is_malformed_not_a_crash() -> None:
    # Every public decoder reaches the scanner first; none may leak an IndexError.
    decoders: list[Callable[[bytes], object]] = [
        _decode,
        SignedUsage.from_metadata,
        ClientHello.decode,
        BridgeHelloCore.decode,
        decode_bridge_hello,
    ]
    for decoder in decoders:
        with pytest.raises(MalformedCborError) as info:
            decoder(_MAP_TRUNCATED_BEFORE_A_KEY)
        assert info.value.check == "cbor-truncated"
