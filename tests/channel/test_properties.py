"""Property tests: nonce uniqueness across both directions, and tamper detection anywhere."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from shroud_sdk.channel.events import DataReceived
from shroud_sdk.errors import ChannelError, IntegrityError, ProtocolError
from tests.channel.doubles import connected_pair, deliver, make_client


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
