"""Through nginx with TLS: new clients spread over the bridges, one policy accepts them all."""

from __future__ import annotations

import ssl
from pathlib import Path

import openai
import pytest

import shroud_sdk
from attestation.policy import Policy
from shroud_sdk.transport import AttestationError
from tests.deploy.fleet import IMAGE_DIGEST, OTHER_IMAGE_DIGEST, Fleet, running_fleet
from tests.deploy.nginx import require_nginx
from tests.deploy.tls import DeployPki, make_pki

pytestmark = pytest.mark.slow

CHAT = {
    "model": "shroud-demo-echo",
    "messages": [{"role": "user", "content": "hello through the proxy"}],
}


def test_policy_init_drafts_the_published_policy_through_the_proxy_without_a_request(
    fleet: Fleet, tmp_path: Path
) -> None:
    handshakes, streams = sum(fleet.ok_handshakes()), fleet.streams()
    policy = fleet.publish_policy(tmp_path / "policy.toml")
    assert sum(fleet.ok_handshakes()) == handshakes + 1  # one real handshake ...
    assert fleet.streams() == streams  # ... and no request reached any bridge's upstream
    assert policy.allow_simulated_tee
    digests = policy.required_rtmr3_events
    assert set(digests) == {"shroud.image-digest", "shroud.config-hash"}
    assert digests == fleet.dev_policy().required_rtmr3_events  # what the bridges measured
    text = (tmp_path / "policy.toml").read_text()
    assert IMAGE_DIGEST in text
    assert f"audience '{fleet.proxy.audience}'" in text


def test_thirty_new_clients_spread_over_three_bridges_under_one_published_policy(
    fleet: Fleet, published_policy: Policy
) -> None:
    policy = published_policy
    before = fleet.ok_handshakes()
    reports = []
    for _ in range(30):
        with fleet.client(policy) as client:
            completion = client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
            assert completion.choices[0].message.content
            assert client.transport.session.handshakes == 1
            reports.append(client.attestation)
    served = [after - start for after, start in zip(fleet.ok_handshakes(), before, strict=True)]
    assert sum(served) == 30
    assert all(1 <= n <= 20 for n in served), served
    assert all(r is not None and r.ok for r in reports)


def test_ssl_cert_file_makes_the_sdk_trust_the_proxy(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(fleet.pki.ca_cert))
    with shroud_sdk.OpenAI(
        bridge_url=fleet.url, policy=fleet.dev_policy(), max_retries=0, api_key="k"
    ) as client:
        assert client.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]


def test_proxy_certificate_from_an_untrusted_ca_is_refused_before_any_handshake(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other", label="Some other CA")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    before = fleet.ok_handshakes()
    for context in (None, other.client_context()):  # system CAs; a CA that did not sign it
        with shroud_sdk.OpenAI(
            bridge_url=fleet.url,
            policy=fleet.dev_policy(),
            max_retries=0,
            ssl_context=context,
            api_key="k",
        ) as client:
            with pytest.raises(openai.APIConnectionError) as caught:
                client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
            assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value.__cause__)
            assert client.attestation is None
    assert fleet.ok_handshakes() == before


@pytest.mark.parametrize(
    ("url", "make_context", "message"),
    [
        ("wss://localhost:1/", "no-verify", "must verify the server certificate"),
        ("wss://localhost:1/", "no-hostname", "must verify the server certificate"),
        ("ws://127.0.0.1:1/", "default", "only to a wss://"),
    ],
)
def test_ssl_context_that_would_not_protect_the_connection_is_a_configuration_error(
    fleet: Fleet, url: str, make_context: str, message: str
) -> None:
    context = ssl.create_default_context()
    if make_context == "no-hostname":
        context.check_hostname = False
    if make_context == "no-verify":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with pytest.raises(shroud_sdk.ConfigurationError, match=message):
        shroud_sdk.OpenAI(bridge_url=url, policy=fleet.dev_policy(), ssl_context=context)


def test_bridge_with_another_image_behind_the_same_proxy_is_refused(
    tmp_path: Path, pki: DeployPki
) -> None:
    require_nginx()
    with running_fleet(tmp_path, pki, count=2, extra_images=[OTHER_IMAGE_DIGEST]) as mixed:
        # The operator drafts the policy from a bridge of the release, reached directly.
        policy = mixed.publish_policy(tmp_path / "policy.toml", bridge=mixed.bridges[0])
        before = mixed.ok_handshakes()
        refused: list[AttestationError] = []
        served = 0
        for _ in range(9):
            with mixed.client(policy) as client:
                try:
                    client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
                    served += 1
                except AttestationError as refusal:
                    refused.append(refusal)
        counts = [n - b for n, b in zip(mixed.ok_handshakes(), before, strict=True)]
    assert refused, "round robin over three bridges never reached the other image"
    assert counts[2] == len(refused)  # exactly the clients that reached the other image
    assert sum(counts[:2]) == served == 9 - len(refused)
    for exc in refused:
        assert exc.check == "policy"
        assert exc.report is not None
        result = exc.report.policy_result
        assert result is not None
        assert {v.field for v in result.violations} == {"required_rtmr3_events.shroud.image-digest"}
        assert exc.report.image_digests is not None
        assert exc.report.image_digests.image_digest == OTHER_IMAGE_DIGEST
