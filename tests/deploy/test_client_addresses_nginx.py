"""Through nginx with TLS, the bridge's per-source bounds count the real client, not the proxy.

The shipped nginx site appends the client's address to ``X-Forwarded-For``; a bridge started
with ``--trusted-proxy 127.0.0.1`` (where nginx connects from) believes what nginx appended and
nothing the client wrote. An attacker bound to 127.0.0.2 spends its whole per-source share
through the proxy: the fresh-quote budget, then the open connections, each attempt with a
forged ``X-Forwarded-For`` of its own. A real ``shroud_sdk.AsyncOpenAI`` client on 127.0.0.1
then still gets its fresh quote and its completion. The control runs the same attack against
a bridge that does not trust the proxy: every client is nginx's address, one source, and the
client is starved of both; so the first test fails when the trust is removed.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager
from pathlib import Path

import openai
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

import shroud_sdk
from attestation.policy import Policy
from shroud_sdk.channel.evidence import EvidenceMode
from tests.deploy.fleet import Fleet, running_fleet
from tests.deploy.nginx import require_nginx
from tests.deploy.tls import DeployPki
from tests.e2e.client import ChannelClient

pytestmark = pytest.mark.slow

ATTACKER = "127.0.0.2"
PROXY = "127.0.0.1"  # nginx's address as the bridge sees it
# One fresh quote per source and no refill within the test (0.1 per minute), and two open
# connections per source.
LIMITS = [
    "--max-connections-per-source",
    "2",
    "--fresh-quote-burst",
    "1",
    "--fresh-quotes-per-minute",
    "0.1",
]
CHAT = {"model": "shroud-demo-echo", "messages": [{"role": "user", "content": "my own share"}]}


class Attacker:
    """Clients on 127.0.0.2 reaching the bridge through the proxy; each forges its own XFF.

    ``async with`` closes every connection it opened.
    """

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.held: list[ChannelClient] = []
        self.attempts = 0

    async def connect(self, *, fresh: bool = False) -> ChannelClient:
        self.attempts += 1
        forged = f"198.51.100.{self.attempts}"  # a new client, it claims, every time
        client = await ChannelClient.connect(
            self.fleet.url,
            audience=self.fleet.proxy.audience,
            root_pem=self.fleet.root_pem_path.read_bytes(),
            fresh=fresh,
            local_address=ATTACKER,
            headers={"X-Forwarded-For": forged},
            ssl_context=self.fleet.pki.client_context(),
        )
        self.held.append(client)
        return client

    async def __aenter__(self) -> Attacker:
        return self

    async def __aexit__(self, *_: object) -> None:
        for client in self.held:
            await client.close()


def _fleet(tmp_path: Path, pki: DeployPki, *, trust_proxy: bool) -> AbstractContextManager[Fleet]:
    """One bridge behind nginx, told (or not) that nginx's address is a trusted proxy."""
    require_nginx()
    trust = ["--trusted-proxy", PROXY] if trust_proxy else []
    return running_fleet(tmp_path, pki, count=1, bridge_args=[*LIMITS, *trust])


def _client(fleet: Fleet, policy: Policy) -> shroud_sdk.AsyncOpenAI:
    return shroud_sdk.AsyncOpenAI(
        bridge_url=fleet.url,
        policy=policy,
        ssl_context=fleet.pki.client_context(),
        max_retries=0,
        api_key="deploy-test-key",
    )


def _fresh(policy: Policy) -> Policy:
    """``policy`` asking for a quote over every handshake (the per-source budgeted mode)."""
    return Policy(**(policy.model_dump(exclude={"custom_checks"}) | {"fresh_quote": True}))


async def _wait_for_connections(fleet: Fleet, count: int) -> None:
    """Until the bridge holds ``count`` connections: a refused one is released only when its
    close completes, and must not count against the next client's share."""
    bridge = fleet.bridges[0]
    deadline = time.monotonic() + 20
    while (held := bridge.metric("shroud_bridge_connections_open")) != count:
        assert time.monotonic() < deadline, f"{held} connections open, expected {count}"
        await asyncio.sleep(0.05)


async def _spend_fresh_quotes(attacker: Attacker) -> None:
    """The attacker's one fresh quote, then a refusal: its fresh-quote budget is spent."""
    first = await attacker.connect(fresh=True)
    assert first.handshake is not None
    with pytest.raises(ConnectionClosed) as refused:
        await attacker.connect(fresh=True)
    assert refused.value.rcvd is not None
    assert refused.value.rcvd.code == 1013
    assert refused.value.rcvd.reason.startswith("fresh quote rate limit")
    await _wait_for_connections(attacker.fleet, 1)


async def _spend_connections(attacker: Attacker) -> None:
    """The attacker's second connection, then a 429: its connection share is spent."""
    await attacker.connect()
    with pytest.raises(InvalidStatus) as refused:
        await attacker.connect()
    assert refused.value.response.status_code == 429  # passed through by nginx
    assert refused.value.response.headers["x-shroud-overload"] == "connections_per_source"
    await _wait_for_connections(attacker.fleet, 2)


async def _victim(fleet: Fleet, policy: Policy) -> openai.APIError | None:
    """One chat completion from a real SDK client on 127.0.0.1: None when served, else the
    error the user would see."""
    async with _client(fleet, policy) as client:
        try:
            completion = await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        except openai.APIError as exc:
            return exc
        assert completion.choices[0].message.content
        assert client.attestation is not None
        mode = EvidenceMode.FRESH if policy.fresh_quote else EvidenceMode.ATTESTED_KEY
        assert client.attestation.evidence_mode is mode
    return None


async def _attack_then_victims(fleet: Fleet) -> tuple[openai.APIError | None, ...]:
    """The attacker spends its fresh quotes, then its connections; after each, the victim's
    fresh-quote request and then its ordinary one."""
    policy = fleet.dev_policy()
    async with Attacker(fleet) as attacker:
        await _spend_fresh_quotes(attacker)
        fresh = await _victim(fleet, _fresh(policy))
        await _wait_for_connections(fleet, 1)
        await _spend_connections(attacker)
        plain = await _victim(fleet, policy)
    return fresh, plain


async def test_an_attacker_behind_nginx_spends_only_its_own_per_source_share(
    tmp_path: Path, pki: DeployPki
) -> None:
    with _fleet(tmp_path, pki, trust_proxy=True) as fleet:
        assert await _attack_then_victims(fleet) == (None, None)
        log = fleet.bridges[0].log_text()
    assert f"refused connections_per_source from {ATTACKER} " in log
    assert "198.51.100." not in log  # what the attacker wrote about itself counted for nothing


async def test_control_without_trusted_proxy_the_same_attack_starves_every_client(
    tmp_path: Path, pki: DeployPki
) -> None:
    with _fleet(tmp_path, pki, trust_proxy=False) as fleet:
        fresh, plain = await _attack_then_victims(fleet)
        log = fleet.bridges[0].log_text()
    assert isinstance(fresh, shroud_sdk.FreshQuoteRateLimitedError), fresh
    assert isinstance(plain, shroud_sdk.BridgeRateLimitError), plain
    assert f"refused connections_per_source from {PROXY} " in log
