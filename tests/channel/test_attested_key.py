"""Attested-key mode (protocol.md §3.6, §4.3, §4.4): each attack is a test named after it.

The adversary is active on the network: it rewrites hellos, runs its own ECDH (so it can always
compute a valid ``fin``) and keeps every BridgeHello it ever saw. Some tests give it more: a
stolen attested key (the case fresh mode exists for), or the stub quoting key (a bridge that
lies about the mode). Each test isolates the one check that must stop it; the comment on each
names that check.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from shroud_sdk.channel import cbor
from shroud_sdk.channel.connection import ClientConnection
from shroud_sdk.channel.constants import CLOCK_SKEW_SECONDS, Suite
from shroud_sdk.channel.ecdsa import sign_raw, verify_raw
from shroud_sdk.channel.events import HandshakeComplete
from shroud_sdk.channel.evidence import (
    AttestedKey,
    Evidence,
    EvidenceMode,
    KeyEvidence,
    TranscriptSigner,
)
from shroud_sdk.channel.handshake import (
    BridgeHelloCore,
    ClientHello,
    compute_key_report_data,
    compute_report_data,
    compute_transcript_hash,
    decode_bridge_hello,
    encode_bridge_hello,
    load_mlkem_key,
    transcript_signature_input,
)
from shroud_sdk.channel.keyschedule import derive_session_keys, finished_mac
from shroud_sdk.errors import ConnectionFailedError, HandshakeError
from tests.channel.doubles import (
    LIFETIME,
    NOT_BEFORE,
    StubKeyEvidence,
    StubSigner,
    StubVerifier,
    handshake,
    make_bridge,
    make_client,
    make_fresh_client,
    p256_point,
    stub_key_evidence,
    stub_provider,
)

HYBRID = Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM
CLASSIC = Suite.P256_HKDF_SHA256_AES256GCM


def _genuine_bridge_hello(client_hello: bytes, **bridge_options: Any) -> bytes:
    bridge = make_bridge(**bridge_options)
    bridge.receive_data(client_hello)
    (bridge_hello,) = bridge.data_to_send()
    return bridge_hello


def _answer(
    client_hello: bytes,
    evidence: Evidence,
    *,
    signer: TranscriptSigner | None = None,
    kx_key: ec.EllipticCurvePrivateKey | None = None,
    core_bytes: bytes | None = None,
    signature: bytes | None = None,
) -> bytes:
    """A BridgeHello built by the adversary: its own key share, so ``fin`` is always right.

    ``signer`` signs the transcript (attested-key mode); without it the answer is fresh-mode
    shaped. ``core_bytes``/``signature`` replace what would be computed (replays).
    """
    hello = ClientHello.decode(client_hello)
    own = kx_key or ec.generate_private_key(ec.SECP256R1())
    usage = p256_point(ec.generate_private_key(ec.SECP256R1()))
    if core_bytes is None:
        # Classical, which every default client also offers: no ML-KEM fields to forge.
        core_bytes = BridgeHelloCore(
            1, CLASSIC, p256_point(own), usage, hello.disclose, evidence
        ).encode()
    th = compute_transcript_hash(client_hello, core_bytes)
    if signature is None and signer is not None:
        signature = signer.sign(transcript_signature_input(th))
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), hello.kx)
    keys = derive_session_keys(own.exchange(ec.ECDH(), peer), th)
    return encode_bridge_hello(
        core_bytes, finished_mac(keys.finished_key, th + (signature or b"")), signature
    )


def _expect(client: ClientConnection, message: bytes, check: str) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        client.receive_data(message)
    assert info.value.check == check, info.value
    assert client.data_to_send() == []
    with pytest.raises(ConnectionFailedError):
        client.send_request("GET", "/v1/models", [], disclosed={})
    return info.value


def _hello(client: ClientConnection) -> bytes:
    (client_hello,) = client.data_to_send()
    return client_hello


# -- the happy path and the spec formulas ---------------------------------------------------


def test_attested_key_handshake_completes_without_a_quote() -> None:
    quotes: list[bytes] = []

    def counting_provider(report_data: bytes) -> Evidence:
        quotes.append(report_data)
        return stub_provider(report_data)

    key_evidence = StubKeyEvidence()
    client = make_client()
    bridge = make_bridge(evidence_provider=counting_provider, key_evidence=key_evidence)
    (done,), (bridge_done,) = handshake(client, bridge)
    assert isinstance(done, HandshakeComplete)
    assert isinstance(bridge_done, HandshakeComplete)
    assert done.evidence_mode is bridge_done.evidence_mode is EvidenceMode.ATTESTED_KEY
    assert done.transcript_hash == bridge_done.transcript_hash
    assert quotes == []  # the handshake cost no quote
    assert key_evidence.calls == 1


def test_bridge_answers_in_the_mode_the_client_asked_for() -> None:
    for client, mode in ((make_client(), EvidenceMode.ATTESTED_KEY), (make_fresh_client(), None)):
        (done,), _ = handshake(client, make_bridge())
        assert isinstance(done, HandshakeComplete)
        assert done.evidence_mode is (mode or EvidenceMode.FRESH)


def test_client_hello_carries_fresh_only_when_asked() -> None:
    assert "fresh" not in cbor.decode(_hello(make_client()), max_len=4096)
    assert cbor.decode(_hello(make_fresh_client()), max_len=4096)["fresh"] is True


def test_key_report_data_signature_and_fin_follow_the_spec_formula() -> None:
    verifier = StubVerifier()
    key_evidence = StubKeyEvidence()
    client = make_client(verifier=verifier)
    bridge = make_bridge(key_evidence=key_evidence)
    client_hello = _hello(client)
    bridge.receive_data(client_hello)
    (bridge_hello,) = bridge.data_to_send()
    client.receive_data(bridge_hello)
    core_bytes, signature, fin = decode_bridge_hello(bridge_hello)
    assert signature is not None
    attested = key_evidence.current.evidence.attested_key
    assert attested is not None
    expected_rd = hashlib.sha512(
        b"shroud/1 attested key"
        + attested.public_key
        + struct.pack(">Q", attested.not_before)
        + struct.pack(">Q", attested.not_after)
    ).digest()
    evidence, _ = verifier.calls[0]
    assert evidence.attested_key == attested
    assert evidence.quote[10:74] == expected_rd == compute_key_report_data(attested)
    th = compute_transcript_hash(client_hello, core_bytes)
    assert client.transcript_hash == th == bridge.transcript_hash
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), attested.public_key)
    assert verify_raw(public, signature, b"shroud/1 transcript signature" + th)
    assert len(fin) == 32


def test_fin_is_computed_over_transcript_and_signature() -> None:
    # _answer computes fin = HMAC(finished_key, TH || sig) by the spec's formula, with keys it
    # derived itself: a client that accepts it agrees with the formula.
    key_evidence = stub_key_evidence()
    assert isinstance(key_evidence.signer, StubSigner)
    client = make_client()
    client.receive_data(_answer(_hello(client), key_evidence.evidence, signer=key_evidence.signer))
    (done,) = client.events_received()
    assert isinstance(done, HandshakeComplete)
    assert done.evidence_mode is EvidenceMode.ATTESTED_KEY


def test_evidence_cbor_carries_the_attested_key_map() -> None:
    evidence = stub_key_evidence().evidence
    value = evidence.to_cbor_value()
    assert set(value["attested_key"]) == {"key", "not_before", "not_after"}
    assert Evidence.from_cbor_value(value) == evidence


# -- replay, substitution, splicing ----------------------------------------------------------


def test_replayed_key_mode_bridge_hello_is_rejected() -> None:
    # The old answer's signature covers the old ClientHello (old nonce): the signature check.
    shared = StubKeyEvidence()
    old_hello = _genuine_bridge_hello(_hello(make_client()), key_evidence=shared)
    client = make_client()
    client.data_to_send()
    _expect(client, old_hello, "transcript-signature")


def test_replayed_evidence_and_signature_with_attacker_key_share_is_rejected() -> None:
    # Old evidence and signature, the attacker's own key share and a valid fin: REPORTDATA
    # (which binds only the attested key) passes, so only the transcript signature stops it.
    key_evidence = stub_key_evidence()
    old_client_hello = _hello(make_client())
    _, old_signature, _ = decode_bridge_hello(
        _genuine_bridge_hello(old_client_hello, key_evidence=StubKeyEvidence(key_evidence))
    )
    client = make_client()
    forged = _answer(_hello(client), key_evidence.evidence, signature=old_signature)
    _expect(client, forged, "transcript-signature")


def test_swapped_bridge_key_share_under_attested_key_is_rejected() -> None:
    # The genuine answer to this very ClientHello, with the attacker's key share in its core
    # (and a fin for it): the signature covers the genuine core, not this one.
    key_evidence = stub_key_evidence()
    client = make_client()
    client_hello = _hello(client)
    genuine = _genuine_bridge_hello(client_hello, key_evidence=StubKeyEvidence(key_evidence))
    core_bytes, signature, _ = decode_bridge_hello(genuine)
    core = BridgeHelloCore.decode(core_bytes)
    attacker = ec.generate_private_key(ec.SECP256R1())
    swapped = replace(core, kx=p256_point(attacker)).encode()
    forged = _answer(
        client_hello, core.evidence, kx_key=attacker, core_bytes=swapped, signature=signature
    )
    _expect(client, forged, "transcript-signature")


def test_substituted_attested_key_is_rejected() -> None:
    # The attacker keeps the genuine quote but names its own key (and signs with it): the
    # quote's REPORTDATA binds the genuine key, so the REPORTDATA comparison refuses.
    genuine = stub_key_evidence()
    attacker_key = ec.generate_private_key(ec.SECP256R1())
    attested = genuine.evidence.attested_key
    assert attested is not None
    forged_evidence = replace(
        genuine.evidence, attested_key=replace(attested, public_key=p256_point(attacker_key))
    )
    client = make_client()
    forged = _answer(_hello(client), forged_evidence, signer=StubSigner(attacker_key))
    _expect(client, forged, "report-data")


def test_stretched_validity_window_is_rejected() -> None:
    # The window is inside REPORTDATA: claiming a longer one breaks the binding.
    genuine = stub_key_evidence()
    attested = genuine.evidence.attested_key
    assert attested is not None
    stretched = replace(genuine.evidence, attested_key=replace(attested, not_after=2**40))
    client = make_client()
    _expect(client, _answer(_hello(client), stretched, signer=genuine.signer), "report-data")


def test_evidence_spliced_from_another_bridge_is_rejected() -> None:
    # Bridge B serves bridge A's (valid) evidence but can only sign with its own key.
    bridge_a, bridge_b = stub_key_evidence(), stub_key_evidence()
    spliced = KeyEvidence(bridge_a.evidence, bridge_b.signer)
    client = make_client()
    bridge_hello = _genuine_bridge_hello(_hello(client), key_evidence=StubKeyEvidence(spliced))
    _expect(client, bridge_hello, "transcript-signature")


def test_tampered_transcript_signature_is_rejected() -> None:
    client = make_client()
    client_hello = _hello(client)
    core_bytes, signature, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    assert signature is not None
    flipped = signature[:40] + bytes([signature[40] ^ 1]) + signature[41:]
    _expect(client, encode_bridge_hello(core_bytes, fin, flipped), "transcript-signature")


def test_fin_covers_the_transcript_signature() -> None:
    # Another valid signature by the same key over the same transcript (ECDSA is randomised):
    # only fin notices the BridgeHello was altered.
    key = ec.generate_private_key(ec.SECP256R1())
    key_evidence = stub_key_evidence(key)
    client = make_client()
    client_hello = _hello(client)
    genuine = _genuine_bridge_hello(client_hello, key_evidence=StubKeyEvidence(key_evidence))
    core_bytes, signature, fin = decode_bridge_hello(genuine)
    other = sign_raw(
        key, transcript_signature_input(compute_transcript_hash(client_hello, core_bytes))
    )
    assert other != signature
    _expect(client, encode_bridge_hello(core_bytes, fin, other), "fin")


# -- downgrades (protocol.md §3.6) -----------------------------------------------------------


def test_downgrade_fresh_to_attested_key_is_rejected() -> None:
    # An attacker holding a stolen (still valid) attested key answers a client that asked for a
    # fresh quote with a perfectly signed attested-key BridgeHello: only the mode check stops it.
    stolen = stub_key_evidence()
    client = make_fresh_client()
    assert isinstance(stolen.signer, StubSigner)
    forged = _answer(_hello(client), stolen.evidence, signer=stolen.signer)
    _expect(client, forged, "evidence-mode")


def test_upgrade_attested_key_to_fresh_is_rejected() -> None:
    # A client that asked for the attested key gets a valid fresh-mode answer instead: the
    # bridge must answer in exactly the mode asked for, in either direction.
    client = make_client()
    client_hello = _hello(client)
    hello = ClientHello.decode(client_hello)
    own = ec.generate_private_key(ec.SECP256R1())
    usage = p256_point(ec.generate_private_key(ec.SECP256R1()))
    report_data = compute_report_data(client_hello, CLASSIC, p256_point(own), usage)
    core = BridgeHelloCore(
        1, CLASSIC, p256_point(own), usage, hello.disclose, stub_provider(report_data)
    ).encode()
    forged = _answer(client_hello, stub_provider(report_data), kx_key=own, core_bytes=core)
    _expect(client, forged, "evidence-mode")


def test_stripped_fresh_request_is_rejected() -> None:
    # A middlebox removes "fresh" on the way to the bridge: the bridge answers with its
    # attested key, and the client (which asked for fresh) refuses the mode.
    client = make_fresh_client()
    client_hello = _hello(client)
    value = cbor.decode(client_hello, max_len=4096)
    del value["fresh"]
    _expect(client, _genuine_bridge_hello(cbor.encode(value)), "evidence-mode")


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (NOT_BEFORE - CLOCK_SKEW_SECONDS - 1, False),
        (NOT_BEFORE - CLOCK_SKEW_SECONDS, True),
        (NOT_BEFORE + LIFETIME - 1, True),
        (NOT_BEFORE + LIFETIME, False),
        (NOT_BEFORE + 10 * 365 * 86_400, False),  # a leaked key, replayed years later
    ],
)
def test_attested_key_window_is_checked_whatever_the_verifier(now: int, accepted: bool) -> None:
    # The stub verifier, like an EvidenceVerifier written before attested keys existed, judges
    # no window: the core must, or a stolen key would be good forever with such a client.
    client = make_client(clock=lambda: now)
    bridge = make_bridge(key_evidence=StubKeyEvidence())
    (client_hello,) = client.data_to_send()
    bridge.receive_data(client_hello)
    (bridge_hello,) = bridge.data_to_send()
    if accepted:
        client.receive_data(bridge_hello)
        assert isinstance(client.events_received()[0], HandshakeComplete)
    else:
        _expect(client, bridge_hello, "evidence-window")


def test_signature_without_attested_key_is_rejected() -> None:
    client = make_fresh_client()
    client_hello = _hello(client)
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    _expect(client, encode_bridge_hello(core_bytes, fin, b"\x01" * 64), "bridge-hello")


def test_attested_key_without_signature_is_rejected() -> None:
    client = make_client()
    client_hello = _hello(client)
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    _expect(client, encode_bridge_hello(core_bytes, fin), "bridge-hello")


# -- encoding ----------------------------------------------------------------------------------


def test_fresh_false_in_client_hello_is_rejected() -> None:
    value = cbor.decode(_hello(make_client()), max_len=4096)
    value["fresh"] = False
    bridge = make_bridge()
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(cbor.encode(value))
    assert info.value.check == "client-hello"


@pytest.mark.parametrize(
    "change",
    [
        {"not_before": NOT_BEFORE + 600},  # empty window
        {"not_before": NOT_BEFORE + 601},  # inverted
        {"not_after": 2**64},  # not a u64
        {"not_before": -1},
        {"not_after": True},
        {"key": b"\x04" * 64},  # wrong size
        {"extra": 1},
    ],
)
def test_malformed_attested_key_map_is_rejected(change: dict[str, object]) -> None:
    value = stub_key_evidence().evidence.to_cbor_value()
    value["attested_key"] = {**value["attested_key"], **change}
    with pytest.raises(HandshakeError) as info:
        Evidence.from_cbor_value(value)
    assert info.value.check == "evidence-format"


def test_attested_key_off_the_curve_is_rejected() -> None:
    client = make_client()
    client_hello = _hello(client)
    core_bytes, signature, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    value = cbor.decode(core_bytes, max_len=1 << 20)
    value["evidence"]["attested_key"]["key"] = b"\x04" + b"\x01" * 64
    forged = encode_bridge_hello(cbor.encode(value), fin, signature)
    _expect(client, forged, "key-share")


# -- the bridge side ---------------------------------------------------------------------------


def test_bridge_without_valid_key_evidence_refuses_and_makes_no_quote() -> None:
    quotes: list[bytes] = []

    def counting_provider(report_data: bytes) -> Evidence:
        quotes.append(report_data)
        return stub_provider(report_data)

    def expired() -> KeyEvidence:
        raise RuntimeError("attested key expired")

    for key_evidence in (expired, None):
        bridge = make_bridge(evidence_provider=counting_provider, key_evidence=key_evidence)
        with pytest.raises(HandshakeError) as info:
            bridge.receive_data(_hello(make_client()))
        assert info.value.check == "evidence-unavailable"
        assert bridge.data_to_send() == []
    assert quotes == []  # never falls back to a per-handshake quote


def test_bridge_refuses_a_signer_returning_garbage() -> None:
    class Broken:
        def sign(self, data: bytes, /) -> bytes:
            return b"short"

    current = stub_key_evidence()
    bridge = make_bridge(key_evidence=StubKeyEvidence(KeyEvidence(current.evidence, Broken())))
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(_hello(make_client()))
    assert info.value.check == "evidence-unavailable"


def test_fresh_provider_returning_attested_evidence_is_refused() -> None:
    attested = stub_key_evidence().evidence
    bridge = make_bridge(evidence_provider=lambda _rd: attested)
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(_hello(make_fresh_client()))
    assert info.value.check == "evidence-provider"


def test_key_evidence_must_carry_its_attested_key() -> None:
    with pytest.raises(ValueError, match="attested key"):
        KeyEvidence(
            stub_provider(b"\x00" * 64), StubSigner(ec.generate_private_key(ec.SECP256R1()))
        )


def test_signer_is_not_shown_in_reprs() -> None:
    current = stub_key_evidence()
    assert "signer" not in repr(current)
    assert "Signer" not in repr(current)


# -- suite-agnostic: the hybrid suite in attested-key mode ---------------------------------


def test_hybrid_suite_works_in_attested_key_mode() -> None:
    both = frozenset({CLASSIC, HYBRID})
    (done,), _ = handshake(make_client(allowed_suites=both), make_bridge(suites=both))
    assert isinstance(done, HandshakeComplete)
    assert done.suite == HYBRID
    assert done.evidence_mode is EvidenceMode.ATTESTED_KEY


def test_swapped_kem_ciphertext_under_attested_key_is_rejected() -> None:
    both = frozenset({CLASSIC, HYBRID})
    client = make_client(allowed_suites=both)
    client_hello = _hello(client)
    genuine = _genuine_bridge_hello(client_hello, suites=both)
    core_bytes, signature, fin = decode_bridge_hello(genuine)
    core = BridgeHelloCore.decode(core_bytes)
    hello = ClientHello.decode(client_hello)
    assert hello.kem is not None
    _, attacker_ct = load_mlkem_key(hello.kem).encapsulate()
    forged = encode_bridge_hello(replace(core, kem_ct=attacker_ct).encode(), fin, signature)
    _expect(client, forged, "transcript-signature")


def test_hybrid_offer_stripped_in_transit_is_rejected_under_attested_key() -> None:
    # A middlebox removes the hybrid suite (and its kem key) from the offer, so the genuine
    # bridge picks the classic suite: the key's signature covers the ClientHello it received,
    # not the one the client sent.
    both = frozenset({CLASSIC, HYBRID})
    client = make_client(allowed_suites=both)
    hello = ClientHello.decode(_hello(client))
    stripped = replace(hello, suites=(CLASSIC,), kem=None).encode()
    answer = _genuine_bridge_hello(stripped, suites=both)
    assert BridgeHelloCore.decode(decode_bridge_hello(answer)[0]).suite == CLASSIC
    _expect(client, answer, "transcript-signature")


def test_attested_key_lifetime_property() -> None:
    assert AttestedKey(b"\x04" * 65, 10, 70).lifetime == 60
