"""Stream state machine, stream ids, concurrency, HTTP field validation and disclosure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from shroud_sdk.channel import cbor
from shroud_sdk.channel.connection import ConnectionState
from shroud_sdk.channel.constants import RecordType
from shroud_sdk.channel.events import (
    ConnectionClosed,
    DataReceived,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from shroud_sdk.channel.streams import HalfState, next_state
from shroud_sdk.channel.usage import Usage
from shroud_sdk.errors import LocalProtocolError, ProtocolError
from tests.channel.doubles import connected_pair, deliver, make_bridge, make_client

CHAT = "/v1/chat/completions"


def _headers_content(method: str = "POST", path: str = CHAT, headers: Any = ()) -> bytes:
    encoded: bytes = cbor.encode({"method": method, "path": path, "headers": list(headers)})
    return encoded


# -- the transition table ------------------------------------------------------------------


def test_transition_table_allows_only_headers_data_end() -> None:
    assert next_state(HalfState.IDLE, RecordType.HEADERS, ProtocolError, 1) is HalfState.OPEN
    assert next_state(HalfState.OPEN, RecordType.DATA, ProtocolError, 1) is HalfState.OPEN
    assert next_state(HalfState.OPEN, RecordType.END, ProtocolError, 1) is HalfState.ENDED


@pytest.mark.parametrize(
    ("state", "record"),
    [
        (HalfState.IDLE, RecordType.DATA),
        (HalfState.IDLE, RecordType.END),
        (HalfState.OPEN, RecordType.HEADERS),
        (HalfState.ENDED, RecordType.DATA),
        (HalfState.ENDED, RecordType.END),
        (HalfState.ENDED, RecordType.HEADERS),
    ],
)
def test_illegal_transition_names_state_and_event(state: HalfState, record: RecordType) -> None:
    with pytest.raises(ProtocolError) as info:
        next_state(state, record, ProtocolError, 5)
    assert record.name in str(info.value)
    assert state.value in str(info.value)
    assert "stream 5" in str(info.value)


# -- local misuse is refused without sending -------------------------------------------------


def test_data_after_local_end_is_refused() -> None:
    client, _ = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    client.end_stream(sid)
    client.data_to_send()
    with pytest.raises(LocalProtocolError, match="DATA not allowed in state ended"):
        client.send_data(sid, b"more")
    assert client.data_to_send() == []


def test_bridge_data_before_response_headers_is_refused() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    with pytest.raises(LocalProtocolError, match="DATA not allowed in state idle"):
        bridge.send_data(sid, b"x")


def test_sending_on_unknown_stream_is_refused() -> None:
    client, bridge = connected_pair()
    with pytest.raises(LocalProtocolError):
        bridge.send_response(1, 200, [])
    with pytest.raises(LocalProtocolError):
        client.send_data(7, b"x")


def test_local_concurrency_limit_is_enforced() -> None:
    client, _ = connected_pair(client_options={"max_concurrent_streams": 2})
    client.send_request("GET", "/v1/models", [], disclosed={})
    client.send_request("GET", "/v1/models", [], disclosed={})
    with pytest.raises(LocalProtocolError) as info:
        client.send_request("GET", "/v1/models", [], disclosed={})
    assert info.value.check == "max-streams"


# -- the peer's violations are fatal ---------------------------------------------------------


def test_data_after_end_is_rejected() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    client.end_stream(sid)
    deliver(client, bridge)
    assert client._sealer is not None
    with pytest.raises(ProtocolError, match="DATA not allowed in state ended"):
        bridge.receive_data(client._sealer.seal(RecordType.DATA, sid, b"late"))


def test_response_data_before_headers_is_rejected() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    assert bridge._sealer is not None
    with pytest.raises(ProtocolError, match="DATA not allowed in state idle"):
        client.receive_data(bridge._sealer.seal(RecordType.DATA, sid, b"x"))


def test_stream_id_reuse_is_rejected() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("GET", "/v1/models", [], disclosed={})
    client.end_stream(sid)
    deliver(client, bridge)
    bridge.send_response(sid, 200, [])
    bridge.end_stream(sid)
    deliver(bridge, client)
    assert client._sealer is not None
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(
            client._sealer.seal(RecordType.HEADERS, sid, _headers_content(), b"\xa0")
        )
    assert info.value.check == "stream-id"


def test_lower_stream_id_is_rejected() -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    sealer = client._sealer
    bridge.receive_data(sealer.seal(RecordType.HEADERS, 5, _headers_content(), b"\xa0"))
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(sealer.seal(RecordType.HEADERS, 4, _headers_content(), b"\xa0"))
    assert info.value.check == "stream-id"


def test_peer_exceeding_concurrency_limit_is_rejected() -> None:
    client, bridge = connected_pair(bridge_options={"max_concurrent_streams": 1})
    client.send_request("GET", "/v1/models", [], disclosed={})
    client.send_request("GET", "/v1/models", [], disclosed={})
    first, second = client.data_to_send()
    bridge.receive_data(first)
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(second)
    assert info.value.check == "max-streams"


def test_record_for_never_opened_stream_is_rejected() -> None:
    client, bridge = connected_pair()
    assert bridge._sealer is not None
    with pytest.raises(ProtocolError) as info:
        client.receive_data(bridge._sealer.seal(RecordType.HEADERS, 3, cbor.encode({})))
    assert info.value.check == "stream-state"


def test_bridge_cannot_open_streams() -> None:
    client, bridge = connected_pair()
    assert bridge._sealer is not None
    content = cbor.encode({"status": 200, "headers": []})
    with pytest.raises(ProtocolError):
        client.receive_data(bridge._sealer.seal(RecordType.HEADERS, 1, content))


# -- RESET -----------------------------------------------------------------------------------


def test_client_reset_reaches_bridge_and_late_records_are_ignored() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    bridge.send_response(sid, 200, [])
    bridge.send_data(sid, b"in flight")
    in_flight = bridge.data_to_send()
    client.reset_stream(sid, 0, "user cancelled")
    events = deliver(client, bridge)
    assert events == [StreamReset(sid, 0, "user cancelled")]
    for message in in_flight:  # sent before the bridge saw the RESET
        client.receive_data(message)
    assert client.events_received() == []
    with pytest.raises(LocalProtocolError):
        bridge.send_data(sid, b"after reset")


def test_bridge_reset_reaches_client_and_then_stream_is_closed() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    bridge.reset_stream(sid, 2, "upstream failed")
    assert deliver(bridge, client) == [StreamReset(sid, 2, "upstream failed")]
    assert bridge._sealer is not None
    with pytest.raises(ProtocolError):
        client.receive_data(bridge._sealer.seal(RecordType.DATA, sid, b"x"))


def test_reset_content_is_validated() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    assert client._sealer is not None
    with pytest.raises(ProtocolError):
        bridge.receive_data(client._sealer.seal(RecordType.RESET, sid, cbor.encode({"code": -1})))


def test_reset_with_bad_code_is_refused_locally() -> None:
    client, _ = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    with pytest.raises(LocalProtocolError):
        client.reset_stream(sid, 70000)


# -- CLOSE -----------------------------------------------------------------------------------


def test_close_reports_unfinished_streams_and_is_answered() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    bridge.close(1, "going away")
    assert deliver(bridge, client) == [ConnectionClosed(1, "going away", (sid,))]
    assert client.close_expected()
    assert deliver(client, bridge) == [ConnectionClosed(1, "", (sid,))]
    with pytest.raises(LocalProtocolError):
        client.send_request("GET", "/v1/models", [], disclosed={})


def test_close_twice_is_refused() -> None:
    client, _ = connected_pair()
    client.close()
    with pytest.raises(LocalProtocolError):
        client.close()


# -- HTTP field validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("post", CHAT, []),
        ("POST", "v1/chat", []),
        ("POST", "/v1/chat completions", []),
        ("POST", "/v1/chat\r\nX: y", []),
        ("POST", CHAT, [("X-Upper", "v")]),
        ("POST", CHAT, [("x-injected", "a\r\nhost: evil")]),
        ("POST", CHAT, [("x-nul", "a\x00b")]),
        ("POST", CHAT, [("", "v")]),
    ],
    ids=[
        "lowercase-method",
        "relative-path",
        "space-in-path",
        "crlf-in-path",
        "uppercase-header",
        "header-injection",
        "nul-in-value",
        "empty-name",
    ],
)
def test_invalid_request_fields_are_refused_locally(method: str, path: str, headers: Any) -> None:
    client, _ = connected_pair()
    with pytest.raises(LocalProtocolError):
        client.send_request(method, path, headers, disclosed={})
    assert client.data_to_send() == []


def test_header_injection_from_client_is_rejected_by_bridge() -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    content = _headers_content(headers=[["x-a", "v\r\nhost: evil"]])
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.HEADERS, 1, content, b"\xa0"))
    assert info.value.check == "headers"


def test_request_headers_with_extra_field_are_rejected() -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    content = cbor.encode({"method": "GET", "path": "/", "headers": [], "x": 1})
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.HEADERS, 1, content, b"\xa0"))
    assert info.value.check == "content-format"


@pytest.mark.parametrize("status", [99, 600, True])
def test_invalid_status_is_refused(status: Any) -> None:
    client, bridge = connected_pair()
    sid = client.send_request("GET", "/v1/models", [], disclosed={})
    deliver(client, bridge)
    with pytest.raises(LocalProtocolError):
        bridge.send_response(sid, status, [])
    assert bridge._sealer is not None
    content = cbor.encode({"status": status, "headers": []})
    with pytest.raises(ProtocolError):
        client.receive_data(bridge._sealer.seal(RecordType.HEADERS, sid, content))


# -- selective disclosure ------------------------------------------------------------------


def test_disclosed_values_reach_the_bridge_in_clear_and_authenticated() -> None:
    options = {"disclose": frozenset({"model", "max_tokens", "stream"})}
    client, bridge = connected_pair(client_options=options)
    disclosed = {"model": "llama-3-8b", "max_tokens": 64, "stream": True}
    client.send_request("POST", CHAT, [], disclosed=disclosed)
    (headers,) = client.data_to_send()
    assert b"llama-3-8b" in headers  # visible to the operator
    (event,) = deliver_one(headers, bridge)
    assert isinstance(event, RequestReceived)
    assert event.disclosed == disclosed


def deliver_one(message: bytes, receiver: Any) -> list[Any]:
    receiver.receive_data(message)
    events: list[Any] = receiver.events_received()
    return events


def test_undisclosed_fields_never_appear_in_clear() -> None:
    client, bridge = connected_pair()
    client.send_request("POST", CHAT, [], disclosed={})
    (headers,) = client.data_to_send()
    assert b"model" not in headers
    (event,) = deliver_one(headers, bridge)
    assert isinstance(event, RequestReceived)
    assert event.disclosed == {}


@pytest.mark.parametrize(
    "disclosed",
    [
        {},
        {"model": "m", "n": 1},
        {"model": 3},
        {"model": "m" * 300},
    ],
    ids=["missing-field", "extra-field", "wrong-type", "too-long"],
)
def test_disclosed_values_must_match_the_negotiated_set(disclosed: dict[str, Any]) -> None:
    client, _ = connected_pair(client_options={"disclose": frozenset({"model"})})
    with pytest.raises(LocalProtocolError) as info:
        client.send_request("POST", CHAT, [], disclosed=disclosed)
    assert info.value.check == "disclosure"


def test_absent_disclosed_field_travels_as_null() -> None:
    client, bridge = connected_pair(client_options={"disclose": frozenset({"max_tokens"})})
    client.send_request("POST", CHAT, [], disclosed={"max_tokens": None})
    (event,) = deliver(client, bridge)
    assert isinstance(event, RequestReceived)
    assert event.disclosed == {"max_tokens": None}


@pytest.mark.parametrize(
    "metadata",
    [{"model": "m", "n": 2}, {}, {"model": True}],
    ids=["widened", "narrowed", "wrong-type"],
)
def test_bridge_rejects_metadata_outside_the_negotiated_set(metadata: dict[str, Any]) -> None:
    client, bridge = connected_pair(client_options={"disclose": frozenset({"model"})})
    assert client._sealer is not None
    record = client._sealer.seal(RecordType.HEADERS, 1, _headers_content(), cbor.encode(metadata))
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(record)
    assert info.value.check == "disclosure"


def test_request_headers_without_metadata_are_rejected() -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.HEADERS, 1, _headers_content()))
    assert info.value.check == "metadata"


def test_event_reprs_do_not_leak_content() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [("authorization", "Bearer sk-SECRET")], disclosed={})
    client.send_data(sid, b"my secret prompt")
    events = deliver(client, bridge)
    text = repr(events)
    assert "sk-SECRET" not in text
    assert "secret prompt" not in text
    assert isinstance(events[0], RequestReceived)
    assert events[0].headers == (("authorization", "Bearer sk-SECRET"),)
    assert events[1] == DataReceived(sid, b"my secret prompt")


def test_response_flow_events() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("GET", "/v1/models", [], disclosed={})
    client.end_stream(sid)
    deliver(client, bridge)
    bridge.send_response(sid, 200, [("content-type", "application/json")])
    bridge.send_data(sid, b"{}")
    bridge.end_stream(sid)
    assert deliver(bridge, client) == [
        ResponseReceived(sid, 200, (("content-type", "application/json"),)),
        DataReceived(sid, b"{}"),
        StreamEnded(sid, None),
    ]
    assert client._streams.streams == {}
    assert bridge._streams.streams == {}


def test_crossing_resets_are_tolerated_on_both_sides() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    client.reset_stream(sid, 0, "cancelled")
    bridge.reset_stream(sid, 2, "upstream failed")
    assert deliver(client, bridge) == []  # the bridge had already reset it
    assert deliver(bridge, client) == []
    assert client.state is bridge.state
    # The ids stay used: a new request gets a fresh id and works.
    new = client.send_request("GET", "/v1/models", [], disclosed={})
    assert new == sid + 1
    assert [type(e) for e in deliver(client, bridge)] == [RequestReceived]


# -- nothing after our own CLOSE -----------------------------------------------------------


def test_nothing_can_be_sent_after_our_own_close() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    bridge.send_response(sid, 200, [])
    client.close()
    (close_record,) = client.data_to_send()
    attempts: list[Callable[[], object]] = [
        lambda: client.send_request("GET", "/v1/models", [], disclosed={}),
        lambda: client.send_data(sid, b"after close"),
        lambda: client.end_stream(sid),
        lambda: client.reset_stream(sid, 0),
    ]
    for attempt in attempts:
        with pytest.raises(LocalProtocolError) as info:
            attempt()
        assert info.value.check == "not-open"
    assert client.data_to_send() == []
    bridge.close()
    bridge.data_to_send()
    with pytest.raises(LocalProtocolError):
        bridge.send_data(sid, b"after close")
    with pytest.raises(LocalProtocolError):
        bridge.end_stream(sid, Usage(1, 1, 2))
    assert bridge.data_to_send() == []
    bridge.receive_data(close_record)  # the exchange still completes normally
    assert bridge.state is ConnectionState.CLOSED


# -- disclosed integers are 0..2^63-1 on both sides ----------------------------------------


@pytest.mark.parametrize("value", [-1, 1 << 63, (1 << 64) - 1], ids=["minus-one", "2^63", "2^64-1"])
def test_out_of_range_disclosed_integer_is_refused_on_send(value: int) -> None:
    client, _ = connected_pair(client_options={"disclose": frozenset({"max_tokens"})})
    with pytest.raises(LocalProtocolError) as info:
        client.send_request("POST", CHAT, [], disclosed={"max_tokens": value})
    assert info.value.check == "disclosure"
    assert client.data_to_send() == []


@pytest.mark.parametrize("value", [-1, 1 << 63, (1 << 64) - 1], ids=["minus-one", "2^63", "2^64-1"])
def test_out_of_range_disclosed_integer_is_rejected_by_bridge(value: int) -> None:
    client, bridge = connected_pair(client_options={"disclose": frozenset({"max_tokens"})})
    assert client._sealer is not None
    metadata = cbor.encode({"max_tokens": value})
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(
            client._sealer.seal(RecordType.HEADERS, 1, _headers_content(), metadata)
        )
    assert info.value.check == "disclosure"


def test_largest_disclosed_integer_is_accepted() -> None:
    client, bridge = connected_pair(client_options={"disclose": frozenset({"max_tokens"})})
    client.send_request("POST", CHAT, [], disclosed={"max_tokens": (1 << 63) - 1})
    (event,) = deliver(client, bridge)
    assert isinstance(event, RequestReceived)
    assert event.disclosed == {"max_tokens": (1 << 63) - 1}


def test_oversized_disclosure_is_refused_before_a_stream_is_opened() -> None:
    # 256 four-byte characters: within the 256-character limit, but over 1024 metadata bytes.
    client, bridge = connected_pair(client_options={"disclose": frozenset({"model"})})
    with pytest.raises(LocalProtocolError) as info:
        client.send_request("POST", CHAT, [], disclosed={"model": "\U0001f600" * 256})
    assert info.value.check == "metadata-size"
    assert client.data_to_send() == []
    # Refused before a stream was opened: no id was used up.
    assert client.send_request("POST", CHAT, [], disclosed={"model": "m"}) == 1
    assert [type(e) for e in deliver(client, bridge)] == [RequestReceived]


# -- received header lists: shape and count ------------------------------------------------


_BAD_HEADER_LISTS: list[tuple[str, Any]] = [
    ("string-entry", ["ab"]),
    ("three-item-entry", [["x-a", "v", "extra"]]),
    ("one-item-entry", [["x-a"]]),
    ("bytes-name", [[b"x-a", "v"]]),
    ("integer-value", [["x-a", 1]]),
    ("not-an-array", "x-a: v"),
    ("map", {"x-a": "v"}),
]


@pytest.mark.parametrize(
    "headers", [h for _, h in _BAD_HEADER_LISTS], ids=[n for n, _ in _BAD_HEADER_LISTS]
)
def test_malformed_request_header_list_is_rejected_by_bridge(headers: Any) -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    content = cbor.encode({"method": "GET", "path": "/", "headers": headers})
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.HEADERS, 1, content, b"\xa0"))
    assert info.value.check == "headers"


@pytest.mark.parametrize(
    "headers", [h for _, h in _BAD_HEADER_LISTS], ids=[n for n, _ in _BAD_HEADER_LISTS]
)
def test_malformed_response_header_list_is_rejected_by_client(headers: Any) -> None:
    client, bridge = connected_pair()
    sid = client.send_request("GET", "/v1/models", [], disclosed={})
    deliver(client, bridge)
    assert bridge._sealer is not None
    content = cbor.encode({"status": 200, "headers": headers})
    with pytest.raises(ProtocolError) as info:
        client.receive_data(bridge._sealer.seal(RecordType.HEADERS, sid, content))
    assert info.value.check == "headers"


def _many_headers(count: int) -> list[tuple[str, str]]:
    return [(f"x-h{i}", "v") for i in range(count)]


def test_more_than_128_headers_are_refused_on_send_and_on_receive() -> None:
    client, bridge = connected_pair()
    with pytest.raises(LocalProtocolError) as info:
        client.send_request("GET", "/v1/models", _many_headers(129), disclosed={})
    assert info.value.check == "headers"
    assert client.data_to_send() == []
    assert client._sealer is not None
    content = _headers_content(headers=[list(h) for h in _many_headers(129)])
    with pytest.raises(ProtocolError) as received:
        bridge.receive_data(client._sealer.seal(RecordType.HEADERS, 1, content, b"\xa0"))
    assert received.value.check == "headers"


def test_exactly_128_headers_are_accepted() -> None:
    client, bridge = connected_pair()
    client.send_request("GET", "/v1/models", _many_headers(128), disclosed={})
    (event,) = deliver(client, bridge)
    assert isinstance(event, RequestReceived)
    assert len(event.headers) == 128


# -- RESET and CLOSE contents from the peer --------------------------------------------------


_BAD_CODE_REASONS: list[tuple[str, dict[str, Any]]] = [
    ("negative-code", {"code": -1, "reason": ""}),
    ("code-over-uint16", {"code": 0x10000, "reason": ""}),
    ("bool-code", {"code": True, "reason": ""}),
    ("text-code", {"code": "0", "reason": ""}),
    ("long-reason", {"code": 0, "reason": "r" * 257}),
    ("bytes-reason", {"code": 0, "reason": b"r"}),
    ("null-reason", {"code": 0, "reason": None}),
]


@pytest.mark.parametrize(
    "content", [c for _, c in _BAD_CODE_REASONS], ids=[n for n, _ in _BAD_CODE_REASONS]
)
def test_peer_reset_with_bad_code_or_reason_is_rejected(content: dict[str, Any]) -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    assert bridge._sealer is not None
    with pytest.raises(ProtocolError) as info:
        client.receive_data(bridge._sealer.seal(RecordType.RESET, sid, cbor.encode(content)))
    assert info.value.check == "content-format"
    assert client.events_received() == []


@pytest.mark.parametrize(
    "content", [c for _, c in _BAD_CODE_REASONS], ids=[n for n, _ in _BAD_CODE_REASONS]
)
def test_peer_close_with_bad_code_or_reason_is_rejected(content: dict[str, Any]) -> None:
    client, bridge = connected_pair()
    assert client._sealer is not None
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.CLOSE, 0, cbor.encode(content)))
    assert info.value.check == "content-format"
    assert bridge.events_received() == []


def test_longest_reason_and_largest_code_are_accepted() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    deliver(client, bridge)
    bridge.reset_stream(sid, 0xFFFF, "r" * 256)
    assert deliver(bridge, client) == [StreamReset(sid, 0xFFFF, "r" * 256)]


@pytest.mark.parametrize("reason", ["r" * 257, b"bytes", None], ids=["too-long", "bytes", "none"])
def test_bad_local_reason_is_refused_before_sending(reason: Any) -> None:
    client, _ = connected_pair()
    sid = client.send_request("POST", CHAT, [], disclosed={})
    client.data_to_send()
    with pytest.raises(LocalProtocolError) as info:
        client.reset_stream(sid, 0, reason)
    assert info.value.check == "reason"
    with pytest.raises(LocalProtocolError) as closing:
        client.close(0, reason)
    assert closing.value.check == "reason"
    assert client.data_to_send() == []
    assert client.state is ConnectionState.OPEN


# -- memory bound on locally reset streams ------------------------------------------------


def test_remembered_reset_ids_stay_bounded() -> None:
    # A client that resets stream after stream must not grow the "ignore late records" set.
    client, bridge = connected_pair(client_options={"max_concurrent_streams": 1})
    cap = 64  # max(64, 8 x max_concurrent_streams), protocol.md §6.5
    for _ in range(cap * 4):
        sid = client.send_request("POST", CHAT, [], disclosed={})
        deliver(client, bridge)
        bridge.send_response(sid, 200, [])
        deliver(bridge, client)
        client.reset_stream(sid, 0)
        deliver(client, bridge)
        assert len(client._streams._locally_reset) <= cap
    assert len(client._streams._locally_reset) == cap
    assert bridge._sealer is not None
    # The newest reset id is still remembered, so a late record for it is ignored ...
    client.receive_data(bridge._sealer.seal(RecordType.DATA, sid, b"late"))
    assert client.events_received() == []
    # ... while the first one was forgotten long ago: now it is an unknown stream.
    with pytest.raises(ProtocolError) as info:
        client.receive_data(bridge._sealer.seal(RecordType.DATA, 1, b"late"))
    assert info.value.check == "stream-state"


# -- configuration ------------------------------------------------------------------------


def test_non_disclosable_field_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="not disclosable"):
        make_client(disclose=frozenset({"messages"}))


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP256K1()], ids=["p384", "secp256k1"])
def test_usage_key_on_another_curve_cannot_be_configured(curve: ec.EllipticCurve) -> None:
    with pytest.raises(ValueError, match="P-256"):
        make_bridge(usage_signing_key=ec.generate_private_key(curve))
