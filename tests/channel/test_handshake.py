"""Handshake attacks: each test is named after what it stops, and most isolate one check.

The "attacker" helpers act as an active network adversary: they can rewrite hellos and run
their own ECDH (so they can always compute a valid ``fin``), but cannot make the stub quote
vouch for REPORTDATA of their choosing, just as they cannot forge a TDX quote.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import Suite
from shroud_sdk.channel.events import HandshakeComplete
from shroud_sdk.channel.evidence import Evidence
from shroud_sdk.channel.handshake import (
    BridgeHelloCore,
    ClientHello,
    compute_report_data,
    compute_transcript_hash,
    decode_bridge_hello,
    encode_bridge_hello,
)
from shroud_sdk.channel.keyschedule import derive_session_keys, finished_mac
from shroud_sdk.errors import (
    ChannelError,
    ConnectionFailedError,
    HandshakeError,
    LocalProtocolError,
    MalformedCborError,
)
from tests.channel.doubles import (
    AUDIENCE,
    StubVerifier,
    handshake,
    make_bridge,
    make_fresh_client,
    stub_provider,
)

SIMULATED = Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM
# Tests that rewrite hellos field by field use the classical suite (no ML-KEM fields to keep
# consistent); test_hybrid.py covers the hybrid suites.
CLASSIC_ONLY = frozenset({Suite.P256_HKDF_SHA256_AES256GCM})


def _point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _attacker_bridge_hello(client_hello: bytes, core: BridgeHelloCore) -> bytes:
    """Replace the core's key share with the attacker's own and compute a valid fin."""
    attacker = ec.generate_private_key(ec.SECP256R1())
    forged = replace(core, kx=_point(attacker))
    core_bytes = forged.encode()
    hello = ClientHello.decode(client_hello)
    client_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), hello.kx)
    th = compute_transcript_hash(client_hello, core_bytes)
    keys = derive_session_keys(attacker.exchange(ec.ECDH(), client_key), th)
    return encode_bridge_hello(core_bytes, finished_mac(keys.finished_key, th))


def _compromised_bridge_hello(client_hello: bytes, **core_changes: Any) -> bytes:
    """A bridge that holds the evidence key but lies in BridgeHello fields (not in evidence)."""
    bridge_key = ec.generate_private_key(ec.SECP256R1())
    usage_key = _point(ec.generate_private_key(ec.SECP256R1()))
    hello = ClientHello.decode(client_hello)
    suite = core_changes.pop("suite", hello.suites[0])
    rd = compute_report_data(client_hello, suite, _point(bridge_key), usage_key)
    core = BridgeHelloCore(
        1, suite, _point(bridge_key), usage_key, hello.disclose, stub_provider(rd)
    )
    core_bytes = replace(core, **core_changes).encode()
    client_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), hello.kx)
    th = compute_transcript_hash(client_hello, core_bytes)
    keys = derive_session_keys(bridge_key.exchange(ec.ECDH(), client_key), th)
    return encode_bridge_hello(core_bytes, finished_mac(keys.finished_key, th))


def _genuine_bridge_hello(client_hello: bytes, **bridge_options: Any) -> bytes:
    bridge = make_bridge(**bridge_options)
    bridge.receive_data(client_hello)
    (bridge_hello,) = bridge.data_to_send()
    return bridge_hello


def _rewrite_client_hello(client_hello: bytes, **changes: Any) -> bytes:
    value = cbor.decode(client_hello, max_len=4096)
    value.update(changes)
    encoded: bytes = cbor.encode(value)
    return encoded


def _expect_handshake_error(client: Any, message: bytes, check: str) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        client.receive_data(message)
    assert info.value.check == check
    assert client.data_to_send() == []
    with pytest.raises(ConnectionFailedError):
        client.send_request("GET", "/v1/models", [], disclosed={})
    return info.value


# -- the happy path and the spec formulas ---------------------------------------------------


def test_handshake_completes_and_both_sides_agree() -> None:
    client, bridge = make_fresh_client(disclose=frozenset({"model"})), make_bridge()
    client_events, bridge_events = handshake(client, bridge)
    (done,) = client_events
    (bridge_done,) = bridge_events
    assert isinstance(done, HandshakeComplete)
    assert isinstance(bridge_done, HandshakeComplete)
    assert done.transcript_hash == bridge_done.transcript_hash
    assert done.suite == Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM  # the default
    assert not done.simulated
    assert done.disclose == ("model",)
    assert done.report == {"stub": True, "suite": done.suite}


def test_report_data_and_transcript_follow_the_spec_formula() -> None:
    verifier = StubVerifier()
    client = make_fresh_client(verifier=verifier, allowed_suites=CLASSIC_ONLY)
    bridge = make_bridge()
    (client_hello,) = client.data_to_send()
    bridge.receive_data(client_hello)
    (bridge_hello,) = bridge.data_to_send()
    client.receive_data(bridge_hello)
    core_bytes, _, _ = decode_bridge_hello(bridge_hello)
    core = BridgeHelloCore.decode(core_bytes)
    expected_rd = hashlib.sha512(
        b"shroud/1 reportdata"
        + struct.pack(">I", len(client_hello))
        + client_hello
        + struct.pack(">H", 1)
        + core.kx
        + core.usage_key
    ).digest()
    evidence, suite = verifier.calls[0]
    assert suite == 1
    assert evidence.quote[10:74] == expected_rd
    expected_th = hashlib.sha256(
        b"shroud/1 transcript"
        + struct.pack(">I", len(client_hello))
        + client_hello
        + struct.pack(">I", len(core_bytes))
        + core_bytes
    ).digest()
    assert client.transcript_hash == expected_th == bridge.transcript_hash


def test_evidence_reaches_the_verifier_intact() -> None:
    verifier = StubVerifier()
    handshake(make_fresh_client(verifier=verifier), make_bridge())
    evidence, _ = verifier.calls[0]
    assert evidence.event_logs[0].format == "stub-log"
    assert evidence.collateral == b"{}"


def test_ephemeral_private_keys_are_dropped_after_handshake() -> None:
    client, bridge = make_fresh_client(), make_bridge()
    handshake(client, bridge)
    assert client._ephemeral is None  # forward secrecy
    assert not any(isinstance(v, ec.EllipticCurvePrivateKey) for v in vars(bridge).values())


# -- the client sends nothing before the handshake succeeds ---------------------------------


def test_no_request_before_handshake_completes() -> None:
    client = make_fresh_client()
    assert len(client.data_to_send()) == 1  # ClientHello only
    with pytest.raises(LocalProtocolError) as info:
        client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    assert info.value.check == "not-open"
    assert client.data_to_send() == []


def test_no_request_after_failed_handshake() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    bridge_hello = bytearray(_genuine_bridge_hello(client_hello))
    bridge_hello[-1] ^= 1
    _expect_handshake_error(client, bytes(bridge_hello), "fin")


# -- active attacks ------------------------------------------------------------------------


def test_replayed_bridge_hello_is_rejected() -> None:
    first = make_fresh_client()
    old_hello = _genuine_bridge_hello(first.data_to_send()[0])
    second = make_fresh_client()
    second.data_to_send()
    _expect_handshake_error(second, old_hello, "report-data")


def test_swapped_bridge_key_share_is_rejected() -> None:
    # The attacker keeps the genuine evidence but substitutes its own key share and can
    # therefore compute a valid fin: only the REPORTDATA comparison stands in the way.
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    core_bytes, _, _ = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    forged = _attacker_bridge_hello(client_hello, BridgeHelloCore.decode(core_bytes))
    _expect_handshake_error(client, forged, "report-data")


def test_swapped_client_key_share_is_rejected() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    attacker = _point(ec.generate_private_key(ec.SECP256R1()))
    bridge_hello = _genuine_bridge_hello(_rewrite_client_hello(client_hello, kx=attacker))
    _expect_handshake_error(client, bridge_hello, "report-data")


def test_modified_client_hello_nonce_is_rejected() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    tampered = _rewrite_client_hello(client_hello, nonce=b"\x00" * 32)
    _expect_handshake_error(client, _genuine_bridge_hello(tampered), "report-data")


def test_narrowed_disclosure_in_client_hello_is_rejected() -> None:
    client = make_fresh_client(disclose=frozenset({"model", "stream"}))
    (client_hello,) = client.data_to_send()
    # Server-side the bridge would now see a different set; the client notices via REPORTDATA.
    narrowed = _rewrite_client_hello(client_hello, disclose=["model"])
    bridge_hello = _genuine_bridge_hello(narrowed)
    with pytest.raises(HandshakeError) as info:
        client.receive_data(bridge_hello)
    assert info.value.check in {"disclose", "report-data"}


def test_bridge_confirming_a_widened_disclosure_set_is_rejected() -> None:
    client = make_fresh_client(disclose=frozenset({"model"}), allowed_suites=CLASSIC_ONLY)
    (client_hello,) = client.data_to_send()
    forged = _compromised_bridge_hello(client_hello, disclose=("max_tokens", "model"))
    _expect_handshake_error(client, forged, "disclose")


def test_tampered_fin_is_rejected() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    flipped = bytes([fin[0] ^ 0x80]) + fin[1:]
    _expect_handshake_error(client, encode_bridge_hello(core_bytes, flipped), "fin")


def test_tampered_evidence_is_rejected_by_verifier() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    core = BridgeHelloCore.decode(core_bytes)
    quote = bytearray(core.evidence.quote)
    quote[20] ^= 1
    bad = replace(core, evidence=replace(core.evidence, quote=bytes(quote)))
    error = _expect_handshake_error(client, encode_bridge_hello(bad.encode(), fin), "evidence")
    assert "StubEvidenceError" in str(error)


def test_wrong_audience_is_rejected_by_bridge() -> None:
    client = make_fresh_client(audience="other.example.test")
    bridge = make_bridge()
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(client.data_to_send()[0])
    assert info.value.check == "audience"
    assert bridge.data_to_send() == []


def test_diverted_client_hello_cannot_be_answered_for_another_audience() -> None:
    # A middlebox rewrites aud so a bridge of another deployment answers: REPORTDATA differs.
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    diverted = _rewrite_client_hello(client_hello, aud="evil.example.test")
    bridge_hello = _genuine_bridge_hello(diverted, audience="evil.example.test")
    _expect_handshake_error(client, bridge_hello, "report-data")


# -- key share validation ------------------------------------------------------------------


def _bad_points() -> list[tuple[str, bytes]]:
    good = _point(ec.generate_private_key(ec.SECP256R1()))
    compressed = bytes([2 + (good[-1] & 1)]) + good[1:33]
    off_curve = good[:-1] + bytes([good[-1] ^ 1])
    return [
        ("compressed", compressed),
        ("off-curve", off_curve),
        ("infinity", b"\x00"),
        ("hybrid-prefix", b"\x06" + good[1:]),
        ("all-zero", b"\x04" + bytes(64)),
        ("too-long", good + b"\x00"),
    ]


@pytest.mark.parametrize(("name", "point"), _bad_points(), ids=[n for n, _ in _bad_points()])
def test_invalid_or_compressed_client_point_is_rejected(name: str, point: bytes) -> None:
    client = make_fresh_client()
    bridge = make_bridge()
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(_rewrite_client_hello(client.data_to_send()[0], kx=point))
    assert info.value.check == "key-share"


@pytest.mark.parametrize(("name", "point"), _bad_points(), ids=[n for n, _ in _bad_points()])
def test_invalid_or_compressed_bridge_point_is_rejected(name: str, point: bytes) -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    value = cbor.decode(core_bytes, max_len=1 << 20)
    value["kx"] = point
    _expect_handshake_error(client, encode_bridge_hello(cbor.encode(value), fin), "key-share")


def test_invalid_usage_key_is_rejected() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    value = cbor.decode(core_bytes, max_len=1 << 20)
    value["usage_key"] = value["usage_key"][:33]
    _expect_handshake_error(client, encode_bridge_hello(cbor.encode(value), fin), "key-share")


# -- versions and suites -------------------------------------------------------------------


def test_unknown_version_in_client_hello_is_rejected() -> None:
    client, bridge = make_fresh_client(), make_bridge()
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(_rewrite_client_hello(client.data_to_send()[0], v=2))
    assert info.value.check == "version"


def test_unknown_version_in_bridge_hello_is_rejected() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    value = cbor.decode(core_bytes, max_len=1 << 20)
    value["v"] = 2
    _expect_handshake_error(client, encode_bridge_hello(cbor.encode(value), fin), "version")


def test_unknown_suite_only_offer_is_rejected() -> None:
    client, bridge = make_fresh_client(allowed_suites=CLASSIC_ONLY), make_bridge()
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(_rewrite_client_hello(client.data_to_send()[0], suites=[0x1234]))
    assert info.value.check == "suite"


def test_unknown_suite_ids_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="allowed_suites"):
        make_fresh_client(allowed_suites=frozenset({0x1234}))
    with pytest.raises(ValueError, match="suites"):
        make_bridge(suites=frozenset({0x1234}))


def test_default_client_refuses_simulated_tee_bridge() -> None:
    client, bridge = make_fresh_client(), make_bridge(suites=frozenset({SIMULATED}))
    with pytest.raises(HandshakeError) as info:
        handshake(client, bridge)
    assert info.value.check == "suite"


def test_bridge_choosing_an_unoffered_simulated_suite_is_rejected() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    forged = _compromised_bridge_hello(client_hello, suite=int(SIMULATED))
    _expect_handshake_error(client, forged, "suite")


def test_simulated_suite_works_only_when_explicitly_allowed() -> None:
    verifier = StubVerifier()
    client = make_fresh_client(allowed_suites=frozenset({SIMULATED}), verifier=verifier)
    (done,), _ = handshake(client, make_bridge(suites=frozenset({SIMULATED})))
    assert isinstance(done, HandshakeComplete)
    assert done.simulated
    assert done.suite == SIMULATED
    assert verifier.calls[0][1] == SIMULATED  # the verifier learns the session is simulated


def test_real_suite_is_preferred_when_both_are_allowed() -> None:
    client = make_fresh_client(
        allowed_suites=frozenset({SIMULATED, Suite.P256_HKDF_SHA256_AES256GCM})
    )
    bridge = make_bridge(suites=frozenset({SIMULATED, Suite.P256_HKDF_SHA256_AES256GCM}))
    (done,), _ = handshake(client, bridge)
    assert isinstance(done, HandshakeComplete)
    assert not done.simulated


# -- malformed hellos ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v.update(extra=1),
        lambda v: v.pop("aud"),
        lambda v: v.update(nonce=b"\x00" * 31),
        lambda v: v.update(suites=[]),
        lambda v: v.update(suites=[1, 1]),
        lambda v: v.update(aud=""),
        lambda v: v.update(disclose=["prompt"]),
        lambda v: v.update(disclose=["stream", "model"]),
        lambda v: v.update(v=True),
    ],
    ids=[
        "unknown-key",
        "missing-aud",
        "short-nonce",
        "no-suites",
        "duplicate-suite",
        "empty-aud",
        "non-disclosable-field",
        "unsorted-disclose",
        "bool-version",
    ],
)
def test_malformed_client_hello_is_rejected(mutate: Any) -> None:
    value = cbor.decode(make_fresh_client().data_to_send()[0], max_len=4096)
    mutate(value)
    bridge = make_bridge()
    with pytest.raises(HandshakeError):
        bridge.receive_data(cbor.encode(value))
    assert bridge.data_to_send() == []


def test_client_hello_with_duplicate_key_is_rejected() -> None:
    hello = make_fresh_client().data_to_send()[0]
    # Append a second "v" entry by rewriting the map header: a6 -> a7, plus "v": 1.
    forged = b"\xa7" + hello[1:] + b"\x61v\x01"
    with pytest.raises(MalformedCborError):
        make_bridge().receive_data(forged)


def test_client_hello_with_trailing_bytes_is_rejected() -> None:
    with pytest.raises(MalformedCborError) as info:
        make_bridge().receive_data(make_fresh_client().data_to_send()[0] + b"\x00")
    assert info.value.check == "cbor-trailing"


def test_oversized_client_hello_is_rejected() -> None:
    with pytest.raises(MalformedCborError) as info:
        make_bridge().receive_data(cbor.encode(b"x" * 5000))
    assert info.value.check == "cbor-size"


def test_bridge_hello_with_unknown_evidence_key_is_rejected() -> None:
    client = make_fresh_client()
    (client_hello,) = client.data_to_send()
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    value = cbor.decode(core_bytes, max_len=1 << 20)
    value["evidence"]["oracle"] = b""
    forged = encode_bridge_hello(cbor.encode(value), fin)
    _expect_handshake_error(client, forged, "evidence-format")


@pytest.mark.parametrize(
    "message",
    [b"", b"\x80", cbor.encode([b"", b"\x00" * 31]), cbor.encode({"core": b""})],
    ids=["empty", "empty-array", "short-fin", "map"],
)
def test_malformed_bridge_hello_is_rejected(message: bytes) -> None:
    client = make_fresh_client()
    client.data_to_send()
    with pytest.raises((HandshakeError, MalformedCborError)):
        client.receive_data(message)
    with pytest.raises(ConnectionFailedError):
        client.receive_data(message)


# -- the evidence callbacks ----------------------------------------------------------------


def test_verifier_rejection_surfaces_as_handshake_error() -> None:
    def refuse(evidence: Evidence, suite: int, /) -> Any:
        raise RuntimeError("policy says no")

    client = make_fresh_client(verifier=refuse)
    (client_hello,) = client.data_to_send()
    error = _expect_handshake_error(client, _genuine_bridge_hello(client_hello), "evidence")
    assert isinstance(error.__cause__, RuntimeError)


def test_verifier_handshake_errors_pass_through_unchanged() -> None:
    class AttestationFailedError(HandshakeError):
        pass

    def refuse(evidence: Evidence, suite: int, /) -> Any:
        raise AttestationFailedError("policy", "MRTD not allowed")

    client = make_fresh_client(verifier=refuse)
    (client_hello,) = client.data_to_send()
    with pytest.raises(AttestationFailedError):
        client.receive_data(_genuine_bridge_hello(client_hello))


def test_verifier_returning_short_report_data_is_rejected() -> None:
    class Short:
        report_data = b"\x00" * 32
        report = None

    client = make_fresh_client(verifier=lambda evidence, suite: Short())
    (client_hello,) = client.data_to_send()
    _expect_handshake_error(client, _genuine_bridge_hello(client_hello), "report-data")


def test_evidence_provider_failure_is_a_handshake_error() -> None:
    def broken(report_data: bytes, /) -> Evidence:
        raise OSError("configfs-tsm unavailable")

    bridge = make_bridge(evidence_provider=broken)
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(make_fresh_client().data_to_send()[0])
    assert info.value.check == "evidence-provider"
    assert bridge.data_to_send() == []


def test_provider_receives_exactly_64_bytes_of_report_data() -> None:
    seen: list[bytes] = []

    def provider(report_data: bytes, /) -> Evidence:
        seen.append(report_data)
        return stub_provider(report_data)

    handshake(make_fresh_client(), make_bridge(evidence_provider=provider))
    assert len(seen) == 1
    assert len(seen[0]) == 64


def test_eof_during_handshake_is_a_handshake_error() -> None:
    client = make_fresh_client()
    with pytest.raises(HandshakeError) as info:
        client.receive_eof()
    assert info.value.check == "eof"


def test_audience_is_required() -> None:
    with pytest.raises(ValueError, match="audience"):
        make_fresh_client(audience="")
    assert make_fresh_client().client_hello  # sanity: default AUDIENCE is valid
    assert AUDIENCE


def test_misbehaving_verifier_result_fails_closed() -> None:
    class Exploding:
        @property
        def report_data(self) -> bytes:
            raise RuntimeError("broken verifier result")

        report = None

    client = make_fresh_client(verifier=lambda evidence, suite: Exploding())
    (client_hello,) = client.data_to_send()
    with pytest.raises(ChannelError) as info:
        client.receive_data(_genuine_bridge_hello(client_hello))
    assert info.value.check == "unexpected"
    with pytest.raises(ConnectionFailedError):
        client.send_request("GET", "/v1/models", [], disclosed={})


# -- the offered suite list, as the bridge reads it ------------------------------------------


@pytest.mark.parametrize(
    "suites",
    [[True], [], [1, 2, 3, 4, 5, 6, 7, 8, 9], [70000, 1], [1, 1], [-1, 1], ["1"], b"\x01", 1],
    ids=[
        "bool",
        "empty",
        "nine",
        "over-uint16",
        "duplicate",
        "negative",
        "text",
        "byte-string",
        "integer",
    ],
)
def test_client_hello_suites_must_be_one_to_eight_unique_uint16(suites: Any) -> None:
    # Most offers also hold suite 1 (True == 1, b"\x01" iterates to 1): only this check refuses.
    client, bridge = make_fresh_client(), make_bridge()
    hello = _rewrite_client_hello(client.data_to_send()[0], suites=suites)
    with pytest.raises(HandshakeError) as info:
        bridge.receive_data(hello)
    assert info.value.check == "client-hello"
    assert bridge.data_to_send() == []


# -- key share encoding: only the 65-byte uncompressed form ----------------------------------


def _non_uncompressed_encodings() -> list[tuple[str, bytes]]:
    good = _point(ec.generate_private_key(ec.SECP256R1()))
    parity = good[-1] & 1
    return [
        # The same point, compressed: a valid SEC 1 encoding cryptography would load.
        ("compressed", bytes([2 + parity]) + good[1:33]),
        ("compressed-other-parity", bytes([3 - parity]) + good[1:33]),
        # 65 bytes with every prefix but 0x04.
        ("65-bytes-prefix-02", b"\x02" + good[1:]),
        ("65-bytes-prefix-03", b"\x03" + good[1:]),
        ("65-bytes-prefix-06", b"\x06" + good[1:]),
        ("65-bytes-prefix-00", b"\x00" + good[1:]),
        # 0x04 with the wrong length.
        ("04-short", good[:33]),
        ("04-long", good + b"\x00"),
    ]


@pytest.mark.parametrize(
    ("name", "point"),
    _non_uncompressed_encodings(),
    ids=[n for n, _ in _non_uncompressed_encodings()],
)
def test_key_share_not_in_uncompressed_form_is_refused_as_such(name: str, point: bytes) -> None:
    # The refusal names the encoding rule, not whatever cryptography says later.
    client, bridge = make_fresh_client(), make_bridge()
    (client_hello,) = client.data_to_send()
    with pytest.raises(HandshakeError, match="not an uncompressed P-256 point") as info:
        bridge.receive_data(_rewrite_client_hello(client_hello, kx=point))
    assert info.value.check == "key-share"
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    value = cbor.decode(core_bytes, max_len=1 << 20)
    value["kx"] = point
    error = _expect_handshake_error(
        client, encode_bridge_hello(cbor.encode(value), fin), "key-share"
    )
    assert "not an uncompressed P-256 point" in str(error)
