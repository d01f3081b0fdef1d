"""Post-quantum by default: the SDK negotiates a hybrid P-256 + ML-KEM-768 suite with real
bridges, and a policy can require it.

Simulated bridges have a hybrid twin suite, so the default path is the one exercised here. A
bridge that predates the hybrid suite is played by an in-process bridge announcing only the
classical simulated suite; a downgrading middlebox by the relay rewriting the ClientHello.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shroud_sdk
from attestation.policy import Policy
from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import HYBRID_SUITES, MAX_CLIENT_HELLO_LEN, Suite
from shroud_sdk.errors import AttestationFailedError
from shroud_sdk.session import OutgoingRequest, SessionConfig, SyncSession
from tests.bridgeproc import BridgeProcess
from tests.relay import Direction, Fault, FaultKind, ThreadedRelay
from tests.sdk.harness import AUDIENCE, ThreadBridge, thread_bridge

CLASSIC_SIMULATED = frozenset({Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM})


def _with(policy: Policy, **changes: Any) -> Policy:
    data = policy.model_dump(exclude={"custom_checks"})
    data.update(changes)
    return Policy(**data)


@pytest.fixture
def classical_bridge(tmp_path: Path) -> Iterator[ThreadBridge]:
    """A bridge that knows only the classical (simulated) suite, like one built before suite 2."""
    with thread_bridge(tmp_path / "bridge", suites=CLASSIC_SIMULATED) as bridge:
        yield bridge


def test_report_names_a_hybrid_suite_by_default_against_a_simulated_bridge(
    bridge: BridgeProcess,
) -> None:
    with shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=bridge.policy_path) as c:
        c.models.list()
        report = c.attestation
    assert report is not None
    assert report.suite is Suite.SIMULATED_TEE_HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM
    assert report.post_quantum
    assert "suite: 32514 (hybrid P-256 + ML-KEM-768, SIMULATED TEE)" in report.summary()


def test_classical_bridge_still_serves_a_default_client(classical_bridge: ThreadBridge) -> None:
    with shroud_sdk.OpenAI(
        bridge_url=classical_bridge.url,
        api_key="k",
        policy=classical_bridge.policy,
        audience=AUDIENCE,
    ) as client:
        client.models.list()
        report = client.attestation
    assert report is not None
    assert report.suite is Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM
    assert not report.post_quantum


def test_require_post_quantum_refuses_a_bridge_limited_to_classical(
    classical_bridge: ThreadBridge,
) -> None:
    policy = _with(classical_bridge.policy, require_post_quantum=True)
    with ThreadedRelay("127.0.0.1", classical_bridge.port) as relay:
        with (
            shroud_sdk.OpenAI(
                bridge_url=relay.url(), api_key="k", policy=policy, audience=AUDIENCE
            ) as client,
            pytest.raises(shroud_sdk.AttestationError) as info,
        ):
            client.models.list()
        (hello,) = relay.connections[0].binary_frames[Direction.C2B]
    offered = cbor.decode(hello, max_len=MAX_CLIENT_HELLO_LEN)["suites"]
    assert offered
    assert set(offered) <= HYBRID_SUITES  # only hybrid suites were offered
    error = info.value
    assert error.check == "bridge-refused"
    message = str(error)
    assert "require_post_quantum = true" in message
    assert "the bridge supports none" in message
    assert "this bridge supports [32513]" in message  # what the bridge said, quoted


def test_verifier_refuses_a_classical_suite_when_the_policy_requires_post_quantum(
    classical_bridge: ThreadBridge,
) -> None:
    # Defence in depth: a session told to offer classical suites anyway (a hand-built
    # configuration) still cannot complete a handshake the policy forbids.
    policy = _with(classical_bridge.policy, require_post_quantum=True)
    config = SessionConfig(
        url=classical_bridge.url,
        verifier=shroud_sdk.AttestationVerifier(policy),
        audience=AUDIENCE,
        allow_simulated=True,
        require_post_quantum=False,
    )
    session = SyncSession(config)
    try:
        request = OutgoingRequest("GET", "/v1/models", (), b"", {})
        with pytest.raises(AttestationFailedError) as info:
            session.run(session.async_session.open_stream(request, connect_timeout=30))
    finally:
        session.close()
    assert info.value.check == "post-quantum"
    assert "suite 32513 (classical P-256, SIMULATED TEE)" in info.value.reason
    assert "require_post_quantum = true" in info.value.reason


def _strip_hybrid_offer(payload: bytes) -> bytes:
    value = cbor.decode(payload, max_len=MAX_CLIENT_HELLO_LEN)
    value["suites"] = [s for s in value["suites"] if s not in HYBRID_SUITES]
    del value["kem"]
    return cbor.encode(value)


@pytest.mark.parametrize(
    ("fresh_quote", "check"),
    [(False, "transcript-signature"), (True, "report-data")],
    ids=["attested-key", "fresh"],
)
def test_middlebox_downgrade_to_a_classical_suite_is_refused(
    tmp_path: Path, fresh_quote: bool, check: str
) -> None:
    with (
        thread_bridge(tmp_path / "bridge") as bridge,
        ThreadedRelay("127.0.0.1", bridge.port) as relay,
        shroud_sdk.OpenAI(
            bridge_url=relay.url(),
            api_key="k",
            policy=_with(bridge.policy, fresh_quote=fresh_quote),
            audience=AUDIENCE,
        ) as client,
    ):
        relay.fault = Fault(FaultKind.REWRITE, Direction.C2B, frame=1, rewrite=_strip_hybrid_offer)
        with pytest.raises(shroud_sdk.AttestationError) as info:
            client.models.list()
        # The bridge did answer on the classical suite: the client refused what it proved.
        assert info.value.check == check
        assert client.transport.session.handshakes == 1
        assert len(relay.connections[0].binary_frames[Direction.C2B]) == 1
        # Without the middlebox, the next handshake is hybrid again.
        client.models.list()
        assert client.attestation is not None
        assert client.attestation.post_quantum
