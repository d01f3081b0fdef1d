"""What crosses the wire, recorded by a loopback relay between the client and a real bridge.

- A bridge whose evidence fails the policy (wrong image, wrong root, debug TD, replayed quote,
  REPORTDATA of another session, simulated TEE for a default client) raises
  ``AttestationError`` carrying the report, and the client sent nothing but its ClientHello:
  the prompt is nowhere in the recording.
- With an accepting policy the prompt and the answer never appear in clear either.
- A relay that flips, drops, reorders or truncates records mid-stream raises
  ``StreamIntegrityError`` and the partial answer is never delivered as complete.
- A bridge restart between requests is re-attested transparently; a request that may have
  reached the bridge is never re-sent by the transport.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import shroud_sdk
from attestation.policy import Policy
from attestation.simulated import Measurements
from shroud_sdk.channel.constants import RecordType
from tests.relay import Direction, Fault, FaultKind, Relay, ThreadedRelay
from tests.sdk.harness import (
    AUDIENCE,
    DEBUG_TD_ATTRIBUTES,
    OtherSessionProvider,
    ReplayingProvider,
    ThreadBridge,
    platform,
    thread_bridge,
)

MODEL = "shroud-demo-echo"


def _ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def _canary() -> str:
    return f"canary-{secrets.token_hex(8)}"


def _with(policy: Policy, **changes: Any) -> Policy:
    """``policy`` with some fields replaced, validated like any other policy."""
    data = policy.model_dump(exclude={"custom_checks"})
    data.update(changes)
    return Policy(**data)


def _client(relay: Relay, policy: Policy, **kwargs: Any) -> shroud_sdk.OpenAI:
    return shroud_sdk.OpenAI(
        bridge_url=relay.url(), api_key="k", policy=policy, audience=AUDIENCE, **kwargs
    )


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[ThreadBridge]:
    with thread_bridge(tmp_path / "bridge") as b:
        yield b


@pytest.fixture
def relay(bridge: ThreadBridge) -> Iterator[Relay]:
    with ThreadedRelay("127.0.0.1", bridge.port) as r:
        yield r


def _assert_refused_before_any_request(
    relay: Relay, policy: Policy, expected_check: str
) -> shroud_sdk.AttestationError:
    canary = _canary()
    with _client(relay, policy) as client:
        with pytest.raises(shroud_sdk.AttestationError) as info:
            client.chat.completions.create(model=MODEL, messages=_ask(canary))
        assert client.transport.session.handshakes == 1  # openai did not retry it
    error = info.value
    assert error.check == expected_check, error
    assert isinstance(error, openai.APIConnectionError)
    # Only the ClientHello went out: no request record, and the prompt is nowhere.
    for connection in relay.connections:
        assert len(connection.binary_frames[Direction.C2B]) == 1
    assert not relay.seen(canary.encode())
    return error


# -- refusals ----------------------------------------------------------------------------------


def test_wrong_image_hash_is_refused_before_any_request(bridge: ThreadBridge, relay: Relay) -> None:
    policy = _with(bridge.policy, allowed_image_hashes={"ab" * 48})
    error = _assert_refused_before_any_request(relay, policy, "policy")
    assert isinstance(error.report, shroud_sdk.AttestationReport)
    assert error.report.verification.ok  # genuine quote, just not the image we pinned
    assert error.report.policy_result is not None
    assert [v.field for v in error.report.policy_result.violations] == ["allowed_image_hashes"]


def test_bridge_running_another_image_digest_is_refused(tmp_path: Path) -> None:
    with thread_bridge(tmp_path / "a", args=["--image-digest", "sha256:" + "a" * 64]) as first:
        pinned = first.policy
    with (
        thread_bridge(tmp_path / "b", args=["--image-digest", "sha256:" + "b" * 64]) as other,
        ThreadedRelay("127.0.0.1", other.port) as relay,
    ):
        error = _assert_refused_before_any_request(relay, pinned, "policy")
    assert isinstance(error.report, shroud_sdk.AttestationReport)
    assert error.report.policy_result is not None
    fields = [v.field for v in error.report.policy_result.violations]
    assert "required_rtmr3_events.shroud.image-digest" in fields


def test_quote_from_an_untrusted_root_is_refused(bridge: ThreadBridge, relay: Relay) -> None:
    foreign_root = platform(b"someone-else").root_pem.decode("ascii")
    policy = _with(bridge.policy, trusted_roots=(foreign_root,))
    error = _assert_refused_before_any_request(relay, policy, "verification")
    assert isinstance(error.report, shroud_sdk.AttestationReport)
    assert error.report.verification.check("root_ca").status.value == "fail"


def test_debug_td_is_refused(tmp_path: Path) -> None:
    debug = Measurements(td_attributes=DEBUG_TD_ATTRIBUTES)
    with (
        thread_bridge(tmp_path, measurements=debug) as bridge,
        ThreadedRelay("127.0.0.1", bridge.port) as relay,
    ):
        error = _assert_refused_before_any_request(relay, bridge.policy, "verification")
    assert isinstance(error.report, shroud_sdk.AttestationReport)
    assert error.report.verification.check("td_attributes").status.value == "fail"


def test_replayed_quote_is_refused(tmp_path: Path) -> None:
    with (
        thread_bridge(tmp_path, provider_cls=ReplayingProvider) as bridge,
        ThreadedRelay("127.0.0.1", bridge.port) as relay,
    ):
        fresh = _with(bridge.policy, fresh_quote=True)  # a quote per handshake
        with _client(relay, fresh) as first:  # the quote that will be replayed
            first.models.list()
        relay.connections.clear()
        error = _assert_refused_before_any_request(relay, fresh, "report-data")
    # The replayed quote itself verified: only its binding to this handshake failed.
    assert isinstance(error.report, shroud_sdk.AttestationReport)
    assert error.report.ok


def test_reportdata_of_another_session_is_refused(tmp_path: Path) -> None:
    with (
        thread_bridge(tmp_path, provider_cls=OtherSessionProvider) as bridge,
        ThreadedRelay("127.0.0.1", bridge.port) as relay,
    ):
        _assert_refused_before_any_request(relay, bridge.policy, "report-data")


def test_default_client_refuses_a_simulated_bridge(bridge: ThreadBridge, relay: Relay) -> None:
    # The same pins and root, but without allow_simulated_tee: the simulated suite is not
    # offered and the simulated-only bridge cannot answer.
    policy = _with(bridge.policy, allow_simulated_tee=False)
    _assert_refused_before_any_request(relay, policy, "bridge-refused")


def test_intel_root_policy_never_accepts_a_simulated_quote(
    bridge: ThreadBridge, relay: Relay
) -> None:
    policy = _with(bridge.policy, trusted_roots=None)  # Intel's root, simulated suite allowed
    error = _assert_refused_before_any_request(relay, policy, "verification")
    assert isinstance(error.report, shroud_sdk.AttestationReport)
    assert error.report.verification.check("root_ca").status.value == "fail"


# -- the accepted path ---------------------------------------------------------------------------


def test_prompt_and_answer_never_cross_the_wire_in_clear(
    bridge: ThreadBridge, relay: Relay
) -> None:
    canary = _canary()
    with _client(relay, bridge.policy) as client:
        plain = client.chat.completions.create(model=MODEL, messages=_ask(canary))
        streamed = client.chat.completions.create(model=MODEL, messages=_ask(canary), stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert canary in (plain.choices[0].message.content or "")
    assert canary in text  # the demo model echoes it: it really made the round trip
    assert relay.payloads(Direction.B2C)  # the relay did see the traffic, unmasked
    assert not relay.seen(canary.encode())
    assert not relay.seen(b"shroud-demo-echo")  # the model name is not disclosed by default
    assert not relay.seen(b"Shroud demo model here")


def test_disclosed_model_is_visible_to_the_operator_and_nothing_else(
    bridge: ThreadBridge, relay: Relay
) -> None:
    canary = _canary()
    with _client(relay, bridge.policy, disclose=("model",)) as client:
        assert client.disclosed_fields == frozenset({"model"})
        client.chat.completions.create(model=MODEL, messages=_ask(canary))
    assert MODEL.encode() in relay.payloads(Direction.C2B)
    assert not relay.seen(canary.encode())


# -- integrity mid-stream ----------------------------------------------------------------------

EXPECTED = 'Shroud demo model here. You said: "tell me a long story please"'


def _stream_under_fault(relay: Relay, policy: Policy, fault: Fault) -> list[str]:
    parts: list[str] = []
    with _client(relay, policy, max_retries=0) as client:
        relay.fault = fault
        stream = client.chat.completions.create(
            model=MODEL, messages=_ask("tell me a long story please"), stream=True
        )
        with pytest.raises(shroud_sdk.StreamIntegrityError):  # noqa: PT012 (reads the body)
            for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
        assert client.transport.session.handshakes == 1
    return parts


@pytest.mark.parametrize(
    "kind", [FaultKind.FLIP, FaultKind.DROP, FaultKind.REORDER, FaultKind.TRUNCATE]
)
def test_damaged_record_mid_stream_raises_integrity_error(
    bridge: ThreadBridge, relay: Relay, kind: FaultKind
) -> None:
    # The first DATA record of the response: inside the body (the bridge merges what one
    # upstream read brought, so the record count of a short answer is not fixed).
    fault = Fault(kind, Direction.B2C, record_type=RecordType.DATA)
    parts = _stream_under_fault(relay, bridge.policy, fault)
    assert "".join(parts) != EXPECTED  # never a partial answer passed off as complete


def test_truncation_just_before_end_is_not_a_complete_answer(
    bridge: ThreadBridge, relay: Relay
) -> None:
    fault = Fault(FaultKind.TRUNCATE, Direction.B2C, record_type=RecordType.END)
    parts = _stream_under_fault(relay, bridge.policy, fault)
    # Every token may have arrived, but without the authenticated END the stream still fails.
    assert "".join(parts) in EXPECTED


def test_flipped_request_record_fails_the_connection(bridge: ThreadBridge, relay: Relay) -> None:
    with _client(relay, bridge.policy, max_retries=0) as client:
        relay.fault = Fault(FaultKind.FLIP, Direction.C2B, record_type=RecordType.HEADERS)
        with pytest.raises((shroud_sdk.StreamIntegrityError, openai.APIConnectionError)):
            client.models.list()
        # The request may have reached the bridge: the transport did not re-send it.
        assert client.transport.session.handshakes == 1
        # The next request gets a fresh, re-verified session.
        assert client.models.list().data[0].id == MODEL
        assert client.transport.session.handshakes == 2


# -- restarts ----------------------------------------------------------------------------------


def test_bridge_restart_between_requests_is_reattested_transparently(
    bridge: ThreadBridge,
) -> None:
    with shroud_sdk.OpenAI(
        bridge_url=bridge.url, api_key="k", policy=bridge.policy, audience=AUDIENCE, max_retries=0
    ) as client:
        assert client.models.list().data[0].id == MODEL
        first = client.attestation
        bridge.reboot()  # same port, same platform, a new TD and a new bridge process state
        assert client.models.list().data[0].id == MODEL
        assert client.transport.session.handshakes == 2
        second = client.attestation
        assert first is not None
        assert second is not None
        assert second is not first  # verified afresh: a new quote, a new report
        assert second.ok
        assert first.verification.quote is not None
        assert second.verification.quote is not None
        assert (
            first.verification.quote.td_report.report_data
            != second.verification.quote.td_report.report_data
        )
