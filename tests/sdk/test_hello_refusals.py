"""Handshake refusals say what failed, what each side expected, and what to change.

The bridge's close reason is unauthenticated (docs/protocol.md §9): it is only ever *shown*.
These tests use real in-process bridges for the refusals a user meets, and the pure
``bridge_refusal`` for the edges of what a bridge (or a middlebox) may send.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shroud_sdk
from attestation.policy import Policy
from shroud_sdk.channel.constants import Suite
from shroud_sdk.hello_refusal import bridge_refusal
from tests.sdk.harness import AUDIENCE, ThreadBridge, thread_bridge

CLASSIC, HYBRID = Suite.P256_HKDF_SHA256_AES256GCM, Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM


def _with(policy: Policy, **changes: Any) -> Policy:
    data = policy.model_dump(exclude={"custom_checks"})
    data.update(changes)
    return Policy(**data)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[ThreadBridge]:
    with thread_bridge(tmp_path / "bridge") as b:
        yield b


def _refusal(bridge: ThreadBridge, policy: Policy, **kwargs: Any) -> str:
    with (
        shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=policy, **kwargs) as client,
        pytest.raises(shroud_sdk.AttestationError) as info,
    ):
        client.models.list()
    assert info.value.check == "bridge-refused"
    return str(info.value)


def test_wrong_audience_names_both_audiences_and_the_argument_to_change(
    bridge: ThreadBridge,
) -> None:
    message = _refusal(bridge, bridge.policy)  # audience defaults to the URL's host:port
    assert f"the audience this client named, '127.0.0.1:{bridge.port}'" in message
    assert f"this bridge answers to '{AUDIENCE}'" in message
    assert "audience=" in message


def test_simulated_bridge_refusal_says_how_to_accept_a_development_bridge(
    bridge: ThreadBridge,
) -> None:
    message = _refusal(bridge, _with(bridge.policy, allow_simulated_tee=False), audience=AUDIENCE)
    assert "2 (hybrid P-256 + ML-KEM-768, post-quantum), 1 (classical P-256)" in message
    assert "SIMULATED TEE" in message
    assert "--dev-policy-out" in message
    assert "allow_simulated_tee = true" in message


def _explain(reason: str, **overrides: Any) -> str:
    options: dict[str, Any] = {
        "audience": "a:443",
        "offered": (HYBRID, CLASSIC),
        "allow_simulated": False,
        "require_post_quantum": False,
    }
    options.update(overrides)
    error = bridge_refusal(reason, **options)
    assert error.check == "bridge-refused"
    return error.reason


def test_refusal_of_another_version_says_to_upgrade() -> None:
    assert "another shroud protocol version" in _explain("version: unsupported protocol version 2")


def test_unexplained_refusal_shows_the_check_only() -> None:
    assert _explain("key-share").endswith("it refused the ClientHello (key-share)")
    assert _explain("").endswith("(no reason given)")


def test_refusal_text_is_cut_and_stripped_of_control_characters() -> None:
    shown = _explain("audience: \x1b[31mred\x07" + "x" * 500)
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert "x" * 200 not in shown


def test_garbled_suite_list_gives_generic_advice() -> None:
    message = _explain("suite: this bridge supports [one]")
    assert message.endswith("Upgrade the SDK or the bridge so that they share a suite")
