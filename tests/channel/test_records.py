"""Record-layer attacks: tampering, reordering, dropping, replay, splicing, truncation, limits."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shroud_sdk.channel.connection import BridgeConnection, ClientConnection
from shroud_sdk.channel.constants import (
    DIRECTION_C2B,
    MAX_CONTENT_LEN,
    RECORD_HEADER_LEN,
    RecordType,
)
from shroud_sdk.channel.events import DataReceived, StreamEnded
from shroud_sdk.channel.keyschedule import SessionKeys
from shroud_sdk.channel.records import Limits, RecordOpener, RecordSealer, nonce_for, padded_length
from shroud_sdk.errors import (
    ConnectionFailedError,
    IntegrityError,
    LocalProtocolError,
    ProtocolError,
    RekeyRequiredError,
)
from tests.channel.doubles import connected_pair, deliver, make_bridge, make_client

KEY = bytes(range(32))
IV = bytes(range(100, 112))


def _request(
    client: ClientConnection, body: bytes = b'{"messages": []}'
) -> tuple[int, list[bytes]]:
    """Client sends HEADERS, DATA, END; return the stream id and the three wire records."""
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    client.send_data(sid, body)
    client.end_stream(sid)
    return sid, client.data_to_send()


def _flip(message: bytes, index: int, bit: int = 0x01) -> bytes:
    out = bytearray(message)
    out[index] ^= bit
    return bytes(out)


def _assert_dead(conn: ClientConnection | BridgeConnection, good_message: bytes) -> None:
    """After a failure, even a valid record is refused and nothing can be sent."""
    with pytest.raises(ConnectionFailedError):
        conn.receive_data(good_message)
    assert conn.data_to_send() == []
    assert conn._sealer is None
    assert conn._opener is None
    if isinstance(conn, ClientConnection):
        with pytest.raises(ConnectionFailedError):
            conn.send_request("GET", "/v1/models", [], disclosed={})


# -- the record format, as the spec states it ----------------------------------------------


def test_record_encoding_matches_spec() -> None:
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits())
    sealer.seal(RecordType.DATA, 7, b"first")
    wire = sealer.seal(RecordType.DATA, 7, b"hello", b"")
    header = struct.pack(">BBHI", 1, 2, 0, 7)
    inner = struct.pack(">I", 5) + b"hello" + bytes(64 - 9)
    seq1_nonce = (int.from_bytes(IV, "big") ^ 1).to_bytes(12, "big")
    expected = header + AESGCM(KEY).encrypt(seq1_nonce, inner, b"shroud/1 c2b" + header)
    assert wire == expected
    assert nonce_for(IV, 1) == seq1_nonce


def test_metadata_is_cleartext_and_authenticated() -> None:
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits())
    meta = b"\xa1emodelam"
    wire = sealer.seal(RecordType.HEADERS, 1, b"x", meta)
    assert wire[RECORD_HEADER_LEN : RECORD_HEADER_LEN + len(meta)] == meta
    opener = RecordOpener(KEY, IV, DIRECTION_C2B, Limits())
    record = opener.open(wire)
    assert record.metadata == meta
    assert record.content == b"x"


@pytest.mark.parametrize(
    ("content_len", "bucket"),
    [(0, 64), (60, 64), (61, 128), (100, 128), (1000, 1024), (MAX_CONTENT_LEN, 16384)],
)
def test_padding_hides_length_within_a_bucket(content_len: int, bucket: int) -> None:
    assert padded_length(content_len) == bucket
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits())
    wire = sealer.seal(RecordType.DATA, 1, b"a" * content_len)
    assert len(wire) == RECORD_HEADER_LEN + bucket + 16


def test_same_bucket_contents_have_equal_wire_length() -> None:
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits())
    assert len(sealer.seal(RecordType.DATA, 1, b"a")) == len(
        sealer.seal(RecordType.DATA, 1, b"a" * 60)
    )


def test_oversized_content_is_refused_locally() -> None:
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits())
    with pytest.raises(LocalProtocolError):
        sealer.seal(RecordType.DATA, 1, b"a" * (MAX_CONTENT_LEN + 1))


def test_nonzero_padding_is_rejected() -> None:
    # Authenticated but malformed: a conforming sender never produces it.
    header = struct.pack(">BBHI", 1, 2, 0, 1)
    inner = struct.pack(">I", 1) + b"x" + b"\x01" + bytes(64 - 6)
    wire = header + AESGCM(KEY).encrypt(nonce_for(IV, 0), inner, DIRECTION_C2B + header)
    with pytest.raises(ProtocolError) as info:
        RecordOpener(KEY, IV, DIRECTION_C2B, Limits()).open(wire)
    assert info.value.check == "record-padding"


def test_content_length_past_padding_is_rejected() -> None:
    header = struct.pack(">BBHI", 1, 2, 0, 1)
    inner = struct.pack(">I", 61) + bytes(60)
    wire = header + AESGCM(KEY).encrypt(nonce_for(IV, 0), inner, DIRECTION_C2B + header)
    with pytest.raises(ProtocolError) as info:
        RecordOpener(KEY, IV, DIRECTION_C2B, Limits()).open(wire)
    assert info.value.check == "record-padding"


def test_inner_length_off_bucket_is_rejected_before_decryption() -> None:
    wire = RecordSealer(KEY, IV, DIRECTION_C2B, Limits()).seal(RecordType.DATA, 1, b"x")
    with pytest.raises(ProtocolError) as info:
        RecordOpener(KEY, IV, DIRECTION_C2B, Limits()).open(wire + b"\x00")
    assert info.value.check == "record-padding"


@pytest.mark.parametrize("size", [0, 5, RECORD_HEADER_LEN + 15, 20000])
def test_records_of_impossible_size_are_rejected(size: int) -> None:
    with pytest.raises(ProtocolError) as info:
        RecordOpener(KEY, IV, DIRECTION_C2B, Limits()).open(bytes(size))
    assert info.value.check == "record-size"


def test_metadata_length_past_the_end_is_rejected() -> None:
    wire = RecordSealer(KEY, IV, DIRECTION_C2B, Limits()).seal(RecordType.DATA, 1, b"x")
    forged = wire[:2] + struct.pack(">H", 1000) + wire[4:]
    with pytest.raises(ProtocolError):
        RecordOpener(KEY, IV, DIRECTION_C2B, Limits()).open(forged)


# -- tampering on a live connection ----------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "index"),
    [
        ("header-version", 0),
        ("header-type", 1),
        ("header-stream-id", 7),
        ("ciphertext", RECORD_HEADER_LEN + 3),
        ("tag", -1),
    ],
)
def test_bit_flip_in_record_is_rejected(where: str, index: int) -> None:
    client, bridge = connected_pair()
    _, (headers, data, _end) = _request(client)
    bridge.receive_data(headers)
    with pytest.raises(IntegrityError) as info:
        bridge.receive_data(_flip(data, index))
    assert info.value.check == "record-auth"
    assert bridge.events_received()[-1:] != [DataReceived(1, b'{"messages": []}')]
    _assert_dead(bridge, data)


def test_bit_flip_in_disclosed_metadata_is_rejected() -> None:
    client, bridge = connected_pair(client_options={"disclose": frozenset({"model"})})
    client.send_request("POST", "/v1/chat/completions", [], disclosed={"model": "small"})
    (headers,) = client.data_to_send()
    index = headers.index(b"small")
    with pytest.raises(IntegrityError):
        bridge.receive_data(headers[:index] + b"large" + headers[index + 5 :])
    assert bridge.events_received() == []


def test_reordered_records_are_rejected() -> None:
    client, bridge = connected_pair()
    _, (headers, data, end) = _request(client)
    bridge.receive_data(headers)
    with pytest.raises(IntegrityError):
        bridge.receive_data(end)
    _assert_dead(bridge, data)


def test_dropped_record_is_rejected() -> None:
    client, bridge = connected_pair()
    _, (headers, _data, end) = _request(client)
    bridge.receive_data(headers)
    with pytest.raises(IntegrityError):
        bridge.receive_data(end)


def test_duplicated_record_is_rejected() -> None:
    client, bridge = connected_pair()
    _, (headers, data, _end) = _request(client)
    bridge.receive_data(headers)
    bridge.receive_data(data)
    with pytest.raises(IntegrityError):
        bridge.receive_data(data)


def test_reflected_record_is_rejected() -> None:
    client, _bridge = connected_pair()
    _, (headers, _data, _end) = _request(client)
    with pytest.raises(IntegrityError):
        client.receive_data(headers)  # the client's own record bounced back at it


def test_cross_stream_splice_is_rejected() -> None:
    client, bridge = connected_pair()
    first = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    second = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    client.send_data(first, b"secret for stream one")
    h1, h2, data = client.data_to_send()
    bridge.receive_data(h1)
    bridge.receive_data(h2)
    moved = data[:4] + struct.pack(">I", second) + data[8:]  # claim it belongs to stream 2
    with pytest.raises(IntegrityError):
        bridge.receive_data(moved)


def test_cross_connection_splice_is_rejected() -> None:
    client_a, _bridge_a = connected_pair()
    _client_b, bridge_b = connected_pair()
    _, (headers_a, _, _) = _request(client_a)
    with pytest.raises(IntegrityError):
        bridge_b.receive_data(headers_a)  # same position, other session's keys


def test_flipped_close_is_rejected() -> None:
    client, bridge = connected_pair()
    client.close()
    (close,) = client.data_to_send()
    with pytest.raises(IntegrityError):
        bridge.receive_data(_flip(close, -3))


# -- truncation ----------------------------------------------------------------------------


def test_truncation_missing_end_is_detected() -> None:
    client, bridge = connected_pair()
    sid, records = _request(client)
    deliver(client, bridge)
    for message in records:
        bridge.receive_data(message)
    bridge.events_received()
    bridge.send_response(sid, 200, [])
    bridge.send_data(sid, b"partial answer")
    headers, data, *_ = bridge.data_to_send()
    client.receive_data(headers)
    client.receive_data(data)
    with pytest.raises(IntegrityError) as info:
        client.receive_eof()  # the network cut the stream before END
    assert info.value.check == "truncation"
    assert "open streams [1]" in str(info.value)


def test_truncation_missing_close_is_detected() -> None:
    client, bridge = connected_pair()
    sid, records = _request(client)
    for message in records:
        bridge.receive_data(message)
    bridge.send_response(sid, 200, [])
    bridge.end_stream(sid)
    events = deliver(bridge, client)
    assert isinstance(events[-1], StreamEnded)
    with pytest.raises(IntegrityError) as info:
        client.receive_eof()  # all streams done, but no authenticated CLOSE
    assert info.value.check == "truncation"


def test_eof_after_close_exchange_is_clean() -> None:
    client, bridge = connected_pair()
    client.close()
    deliver(client, bridge)
    deliver(bridge, client)
    client.receive_eof()
    bridge.receive_eof()
    assert client.close_expected()
    assert bridge.close_expected()


def test_record_after_close_is_rejected() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("GET", "/v1/models", [], disclosed={})
    (headers,) = client.data_to_send()
    bridge.receive_data(headers)
    bridge.close()
    (close,) = bridge.data_to_send()
    late = bridge._sealer  # a broken bridge keeps sending after its CLOSE
    client.receive_data(close)
    assert late is not None
    with pytest.raises(ProtocolError) as info:
        client.receive_data(late.seal(RecordType.HEADERS, sid, b"\xa0"))
    assert info.value.check == "after-close"


# -- authenticated but illegal records (a buggy or hostile peer) ------------------------------


def test_unknown_record_type_is_rejected() -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(9, 1, b""))
    assert info.value.check == "record-type"


def test_unknown_record_version_is_rejected() -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    sealer = client._sealer
    header = struct.pack(">BBHI", 2, 2, 0, 1)
    inner = struct.pack(">I", 1) + b"x" + bytes(59)
    wire = header + sealer._aead.encrypt(sealer._nonce(), inner, DIRECTION_C2B + header)
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(wire)
    assert info.value.check == "version"


def test_metadata_on_client_data_is_rejected() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    deliver(client, bridge)
    assert client._sealer is not None
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.DATA, sid, b"x", b"\xa0"))
    assert info.value.check == "metadata"


def test_empty_data_record_is_rejected() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    deliver(client, bridge)
    assert client._sealer is not None
    with pytest.raises(ProtocolError):
        bridge.receive_data(client._sealer.seal(RecordType.DATA, sid, b""))


def test_end_with_content_is_rejected() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    deliver(client, bridge)
    assert client._sealer is not None
    with pytest.raises(ProtocolError):
        bridge.receive_data(client._sealer.seal(RecordType.END, sid, b"smuggled"))


def test_close_on_a_stream_is_rejected() -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.CLOSE, 3, b"\xa0"))
    assert info.value.check == "close-format"


def test_stream_record_on_stream_zero_is_rejected() -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.DATA, 0, b"x"))
    assert info.value.check == "stream-id"


# -- limits --------------------------------------------------------------------------------


def test_sequence_limit_overflow_forces_new_handshake() -> None:
    client, _bridge = connected_pair(
        client_options={"limits": Limits(max_records=3)},
        bridge_options={"limits": Limits(max_records=3)},
    )
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    client.send_data(sid, b"a")
    client.end_stream(sid)
    with pytest.raises(RekeyRequiredError) as info:
        client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    assert "new handshake" in str(info.value)
    assert len(client.data_to_send()) == 3  # nothing sealed for the refused request
    assert not client.close_expected()  # not fatal: responses can still arrive


def test_peer_exceeding_sequence_limit_is_rejected() -> None:
    client, bridge = connected_pair(bridge_options={"limits": Limits(max_records=2)})
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    client.send_data(sid, b"a")
    client.send_data(sid, b"b")
    headers, one, two = client.data_to_send()
    bridge.receive_data(headers)
    bridge.receive_data(one)
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(two)
    assert info.value.check == "receive-limit"


def test_byte_limit_forces_new_handshake() -> None:
    client, _bridge = connected_pair(client_options={"limits": Limits(max_bytes=300)})
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    client.send_data(sid, b"a" * 100)  # 64 + 128 bytes used
    with pytest.raises(RekeyRequiredError):
        client.send_data(sid, b"a" * 100)
    assert len(client.data_to_send()) == 2


def test_multi_record_send_is_all_or_nothing_at_the_limit() -> None:
    client, _bridge = connected_pair(client_options={"limits": Limits(max_records=3)})
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    with pytest.raises(RekeyRequiredError):
        client.send_data(sid, b"a" * (MAX_CONTENT_LEN * 2 + 1))  # needs 3 more records
    assert len(client.data_to_send()) == 1


@pytest.mark.parametrize("kwargs", [{"max_records": 0}, {"max_records": 1 << 24}, {"max_bytes": 0}])
def test_limits_cannot_exceed_the_spec(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Limits(**kwargs)


def test_sealer_refuses_past_its_record_limit() -> None:
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits(max_records=1))
    sealer.seal(RecordType.DATA, 1, b"x")
    with pytest.raises(RekeyRequiredError):
        sealer.seal(RecordType.DATA, 1, b"x")
    assert sealer.seq == 1


def test_sealer_refuses_past_its_byte_limit() -> None:
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits(max_bytes=100))
    sealer.seal(RecordType.DATA, 1, b"x")
    with pytest.raises(RekeyRequiredError):
        sealer.seal(RecordType.DATA, 1, b"x")


def test_metadata_on_bridge_headers_is_rejected() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("GET", "/v1/models", [], disclosed={})
    deliver(client, bridge)
    assert bridge._sealer is not None
    content = b"\xa2gheaders\x80fstatus\x18\xc8"
    with pytest.raises(ProtocolError) as info:
        client.receive_data(bridge._sealer.seal(RecordType.HEADERS, sid, content, b"\xa0"))
    assert info.value.check == "metadata"


def test_oversized_metadata_length_is_rejected_before_decryption() -> None:
    wire = RecordSealer(KEY, IV, DIRECTION_C2B, Limits()).seal(RecordType.DATA, 1, b"x")
    forged = wire[:2] + struct.pack(">H", 1025) + wire[4:8] + bytes(1025) + wire[8:]
    with pytest.raises(ProtocolError) as info:
        RecordOpener(KEY, IV, DIRECTION_C2B, Limits()).open(forged)
    assert info.value.check == "record-size"
    assert "metadata length" in str(info.value)


def _connection_with_known_keys(conn: ClientConnection | BridgeConnection, client: bool) -> None:
    conn.data_to_send()  # the client's hello, not part of this test
    keys = SessionKeys(
        c2b_key=bytes([1]) * 32,
        c2b_iv=bytes([2]) * 12,
        b2c_key=bytes([3]) * 32,
        b2c_iv=bytes([4]) * 12,
        finished_key=bytes(32),
        exporter_secret=bytes(32),
    )
    conn._start_records(keys, bytes(32), client=client)


@pytest.mark.parametrize(
    ("side", "label", "key", "iv"),
    [
        # The direction labels exactly as docs/protocol.md §6.1 spells them.
        ("client", b"shroud/1 c2b", bytes([1]) * 32, bytes([2]) * 12),
        ("bridge", b"shroud/1 b2c", bytes([3]) * 32, bytes([4]) * 12),
    ],
)
def test_records_use_the_spec_direction_label_as_aad(
    side: str, label: bytes, key: bytes, iv: bytes
) -> None:
    conn: ClientConnection | BridgeConnection = make_client() if side == "client" else make_bridge()
    _connection_with_known_keys(conn, client=side == "client")
    conn.close(0, "bye")
    (wire,) = conn.data_to_send()
    header = struct.pack(">BBHI", 1, 5, 0, 0)
    content = bytes.fromhex("a264636f64650066726561736f6e63627965")  # {"code": 0, "reason": "bye"}
    inner = struct.pack(">I", len(content)) + content + bytes(64 - 4 - len(content))
    assert wire == header + AESGCM(key).encrypt(iv, inner, label + header)


def test_sealer_refuses_oversized_metadata_and_seals_nothing() -> None:
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits())
    with pytest.raises(LocalProtocolError) as info:
        sealer.seal(RecordType.HEADERS, 1, b"x", b"m" * 1025)
    assert info.value.check == "metadata-size"
    assert sealer.seq == 0
    # 1024 bytes is the limit, not past it; it opens on the other side.
    wire = sealer.seal(RecordType.HEADERS, 1, b"x", b"m" * 1024)
    assert RecordOpener(KEY, IV, DIRECTION_C2B, Limits()).open(wire).metadata == b"m" * 1024


def test_an_opened_records_repr_shows_no_content() -> None:
    # Records hold decrypted application data: a log line or a traceback that prints one
    # must not show it (the metadata is cleartext on the wire, its length is enough too).
    sealer = RecordSealer(KEY, IV, DIRECTION_C2B, Limits())
    opener = RecordOpener(KEY, IV, DIRECTION_C2B, Limits())
    record = opener.open(sealer.seal(RecordType.DATA, 1, b"the patient's diagnosis"))
    assert record.content == b"the patient's diagnosis"
    assert "diagnosis" not in repr(record)
    assert "23 bytes" in repr(record)
