"""Loopback demo of the shroud/1 channel core: a client and a bridge in one process.

WARNING: this demo does NOT attest anything. Its "evidence" just echoes REPORTDATA, so it
shows the handshake, records, streams, disclosure and signed usage, not the TDX security.
A later version of this demo runs the real attested end-to-end path.

Run with ``make demo``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from shroud_sdk.channel.connection import (
    BridgeConfig,
    BridgeConnection,
    ClientConfig,
    ClientConnection,
)
from shroud_sdk.channel.events import (
    DataReceived,
    Event,
    HandshakeComplete,
    RequestReceived,
    StreamEnded,
)
from shroud_sdk.channel.evidence import Evidence
from shroud_sdk.channel.usage import Usage

AUDIENCE = "demo.shroud.invalid"


@dataclass(frozen=True)
class _DemoVerified:
    report_data: bytes
    report: str


def demo_provider(report_data: bytes, /) -> Evidence:
    """NOT attestation: puts REPORTDATA where a quote would go."""
    return Evidence("demo-not-attested", report_data)


def demo_verifier(evidence: Evidence, suite: int, /) -> _DemoVerified:
    """NOT attestation: believes whatever REPORTDATA the 'evidence' claims."""
    print("  !! demo verifier: NOT attesting anything (no TDX quote is checked)")
    return _DemoVerified(evidence.quote, "demo: not attested")


def pump(
    sender: ClientConnection | BridgeConnection, receiver: ClientConnection | BridgeConnection
) -> list[Event]:
    """Carry every pending message across, as a WebSocket would; return receiver's events."""
    messages = sender.data_to_send()
    for message in messages:
        receiver.receive_data(message)
    print(f"  {len(messages)} message(s), {sum(map(len, messages))} bytes on the wire")
    return receiver.events_received()


def main() -> None:
    """Run one attested-shaped (but not attested) chat request through the channel."""
    print("shroud/1 channel loopback demo -- NOT ATTESTED: no TDX quote is produced or checked")
    client = ClientConnection(
        ClientConfig(audience=AUDIENCE, verifier=demo_verifier, disclose=frozenset({"model"}))
    )
    bridge = BridgeConnection(
        BridgeConfig(
            audience=AUDIENCE,
            evidence_provider=demo_provider,
            usage_signing_key=ec.generate_private_key(ec.SECP256R1()),
        )
    )
    print("handshake: ClientHello ->")
    pump(client, bridge)
    print("handshake: <- BridgeHello")
    (done,) = pump(bridge, client)
    assert isinstance(done, HandshakeComplete)
    print(f"  suite {done.suite}, disclosed {list(done.disclose)}, report: {done.report}")

    body = {"model": "demo-model", "messages": [{"role": "user", "content": "Hello?"}]}
    print("request: HEADERS + DATA + END ->")
    sid = client.send_request(
        "POST",
        "/v1/chat/completions",
        [("content-type", "application/json")],
        disclosed={"model": body["model"]},
    )
    client.send_data(sid, json.dumps(body).encode())
    client.end_stream(sid)
    for event in pump(client, bridge):
        if isinstance(event, RequestReceived):
            print(f"  bridge sees {event.method} {event.path}, disclosed {dict(event.disclosed)}")

    print("response: streamed SSE chunks + signed usage <-")
    bridge.send_response(sid, 200, [("content-type", "text/event-stream")])
    for token in ("Hi", " there", "!"):
        chunk = {"choices": [{"delta": {"content": token}}]}
        bridge.send_data(sid, f"data: {json.dumps(chunk)}\n\n".encode())
    bridge.send_data(sid, b"data: [DONE]\n\n")
    bridge.end_stream(sid, Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12))
    text = b""
    for event in pump(bridge, client):
        if isinstance(event, DataReceived):
            text += event.data
        elif isinstance(event, StreamEnded) and event.usage is not None:
            print(f"  usage (signature verified): {event.usage.usage}")
    print("  body:", text.decode().replace("\n\n", " | "))

    client.close()
    pump(client, bridge)
    pump(bridge, client)
    print(f"closed: client {client.state.value}, bridge {bridge.state.value}")


if __name__ == "__main__":
    main()
