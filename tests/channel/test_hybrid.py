"""Suite 2: hybrid P-256 + ML-KEM-768 key agreement, and the attacks on its extra fields."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, mlkem

from shroud_sdk.channel import cbor
from shroud_sdk.channel.connection import ClientConnection
from shroud_sdk.channel.constants import Suite
from shroud_sdk.channel.events import HandshakeComplete, RequestReceived
from shroud_sdk.channel.handshake import (
    BridgeHelloCore,
    ClientHello,
    decode_bridge_hello,
    encode_bridge_hello,
)
from shroud_sdk.channel.keyschedule import derive_session_keys, export_keying_material
from shroud_sdk.errors import ConnectionFailedError, HandshakeError
from tests.channel.doubles import (
    StubVerifier,
    deliver,
    handshake,
    make_bridge,
    make_client,
    make_fresh_client,
)

CLASSIC = Suite.P256_HKDF_SHA256_AES256GCM
HYBRID = Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM
BOTH = frozenset({CLASSIC, HYBRID})
SIM_CLASSIC = Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM
SIM_HYBRID = Suite.SIMULATED_TEE_HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM
SIMULATED = frozenset({SIM_CLASSIC, SIM_HYBRID})


def _genuine_bridge_hello(client_hello: bytes, suites: frozenset[int] = BOTH) -> bytes:
    bridge = make_bridge(suites=suites)
    bridge.receive_data(client_hello)
    (bridge_hello,) = bridge.data_to_send()
    return bridge_hello


def _expect_refusal(client_hello: bytes, check: str) -> None:
    with pytest.raises(HandshakeError) as info:
        make_bridge(suites=BOTH).receive_data(client_hello)
    assert info.value.check == check


def test_hybrid_handshake_completes_and_carries_requests() -> None:
    client, bridge = make_fresh_client(allowed_suites=BOTH), make_bridge(suites=BOTH)
    (done,), (bridge_done,) = handshake(client, bridge)
    assert isinstance(done, HandshakeComplete)
    assert isinstance(bridge_done, HandshakeComplete)
    assert done.suite == HYBRID == bridge_done.suite
    assert not done.simulated
    sid = client.send_request("GET", "/v1/models", [], disclosed={})
    (event,) = deliver(client, bridge)
    assert isinstance(event, RequestReceived)
    assert event.stream_id == sid


def test_hybrid_is_preferred_and_offered_with_a_kem_key() -> None:
    client = make_fresh_client(allowed_suites=BOTH)
    hello = ClientHello.decode(client.data_to_send()[0])
    assert hello.suites == (HYBRID, CLASSIC)
    assert hello.kem is not None
    assert len(hello.kem) == 1184


def test_classic_bridge_still_serves_a_hybrid_capable_client() -> None:
    client = make_fresh_client(allowed_suites=BOTH)
    (done,), _ = handshake(client, make_bridge(suites=frozenset({CLASSIC})))
    assert isinstance(done, HandshakeComplete)
    assert done.suite == CLASSIC
    assert client._kem_key is None  # dropped even though unused


def test_kem_private_key_is_dropped_after_handshake() -> None:
    client = make_fresh_client(allowed_suites=BOTH)
    assert client._kem_key is not None
    handshake(client, make_bridge(suites=BOTH))
    assert client._kem_key is None


def test_hybrid_key_schedule_and_report_data_follow_the_spec() -> None:
    verifier = StubVerifier()
    client = make_fresh_client(allowed_suites=BOTH, verifier=verifier)
    ecdh_key, kem_key = client._ephemeral, client._kem_key
    assert ecdh_key is not None
    assert kem_key is not None
    (client_hello,) = client.data_to_send()
    bridge_hello = _genuine_bridge_hello(client_hello)
    client.receive_data(bridge_hello)
    core_bytes, _, _ = decode_bridge_hello(bridge_hello)
    core = BridgeHelloCore.decode(core_bytes)
    assert core.kem_ct is not None
    expected_rd = hashlib.sha512(
        b"shroud/1 reportdata"
        + struct.pack(">I", len(client_hello))
        + client_hello
        + struct.pack(">H", HYBRID)
        + core.kx
        + core.usage_key
        + core.kem_ct
    ).digest()
    assert verifier.calls[0][0].quote[10:74] == expected_rd
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), core.kx)
    shared = ecdh_key.exchange(ec.ECDH(), peer) + kem_key.decapsulate(core.kem_ct)
    keys = derive_session_keys(shared, client.transcript_hash)
    ours = export_keying_material(keys.exporter_secret, b"check", b"", 32)
    assert client.export_keying_material(b"check", b"", 32) == ours


def test_swapped_kem_ciphertext_is_rejected() -> None:
    client = make_fresh_client(allowed_suites=BOTH)
    (client_hello,) = client.data_to_send()
    core_bytes, _, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    core = BridgeHelloCore.decode(core_bytes)
    ek = ClientHello.decode(client_hello).kem
    assert ek is not None
    _, attacker_ct = mlkem.MLKEM768PublicKey.from_public_bytes(ek).encapsulate()
    forged = encode_bridge_hello(replace(core, kem_ct=attacker_ct).encode(), fin)
    with pytest.raises(HandshakeError) as info:
        client.receive_data(forged)
    assert info.value.check == "report-data"
    with pytest.raises(ConnectionFailedError):
        client.send_request("GET", "/v1/models", [], disclosed={})


def test_swapped_client_kem_key_is_rejected() -> None:
    client = make_fresh_client(allowed_suites=BOTH)
    (client_hello,) = client.data_to_send()
    attacker = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
    value = cbor.decode(client_hello, max_len=4096)
    value["kem"] = attacker
    with pytest.raises(HandshakeError) as info:
        client.receive_data(_genuine_bridge_hello(cbor.encode(value)))
    assert info.value.check == "report-data"


def test_hybrid_offer_without_kem_key_is_rejected() -> None:
    value = cbor.decode(make_fresh_client(allowed_suites=BOTH).data_to_send()[0], max_len=4096)
    del value["kem"]
    _expect_refusal(cbor.encode(value), "client-hello")


def test_kem_key_without_hybrid_offer_is_rejected() -> None:
    value = cbor.decode(make_fresh_client(allowed_suites=BOTH).data_to_send()[0], max_len=4096)
    value["suites"] = [CLASSIC]
    _expect_refusal(cbor.encode(value), "client-hello")


@pytest.mark.parametrize(
    "kem", [b"\x00" * 1183, b"\xff" * 1184, 5], ids=["short", "coefficients-out-of-range", "int"]
)
def test_malformed_kem_key_is_rejected(kem: object) -> None:
    value = cbor.decode(make_fresh_client(allowed_suites=BOTH).data_to_send()[0], max_len=4096)
    value["kem"] = kem
    _expect_refusal(cbor.encode(value), "key-share")


def _bridge_hello_with(client_hello: bytes, **changes: object) -> bytes:
    core_bytes, signature, fin = decode_bridge_hello(_genuine_bridge_hello(client_hello))
    value = cbor.decode(core_bytes, max_len=1 << 20)
    for key, new in changes.items():
        if new is None:
            value.pop(key, None)
        else:
            value[key] = new
    return encode_bridge_hello(cbor.encode(value), fin, signature)


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"kem_ct": None}, "bridge-hello"),
        ({"kem_ct": b"\x00" * 1087}, "key-share"),
        ({"suite": int(CLASSIC)}, "bridge-hello"),
    ],
    ids=["hybrid-without-ciphertext", "short-ciphertext", "ciphertext-with-classic-suite"],
)
def test_malformed_hybrid_bridge_hello_is_rejected(changes: dict[str, object], check: str) -> None:
    client = make_fresh_client(allowed_suites=BOTH)
    (client_hello,) = client.data_to_send()
    with pytest.raises(HandshakeError) as info:
        client.receive_data(_bridge_hello_with(client_hello, **changes))
    assert info.value.check == check


def test_malformed_kem_key_is_rejected_even_when_hybrid_is_not_chosen() -> None:
    value = cbor.decode(make_fresh_client(allowed_suites=BOTH).data_to_send()[0], max_len=4096)
    value["kem"] = b"\xff" * 1184
    with pytest.raises(HandshakeError) as info:
        make_bridge(suites=frozenset({CLASSIC})).receive_data(cbor.encode(value))
    assert info.value.check == "key-share"


# -- post-quantum by default -------------------------------------------------------------------


def test_default_client_offers_the_hybrid_suite_first() -> None:
    hello = ClientHello.decode(make_client().data_to_send()[0])
    assert hello.suites == (HYBRID, CLASSIC)
    assert hello.kem is not None


def test_default_client_and_bridge_negotiate_the_hybrid_suite() -> None:
    (done,), (bridge_done,) = handshake(make_client(), make_bridge())
    assert isinstance(done, HandshakeComplete)
    assert isinstance(bridge_done, HandshakeComplete)
    assert done.suite == HYBRID == bridge_done.suite


def test_simulated_tee_has_a_hybrid_twin_preferred_over_the_classical_one() -> None:
    client = make_client(allowed_suites=BOTH | SIMULATED)
    hello = ClientHello.decode(client.client_hello)
    assert hello.suites == (HYBRID, CLASSIC, SIM_HYBRID, SIM_CLASSIC)
    (done,), _ = handshake(client, make_bridge(suites=SIMULATED))
    assert isinstance(done, HandshakeComplete)
    assert done.suite == SIM_HYBRID
    assert done.simulated


def test_simulated_hybrid_offer_without_kem_key_is_rejected() -> None:
    value = cbor.decode(make_client(allowed_suites=SIMULATED).data_to_send()[0], max_len=4096)
    del value["kem"]
    with pytest.raises(HandshakeError) as info:
        make_bridge(suites=SIMULATED).receive_data(cbor.encode(value))
    assert info.value.check == "client-hello"


def test_simulated_hybrid_bridge_hello_without_ciphertext_is_rejected() -> None:
    client = make_client(allowed_suites=SIMULATED)
    (client_hello,) = client.data_to_send()
    bridge = make_bridge(suites=SIMULATED)
    bridge.receive_data(client_hello)
    core_bytes, signature, fin = decode_bridge_hello(bridge.data_to_send()[0])
    value = cbor.decode(core_bytes, max_len=1 << 20)
    assert value["suite"] == SIM_HYBRID
    del value["kem_ct"]
    with pytest.raises(HandshakeError) as info:
        client.receive_data(encode_bridge_hello(cbor.encode(value), fin, signature))
    assert info.value.check == "bridge-hello"


def _strip_hybrid_offer(client_hello: bytes) -> bytes:
    """What a downgrading middlebox sends on: the offer without suite 2 and its KEM key."""
    value = cbor.decode(client_hello, max_len=4096)
    value["suites"] = [s for s in value["suites"] if s not in (HYBRID, SIM_HYBRID)]
    del value["kem"]
    return cbor.encode(value)


# In fresh mode the quote's REPORTDATA binds the exact ClientHello; in attested-key mode the
# bridge's transcript signature does (protocol.md §1, "Downgrade").
MODES = pytest.mark.parametrize(
    ("make", "check"),
    [(make_fresh_client, "report-data"), (make_client, "transcript-signature")],
    ids=["fresh", "attested-key"],
)


@MODES
def test_middlebox_stripping_the_hybrid_offer_is_refused(
    make: Callable[[], ClientConnection], check: str
) -> None:
    # The bridge supports both suites and, seeing only suite 1 offered, picks it and proves
    # the hello it received. The client refuses: that is not the ClientHello it sent.
    client = make()
    (client_hello,) = client.data_to_send()
    bridge = make_bridge(suites=BOTH)
    bridge.receive_data(_strip_hybrid_offer(client_hello))
    (bridge_hello,) = bridge.data_to_send()
    assert BridgeHelloCore.decode(decode_bridge_hello(bridge_hello)[0]).suite == CLASSIC
    with pytest.raises(HandshakeError) as info:
        client.receive_data(bridge_hello)
    assert info.value.check == check
    with pytest.raises(ConnectionFailedError):
        client.send_request("GET", "/v1/models", [], disclosed={})


@MODES
def test_middlebox_rewriting_the_chosen_suite_to_classical_is_refused(
    make: Callable[[], ClientConnection], check: str
) -> None:
    # The other direction: the bridge chose suite 2; the middlebox rewrites BridgeHello to
    # suite 1 and drops kem_ct (the client did offer suite 1, so the suite check passes).
    client = make()
    (client_hello,) = client.data_to_send()
    forged = _bridge_hello_with(client_hello, suite=int(CLASSIC), kem_ct=None)
    with pytest.raises(HandshakeError) as info:
        client.receive_data(forged)
    assert info.value.check == check


def test_post_quantum_only_client_is_refused_by_a_classical_bridge() -> None:
    client = make_client(allowed_suites=frozenset({HYBRID}))
    (client_hello,) = client.data_to_send()
    assert ClientHello.decode(client_hello).suites == (HYBRID,)
    with pytest.raises(HandshakeError) as info:
        make_bridge(suites=frozenset({CLASSIC})).receive_data(client_hello)
    assert info.value.check == "suite"
    assert "this bridge supports [1]; the client offered [2]" in info.value.reason


def test_post_quantum_only_client_refuses_a_bridge_that_picks_classical() -> None:
    client = make_client(allowed_suites=frozenset({HYBRID}))
    (client_hello,) = client.data_to_send()
    forged = _bridge_hello_with(client_hello, suite=int(CLASSIC), kem_ct=None)
    with pytest.raises(HandshakeError) as info:
        client.receive_data(forged)
    assert info.value.check == "suite"
    assert "chose suite 1 (classical P-256)" in info.value.reason
    assert "offered 2 (hybrid P-256 + ML-KEM-768, post-quantum)" in info.value.reason
