"""``ShroudClients``: the pieces frameworks take, sharing one configuration."""

from __future__ import annotations

import openai
import pytest

import shroud_sdk
from shroud_sdk.client import NO_API_KEY
from tests.bridgeproc import BridgeProcess


def test_sync_pieces_share_one_attested_session(bridge: BridgeProcess) -> None:
    with shroud_sdk.ShroudClients(bridge_url=bridge.url, policy=bridge.policy_path) as shroud:
        before = shroud.attestation
        assert before is None
        assert isinstance(shroud.openai, openai.OpenAI)
        assert shroud.openai.http_client is shroud.http_client
        shroud.openai.models.list()
        response = shroud.http_client.get(shroud.base_url + "/models")
        assert response.status_code == 200
        assert shroud.http_client.shroud_transport.session.handshakes == 1
        assert shroud.attestation is not None
        assert shroud.attestation.ok


async def test_async_pieces_share_one_attested_session(bridge: BridgeProcess) -> None:
    async with shroud_sdk.ShroudClients(bridge_url=bridge.url, policy=bridge.policy_path) as shroud:
        assert isinstance(shroud.async_openai, openai.AsyncOpenAI)
        await shroud.async_openai.models.list()
        response = await shroud.async_http_client.get(shroud.base_url + "/models")
        assert response.status_code == 200
        assert shroud.async_http_client.shroud_transport.session.handshakes == 1
        assert shroud.attestation is not None


def test_configuration_errors_surface_at_construction(bridge: BridgeProcess) -> None:
    with pytest.raises(shroud_sdk.ConfigurationError, match="loopback"):
        shroud_sdk.ShroudClients(bridge_url="ws://example.com/", policy=bridge.policy_path)
    with pytest.raises(shroud_sdk.ConfigurationError, match="not disclosable"):
        shroud_sdk.ShroudClients(
            bridge_url=bridge.url, policy=bridge.policy_path, disclose=["messages"]
        )
    with pytest.raises(shroud_sdk.ConfigurationError, match="no attestation policy"):
        shroud_sdk.ShroudClients(bridge_url=bridge.url)


def test_environment_configures_it_and_openai_key_is_never_read(
    bridge: BridgeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHROUD_BRIDGE_URL", bridge.url)
    monkeypatch.setenv("SHROUD_POLICY", str(bridge.policy_path))
    monkeypatch.delenv("SHROUD_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-meant-for-openai")
    shroud = shroud_sdk.ShroudClients()
    assert shroud.bridge_url == bridge.url
    assert shroud.api_key == NO_API_KEY  # frameworks refuse an empty key; never OpenAI's
    assert "sk-meant-for-openai" not in repr(shroud)
    shroud.close()
