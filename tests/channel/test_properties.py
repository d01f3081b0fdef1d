"""Property tests: nonce uniqueness, tamper detection anywhere, decoders that never crash."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from unittest.mock import patch

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import Suite
from shroud_sdk.channel.events import DataReceived
from shroud_sdk.channel.handshake import BridgeHelloCore, ClientHello, decode_bridge_hello
from shroud_sdk.channel.usage import SignedUsage, Usage
from shroud_sdk.errors import ChannelError, IntegrityError, MalformedCborError, ProtocolError
from tests.channel.doubles import connected_pair, deliver, make_bridge, make_client


def _recording_aesgcm(log: list[tuple[bytes, bytes]]) -> type:
    """An AESGCM stand-in that logs the real (key, nonce) of every encryption."""

    class RecordingAESGCM:
        def __init__(self, key: bytes) -> None:
            self._inner = AESGCM(key)
            self._key = key

        def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
            log.append((self._key, nonce))
            return self._inner.encrypt(nonce, data, associated_data)

        def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
            return self._inner.decrypt(nonce, data, associated_data)

    return RecordingAESGCM


_actions = st.lists(
    st.tuples(st.sampled_from(["c2b", "b2c"]), st.binary(min_size=1, max_size=300)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=40, deadline=None)
@given(_actions)
def test_no_key_nonce_pair_repeats_in_either_direction(actions: list[tuple[str, bytes]]) -> None:
    log: list[tuple[bytes, bytes]] = []
    with patch("shroud_sdk.channel.records.AESGCM", _recording_aesgcm(log)):
        client, bridge = connected_pair()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    deliver(client, bridge)
    bridge.send_response(sid, 200, [])
    deliver(bridge, client)
    received: list[bytes] = []
    for direction, chunk in actions:
        sender, receiver = (client, bridge) if direction == "c2b" else (bridge, client)
        sender.send_data(sid, chunk)
        received += [e.data for e in deliver(sender, receiver) if isinstance(e, DataReceived)]
    assert received == [chunk for _, chunk in actions]
    assert len(log) == len(actions) + 2
    assert len(set(log)) == len(log)
    assert len({key for key, _ in log}) == 2  # one key per direction


def test_sessions_use_unrelated_keys() -> None:
    (c1, b1), (c2, _b2) = connected_pair(), connected_pair()
    assert c1.transcript_hash != c2.transcript_hash
    assert c1.export_keying_material(b"test", b"", 32) == b1.export_keying_material(
        b"test", b"", 32
    )
    assert c1.export_keying_material(b"test", b"", 32) != c2.export_keying_material(
        b"test", b"", 32
    )


_flip = st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=7))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2), _flip)
def test_any_single_bit_flip_is_detected(which: int, flip: tuple[int, int]) -> None:
    client, bridge = connected_pair(client_options={"disclose": frozenset({"model"})})
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={"model": "m"})
    client.send_data(sid, b"prompt")
    client.end_stream(sid)
    messages = client.data_to_send()
    for message in messages[:which]:
        bridge.receive_data(message)
    target = bytearray(messages[which])
    index, bit = flip[0] % len(target), flip[1]
    target[index] ^= 1 << bit
    bridge.events_received()
    with pytest.raises((IntegrityError, ProtocolError)):
        bridge.receive_data(bytes(target))
    assert bridge.events_received() == []


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_messages_never_crash_a_connection(message: bytes) -> None:
    _client, bridge = connected_pair()
    with pytest.raises(ChannelError):
        bridge.receive_data(message)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_bridge_hello_never_crashes_a_client(message: bytes) -> None:
    client = make_client()
    client.data_to_send()
    with pytest.raises(ChannelError):
        client.receive_data(message)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=24, max_size=300))
def test_random_records_never_crash_an_open_connection(message: bytes) -> None:
    client, bridge = connected_pair()
    for conn in (client, bridge):
        with pytest.raises(ChannelError):
            conn.receive_data(message)


# -- every public decoder: any input is a value or a typed channel error, never a crash ------


def _decode_cbor(data: bytes) -> object:
    return cbor.decode(data, max_len=1 << 20)


def _valid_inputs() -> dict[str, tuple[Callable[[bytes], object], bytes]]:
    """Each public decoder with one genuine message it accepts (hybrid, so every key appears)."""
    hybrid = frozenset({Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM})
    client = make_client(allowed_suites=hybrid, disclose=frozenset({"model", "n"}))
    bridge = make_bridge(suites=hybrid)
    (client_hello,) = client.data_to_send()
    bridge.receive_data(client_hello)
    (bridge_hello,) = bridge.data_to_send()
    core, _sig, _fin = decode_bridge_hello(bridge_hello)
    usage = SignedUsage(Usage(1, 2, 3), b"\x01" * 64).to_metadata()
    return {
        "cbor": (_decode_cbor, client_hello),
        "client-hello": (ClientHello.decode, client_hello),
        "bridge-hello": (decode_bridge_hello, bridge_hello),
        "bridge-hello-core": (BridgeHelloCore.decode, core),
        "usage-metadata": (SignedUsage.from_metadata, usage),
    }


_INPUTS = _valid_inputs()


def _typed_error_or_value(decoder: Callable[[bytes], object], data: bytes) -> None:
    # Only ChannelError is caught: an IndexError, KeyError or TypeError fails the test.
    with contextlib.suppress(ChannelError):
        decoder(data)


@pytest.mark.parametrize("name", sorted(_INPUTS))
def test_every_truncation_of_a_valid_message_is_a_typed_error(name: str) -> None:
    decoder, message = _INPUTS[name]
    decoder(message)  # the untruncated message is accepted
    for end in range(len(message)):
        with pytest.raises(MalformedCborError) as info:
            decoder(message[:end])
        assert info.value.check == "cbor-truncated", (end, info.value)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(_INPUTS)), st.binary(max_size=300))
def test_random_input_to_any_decoder_is_a_typed_error(name: str, data: bytes) -> None:
    _typed_error_or_value(_INPUTS[name][0], data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(_INPUTS)), st.data())
def test_mutated_or_truncated_valid_input_is_a_typed_error(name: str, data: st.DataObject) -> None:
    decoder, message = _INPUTS[name]
    edited = bytearray(message)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=0, max_value=len(edited) - 1))
        edited[index] = data.draw(st.integers(min_value=0, max_value=255))
    end = data.draw(st.integers(min_value=0, max_value=len(edited)))
    _typed_error_or_value(decoder, bytes(edited[:end]))
