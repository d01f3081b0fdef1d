"""Channel-core costs: seal/open of a chat-chunk-sized record, and one full handshake.

The handshake is measured without quote work: the evidence callbacks below echo REPORTDATA
and do no attestation (attestation costs are benchmarked with the attestation code).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from shroud_sdk.channel.connection import (
    BridgeConfig,
    BridgeConnection,
    ClientConfig,
    ClientConnection,
)
from shroud_sdk.channel.constants import DIRECTION_C2B, RecordType, Suite
from shroud_sdk.channel.evidence import Evidence
from shroud_sdk.channel.records import Limits, RecordOpener, RecordSealer

CHUNK = b'data: {"choices":[{"delta":{"content":" token"},"index":0}],"object":"chunk"}\n\n'
AUDIENCE = "bench.example.test"
_OPEN_COUNT = 50_000


@dataclass(frozen=True)
class _Echoed:
    report_data: bytes
    report: object = None


def _echo_provider(report_data: bytes, /) -> Evidence:
    return Evidence("benchmark-no-attestation", report_data)


def _echo_verifier(evidence: Evidence, suite: int, /) -> _Echoed:
    return _Echoed(evidence.quote)


def _per_call(fn: Callable[[], object], min_seconds: float = 0.5) -> tuple[float, int]:
    """Seconds per call of ``fn``, repeated until ``min_seconds`` have passed."""
    count, start = 0, time.perf_counter()
    while True:
        for _ in range(100):
            fn()
        count += 100
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / count, count


def bench_records() -> None:
    """Seal and open ~100-byte chat chunks with fresh sequence numbers."""
    key, iv = bytes(32), bytes(12)
    limits = Limits()
    sealer = RecordSealer(key, iv, DIRECTION_C2B, limits)
    seal_cost, n = _per_call(lambda: sealer.seal(RecordType.DATA, 1, CHUNK))
    print(f"seal  {len(CHUNK)} B chat chunk: {seal_cost * 1e6:8.2f} us/record  ({n} records)")
    sealer = RecordSealer(key, iv, DIRECTION_C2B, limits)
    opener = RecordOpener(key, iv, DIRECTION_C2B, limits)
    wires = [sealer.seal(RecordType.DATA, 1, CHUNK) for _ in range(_OPEN_COUNT)]
    start = time.perf_counter()
    for wire in wires:  # records must be opened in order, so each is timed once
        opener.open(wire)
    open_cost = (time.perf_counter() - start) / _OPEN_COUNT
    label = f"open  {len(CHUNK)} B chat chunk:"
    print(f"{label} {open_cost * 1e6:8.2f} us/record  ({_OPEN_COUNT} records)")


def bench_connection_records() -> None:
    """The same through the connection objects (stream state, events, queues)."""
    client, bridge = _handshake()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    for message in client.data_to_send():
        bridge.receive_data(message)
    bridge.events_received()
    bridge.send_response(sid, 200, [])
    for message in bridge.data_to_send():
        client.receive_data(message)

    def round_trip() -> None:
        bridge.send_data(sid, CHUNK)
        for message in bridge.data_to_send():
            client.receive_data(message)
        client.events_received()

    cost, n = _per_call(round_trip)
    print(f"send+receive chunk via connections: {cost * 1e6:8.2f} us/record  ({n} records)")


def _handshake(
    suite: int = Suite.P256_HKDF_SHA256_AES256GCM,
) -> tuple[ClientConnection, BridgeConnection]:
    suites = frozenset({suite})
    # Fresh-quote mode: the echo provider stands in for a quote made per handshake.
    client = ClientConnection(
        ClientConfig(
            audience=AUDIENCE, verifier=_echo_verifier, allowed_suites=suites, fresh_quote=True
        )
    )
    bridge = BridgeConnection(
        BridgeConfig(
            audience=AUDIENCE,
            evidence_provider=_echo_provider,
            usage_signing_key=_USAGE_KEY,
            suites=suites,
        )
    )
    for message in client.data_to_send():
        bridge.receive_data(message)
    for message in bridge.data_to_send():
        client.receive_data(message)
    return client, bridge


_USAGE_KEY = ec.generate_private_key(ec.SECP256R1())


def bench_handshake() -> None:
    """One full handshake (both sides, both ECDH, key schedule, fin), no quote work."""
    cost, n = _per_call(_handshake, min_seconds=1.0)
    print(f"full handshake (no quote work):     {cost * 1e3:8.3f} ms        ({n} handshakes)")
    hybrid = Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM
    cost, n = _per_call(lambda: _handshake(hybrid), min_seconds=1.0)
    print(f"  same, hybrid suite 2 (+ML-KEM):   {cost * 1e3:8.3f} ms        ({n} handshakes)")


def main() -> None:
    """Print the channel-core benchmark lines."""
    bench_records()
    bench_connection_records()
    bench_handshake()


if __name__ == "__main__":
    main()
