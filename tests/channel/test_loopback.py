"""End to end in one process: a client and a bridge exchanging HTTP-like traffic."""

from __future__ import annotations

import json

from shroud_sdk.channel.connection import ConnectionState
from shroud_sdk.channel.constants import MAX_CONTENT_LEN
from shroud_sdk.channel.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
)
from shroud_sdk.channel.usage import Usage
from tests.channel.doubles import connected_pair, deliver


def _bodies(events: list[Event]) -> dict[int, bytes]:
    bodies: dict[int, bytes] = {}
    for event in events:
        if isinstance(event, DataReceived):
            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
    return bodies


def test_concurrent_streams_carry_requests_and_streamed_responses() -> None:
    client, bridge = connected_pair(client_options={"disclose": frozenset({"model", "stream"})})
    prompts = {f"prompt {i}": f"model-{i % 2}" for i in range(5)}
    sids: dict[int, str] = {}
    for prompt, model in prompts.items():
        body = json.dumps({"model": model, "stream": True, "messages": [prompt]}).encode()
        sid = client.send_request(
            "POST",
            "/v1/chat/completions",
            [("content-type", "application/json")],
            disclosed={"model": model, "stream": True},
        )
        sids[sid] = prompt
        client.send_data(sid, body[: len(body) // 2])
    for sid in sids:  # second halves interleaved across streams
        prompt = sids[sid]
        body = json.dumps({"model": prompts[prompt], "stream": True, "messages": [prompt]}).encode()
        client.send_data(sid, body[len(body) // 2 :])
        client.end_stream(sid)

    events = deliver(client, bridge)
    requests = [e for e in events if isinstance(e, RequestReceived)]
    assert [r.stream_id for r in requests] == list(sids)
    for request in requests:
        assert request.path == "/v1/chat/completions"
        assert request.disclosed["model"] == prompts[sids[request.stream_id]]
    bodies = _bodies(events)
    for sid, prompt in sids.items():
        assert json.loads(bodies[sid])["messages"] == [prompt]
    assert sum(isinstance(e, StreamEnded) for e in events) == len(sids)

    # The bridge answers in reverse order with SSE chunks, interleaved.
    for sid in reversed(sids):
        bridge.send_response(sid, 200, [("content-type", "text/event-stream")])
    for token in ("Hel", "lo", "!"):
        for sid in sids:
            bridge.send_data(sid, f"data: {token} {sid}\n\n".encode())
    for sid in sids:
        bridge.send_data(sid, b"data: [DONE]\n\n")
        bridge.end_stream(sid, Usage(5, 3, 8))

    events = deliver(bridge, client)
    statuses = {e.stream_id: e.status for e in events if isinstance(e, ResponseReceived)}
    assert statuses == dict.fromkeys(sids, 200)
    bodies = _bodies(events)
    for sid in sids:
        expected = f"data: Hel {sid}\n\ndata: lo {sid}\n\ndata: ! {sid}\n\ndata: [DONE]\n\n"
        assert bodies[sid] == expected.encode()
    ended = [e for e in events if isinstance(e, StreamEnded)]
    assert all(e.usage is not None and e.usage.usage == Usage(5, 3, 8) for e in ended)
    assert len(ended) == len(sids)

    client.close()
    assert deliver(client, bridge) == [ConnectionClosed(0, "", ())]
    assert deliver(bridge, client) == [ConnectionClosed(0, "", ())]
    assert client.state is ConnectionState.CLOSED
    assert bridge.state is ConnectionState.CLOSED


def test_large_body_is_split_into_records_and_reassembled() -> None:
    client, bridge = connected_pair()
    body = bytes(range(256)) * 200  # 51200 bytes: four records
    sid = client.send_request("POST", "/v1/embeddings", [], disclosed={})
    client.send_data(sid, body)
    client.end_stream(sid)
    messages = client.data_to_send()
    assert len(messages) == 1 + -(-len(body) // MAX_CONTENT_LEN) + 1
    for message in messages:
        bridge.receive_data(message)
    assert _bodies(bridge.events_received())[sid] == body


def test_many_sequential_requests_on_one_connection() -> None:
    client, bridge = connected_pair()
    for i in range(50):
        sid = client.send_request("GET", "/v1/models", [], disclosed={})
        client.end_stream(sid)
        deliver(client, bridge)
        bridge.send_response(sid, 200, [])
        bridge.send_data(sid, str(i).encode())
        bridge.end_stream(sid)
        events = deliver(bridge, client)
        assert _bodies(events) == {sid: str(i).encode()}
    assert client._streams.streams == {}
