"""Test doubles for the channel's evidence seam, and helpers that wire a client to a bridge.

The stub "quote" is ``MAGIC || REPORTDATA || HMAC(test key, MAGIC || REPORTDATA)``: like a
real quote it cannot be re-targeted to other REPORTDATA without the signing key, so the
handshake tests exercise the core's own REPORTDATA, ``fin`` and binding checks. Never
shipped: the real provider and verifier come with the attestation work.

``StubKeyEvidence`` is the attested-key mode's double: a real P-256 key whose public half and
window a stub quote binds, and a signer holding the private half.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shroud_sdk.channel.connection import (
    BridgeConfig,
    BridgeConnection,
    ClientConfig,
    ClientConnection,
)
from shroud_sdk.channel.ecdsa import sign_raw
from shroud_sdk.channel.events import Event
from shroud_sdk.channel.evidence import AttestedKey, EventLog, Evidence, KeyEvidence
from shroud_sdk.channel.handshake import compute_key_report_data

STUB_TYPE = "stub"
_MAGIC = b"STUBQUOTE1"
_SIGNING_KEY = b"test-double evidence key, not a secret"
AUDIENCE = "inference.example.test"
NOT_BEFORE = 1_750_000_000
LIFETIME = 600


class StubEvidenceError(Exception):
    """The stub verifier refused evidence (stands in for an attestation failure)."""


def _mac(body: bytes) -> bytes:
    return hmac.new(_SIGNING_KEY, body, hashlib.sha256).digest()


def stub_provider(report_data: bytes) -> Evidence:
    """Bridge-side double: 'sign' REPORTDATA like a quoting enclave would."""
    body = _MAGIC + report_data
    return Evidence(
        STUB_TYPE,
        body + _mac(body),
        (EventLog("stub-log", b"\x00" * 8),),
        collateral=b"{}",
    )


class StubSigner:
    """The private half of a stub attested key (a real P-256 key)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self.signed: list[bytes] = []

    def __repr__(self) -> str:
        return "StubSigner()"

    def sign(self, data: bytes, /) -> bytes:
        self.signed.append(data)
        return sign_raw(self._key, data)


def p256_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The uncompressed public point of ``key``."""
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def stub_key_evidence(
    key: ec.EllipticCurvePrivateKey | None = None,
    not_before: int = NOT_BEFORE,
    not_after: int = NOT_BEFORE + LIFETIME,
) -> KeyEvidence:
    """Attested-key evidence: a stub quote over the binding of ``key`` and its window."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    attested = AttestedKey(p256_point(key), not_before, not_after)
    evidence = replace(stub_provider(compute_key_report_data(attested)), attested_key=attested)
    return KeyEvidence(evidence, StubSigner(key))


class StubKeyEvidence:
    """Bridge-side double for attested-key mode: always the same ``KeyEvidence``."""

    def __init__(self, current: KeyEvidence | None = None) -> None:
        self.current = current or stub_key_evidence()
        self.calls = 0

    def __call__(self) -> KeyEvidence:
        self.calls += 1
        return self.current


@dataclass(frozen=True)
class StubVerified:
    """What the stub verifier returns."""

    report_data: bytes
    report: object


@dataclass
class StubVerifier:
    """Client-side double: checks the stub MAC and returns the REPORTDATA it proves."""

    calls: list[tuple[Evidence, int]] = field(default_factory=list)

    def __call__(self, evidence: Evidence, suite: int, /) -> StubVerified:
        self.calls.append((evidence, suite))
        quote = evidence.quote
        body, tag = quote[:-32], quote[-32:]
        if evidence.type != STUB_TYPE or not body.startswith(_MAGIC) or len(body) != 74:
            raise StubEvidenceError("not stub evidence")
        if not hmac.compare_digest(tag, _mac(body)):
            raise StubEvidenceError("stub quote signature invalid")
        return StubVerified(body[len(_MAGIC) :], {"stub": True, "suite": suite})


def make_client(**overrides: Any) -> ClientConnection:
    """A client with the stub verifier and a clock inside the stub attested key's window;
    keyword overrides go to ``ClientConfig``."""
    options: dict[str, Any] = {
        "audience": AUDIENCE,
        "verifier": StubVerifier(),
        "clock": lambda: float(NOT_BEFORE + 1),
    }
    options.update(overrides)
    return ClientConnection(ClientConfig(**options))


def make_fresh_client(**overrides: Any) -> ClientConnection:
    """A client that asks for a quote over each handshake (fresh mode)."""
    return make_client(**{"fresh_quote": True, **overrides})


def make_bridge(**overrides: Any) -> BridgeConnection:
    """A bridge with the stub provider and a fresh usage key; overrides go to ``BridgeConfig``."""
    options: dict[str, Any] = {
        "audience": AUDIENCE,
        "evidence_provider": stub_provider,
        "key_evidence": StubKeyEvidence(),
        "usage_signing_key": ec.generate_private_key(ec.SECP256R1()),
    }
    options.update(overrides)
    return BridgeConnection(BridgeConfig(**options))


def handshake(
    client: ClientConnection, bridge: BridgeConnection
) -> tuple[list[Event], list[Event]]:
    """Run the one round trip; return (client events, bridge events)."""
    (client_hello,) = client.data_to_send()
    bridge.receive_data(client_hello)
    (bridge_hello,) = bridge.data_to_send()
    client.receive_data(bridge_hello)
    return client.events_received(), bridge.events_received()


def connected_pair(
    client_options: dict[str, Any] | None = None, bridge_options: dict[str, Any] | None = None
) -> tuple[ClientConnection, BridgeConnection]:
    """A client and a bridge that completed the handshake (events drained)."""
    client = make_client(**(client_options or {}))
    bridge = make_bridge(**(bridge_options or {}))
    handshake(client, bridge)
    return client, bridge


def deliver(sender: ClientConnection | BridgeConnection, receiver: Any) -> list[Event]:
    """Move every pending message from ``sender`` to ``receiver``; return receiver's events."""
    for message in sender.data_to_send():
        receiver.receive_data(message)
    events: list[Event] = receiver.events_received()
    return events
