"""The transports as a seam: httpx2 and legacy httpx clients, destination and redirect rules,
configuration, timeouts, and the wiring LangChain uses (``openai`` with ``http_client=``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import shroud_sdk
from attestation.policy import Policy
from shroud_sdk.client import OPENAI_USES_HTTPX2
from shroud_sdk.transport import _Origin, _outgoing
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.fake_upstream import FakeUpstream

MODEL = "shroud-demo-echo"
ANSWER = 'Shroud demo model here. You said: "via the seam"'


def _ask() -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": "via the seam"}]


def _verifier(bridge: BridgeProcess) -> shroud_sdk.AttestationVerifier:
    return shroud_sdk.AttestationVerifier(bridge.policy)


# -- destinations and redirects ----------------------------------------------------------------


def test_request_to_any_other_address_is_refused_before_connecting(bridge: BridgeProcess) -> None:
    transport = shroud_sdk.ShroudTransport(bridge.url, _verifier(bridge))
    name = transport.base_url.removeprefix("https://").removesuffix("/v1")
    with httpx2.Client(transport=transport) as client:
        with pytest.raises(shroud_sdk.RefusedDestinationError):
            client.get("http://api.openai.com/v1/models")
        # The bridge's real address is refused too: only the unroutable name is accepted, so
        # configurations carry a URL that no transport-less client can reach.
        real = bridge.url.replace("ws://", "http://") + "v1/models"
        with pytest.raises(shroud_sdk.RefusedDestinationError, match=r"transport\.base_url"):
            client.get(real)
        with pytest.raises(shroud_sdk.RefusedDestinationError):  # right name, wrong scheme
            client.get(f"http://{name}/v1/models")
        with pytest.raises(shroud_sdk.RefusedDestinationError):  # right name, wrong port
            client.get(f"https://{name}:8443/v1/models")
        assert transport.session.handshakes == 0
        # The name with or without its trailing dot is the bridge.
        assert client.get(transport.base_url + "/models").status_code == 200
        assert client.get(f"https://{name.rstrip('.')}/v1/models").status_code == 200
    assert transport.session.handshakes == 1


def test_base_url_is_an_unresolvable_name() -> None:
    transport = shroud_sdk.ShroudTransport(
        "wss://Inference.Example.com/shroud",
        shroud_sdk.AttestationVerifier(Policy(allow_unpinned_measurements=True)),
    )
    try:
        assert transport.base_url == "https://inference-example-com-443.shroud.invalid./v1"
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("inference-example-com-443.shroud.invalid.", 443)
    finally:
        transport.close()


class _RedirectingUpstream:
    """An upstream answering every request with a redirect to another host."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: http://attacker.example/v1/models\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    def __enter__(self) -> str:
        self._thread.start()

        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._serve, "127.0.0.1", 0)

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(5)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_redirects_are_never_followed_off_the_bridge(tmp_path: Path) -> None:
    with _RedirectingUpstream() as upstream, running_bridge(tmp_path, upstream=upstream) as bridge:
        transport = shroud_sdk.ShroudTransport(bridge.url, _verifier(bridge), allow_simulated=True)
        # Even an httpx client told to follow redirects cannot be led to another host.
        with (
            httpx2.Client(transport=transport, follow_redirects=True) as client,
            pytest.raises(shroud_sdk.RefusedDestinationError),
        ):
            client.get(transport.base_url + "/models")
        with shroud_sdk.OpenAI(
            bridge_url=bridge.url, api_key="k", policy=bridge.policy_path, max_retries=0
        ) as sdk:
            with pytest.raises(openai.APIStatusError) as info:
                sdk.models.list()
            assert info.value.status_code == 302  # handed back as is, not followed


# -- the seam other frameworks use -------------------------------------------------------------


def test_openai_client_with_legacy_httpx_client_streams(bridge: BridgeProcess) -> None:
    # This is what LangChain's ChatOpenAI(http_client=...) and LlamaIndex hand to openai.
    transport = shroud_sdk.LegacyShroudTransport(bridge.url, _verifier(bridge))
    with (
        httpx.Client(transport=transport) as http_client,
        # openai 3.x accepts legacy httpx clients at run time; its annotations name httpx2.
        openai.OpenAI(
            api_key="k", base_url=transport.base_url, http_client=cast(Any, http_client)
        ) as client,
    ):
        stream = client.chat.completions.create(model=MODEL, messages=_ask(), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER
        assert transport.attestation is not None
        assert transport.last_usage is not None
        assert client.models.list().data[0].id == MODEL


@pytest.mark.skipif(
    not OPENAI_USES_HTTPX2,
    reason=f"openai {openai.__version__} takes legacy httpx clients only (httpx2 from 3.x on); "
    "the openai-3 run covers this",
)
def test_openai_client_with_httpx2_client(bridge: BridgeProcess) -> None:
    transport = shroud_sdk.ShroudTransport(bridge.url, _verifier(bridge))
    with (
        httpx2.Client(transport=transport) as http_client,
        openai.OpenAI(api_key="k", base_url=transport.base_url, http_client=http_client) as c,
    ):
        answer = c.chat.completions.create(model=MODEL, messages=_ask())
        assert answer.choices[0].message.content == ANSWER


def test_plain_legacy_httpx_client_sees_usage_in_extensions(bridge: BridgeProcess) -> None:
    transport = shroud_sdk.LegacyShroudTransport(bridge.url, _verifier(bridge))
    with httpx.Client(transport=transport) as client:
        response = client.post(
            transport.base_url + "/chat/completions",
            json={"model": MODEL, "messages": _ask()},
        )
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == ANSWER
        usage = response.extensions["shroud.usage"]
        assert isinstance(usage, shroud_sdk.Usage)
        assert usage.total_tokens == response.json()["usage"]["total_tokens"]
        assert response.extensions["shroud.attestation"] is transport.attestation


async def test_async_openai_with_legacy_async_httpx_client(bridge: BridgeProcess) -> None:
    transport = shroud_sdk.AsyncLegacyShroudTransport(
        bridge.url, _verifier(bridge), allow_simulated=True
    )
    async with (
        httpx.AsyncClient(transport=transport) as http_client,
        openai.AsyncOpenAI(
            api_key="k", base_url=transport.base_url, http_client=cast(Any, http_client)
        ) as c,
    ):
        stream = await c.chat.completions.create(model=MODEL, messages=_ask(), stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
        assert text == ANSWER
        await transport.aclose()


# -- configuration -----------------------------------------------------------------------------


def test_environment_variables_configure_the_client(
    bridge: BridgeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHROUD_BRIDGE_URL", bridge.url)
    monkeypatch.setenv("SHROUD_POLICY", str(bridge.policy_path))
    monkeypatch.setenv("SHROUD_API_KEY", "from-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-meant-for-openai")
    with shroud_sdk.OpenAI() as client:
        assert client.api_key == "from-env"
        assert client.chat.completions.create(model=MODEL, messages=_ask()).choices
    monkeypatch.delenv("SHROUD_API_KEY")
    with shroud_sdk.OpenAI() as client:
        assert client.api_key != "sk-meant-for-openai"  # an OpenAI key never goes to a bridge


def test_missing_bridge_url_or_policy_is_a_configuration_error(
    bridge: BridgeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHROUD_BRIDGE_URL", raising=False)
    monkeypatch.delenv("SHROUD_POLICY", raising=False)
    with pytest.raises(shroud_sdk.ConfigurationError, match="bridge URL"):
        shroud_sdk.OpenAI(policy=bridge.policy_path)
    with pytest.raises(shroud_sdk.ConfigurationError, match="policy"):
        shroud_sdk.OpenAI(bridge_url=bridge.url)
    with pytest.raises(shroud_sdk.ConfigurationError, match="loopback"):
        shroud_sdk.AsyncOpenAI(bridge_url="ws://bridge.example/", policy=bridge.policy_path)
    with pytest.raises(shroud_sdk.ConfigurationError, match="http_client"):
        shroud_sdk.OpenAI(
            bridge_url=bridge.url, policy=bridge.policy_path, http_client=httpx2.Client()
        )


def test_with_options_shares_the_attested_session(bridge: BridgeProcess) -> None:
    with shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=bridge.policy_path) as c:
        assert c.disclosed_fields == frozenset()  # default: disclose nothing
        c.models.list()
        faster = c.with_options(timeout=5.0, max_retries=0)
        assert isinstance(faster, shroud_sdk.OpenAI)
        faster.models.list()
        assert faster.transport is c.transport
        assert c.transport.session.handshakes == 1


async def test_async_with_options_shares_the_attested_session(bridge: BridgeProcess) -> None:
    async with shroud_sdk.AsyncOpenAI(
        bridge_url=bridge.url, api_key="k", policy=bridge.policy_path, disclose=["model"]
    ) as c:
        await c.models.list()
        faster = c.with_options(timeout=5.0, max_retries=0)
        assert isinstance(faster, shroud_sdk.AsyncOpenAI)
        assert faster.transport is c.transport
        assert faster.disclosed_fields == frozenset({"model"})
        await faster.models.list()
        assert c.transport.session.handshakes == 1
    with pytest.raises(shroud_sdk.ConfigurationError, match=r"openai\.AsyncOpenAI"):
        shroud_sdk.AsyncOpenAI(
            bridge_url=bridge.url, policy=bridge.policy_path, http_client=httpx2.AsyncClient()
        )


def test_policy_object_is_accepted(bridge: BridgeProcess) -> None:
    policy = Policy.load(bridge.policy_path)
    with shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=policy) as client:
        assert client.models.list().data[0].id == MODEL


# -- timeouts ----------------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says anything."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_handshake_that_never_answers_hits_the_connect_timeout(
    bridge: BridgeProcess, silent_port: int
) -> None:
    with (
        shroud_sdk.OpenAI(
            bridge_url=f"ws://127.0.0.1:{silent_port}/",
            api_key="k",
            policy=bridge.policy_path,
            timeout=httpx2.Timeout(10.0, connect=0.5),
            max_retries=0,
        ) as client,
        pytest.raises(openai.APITimeoutError),
    ):
        client.models.list()


def test_api_key_never_appears_in_reprs(bridge: BridgeProcess) -> None:
    secret = "sk-shroud-secret-0123456789"
    origin = _Origin.of_bridge(bridge.url)
    outgoing = _outgoing(
        origin,
        "POST",
        "https",
        origin.host,
        None,
        b"/v1/chat/completions",
        [("Authorization", f"Bearer {secret}")],
        b'{"model": "m"}',
        ["model"],
    )
    assert secret not in repr(outgoing)
    with shroud_sdk.OpenAI(bridge_url=bridge.url, api_key=secret, policy=bridge.policy_path) as c:
        c.models.list()
        for thing in (c.transport, c.transport.session, c.transport.session.config, c.attestation):
            assert secret not in repr(thing)


def test_upstream_that_stalls_hits_the_read_timeout(tmp_path: Path) -> None:
    with (
        FakeUpstream() as upstream,
        # One stream per session: a timed-out stream that were not abandoned would hold the
        # slot for the upstream's 5 s and the next request would get a 429.
        running_bridge(
            tmp_path, upstream=upstream.base_url, args=["--max-streams-per-session", "1"]
        ) as bridge,
        shroud_sdk.OpenAI(
            bridge_url=bridge.url,
            api_key="k",
            policy=bridge.policy_path,
            timeout=httpx2.Timeout(10.0, read=0.5),
            max_retries=0,
        ) as client,
    ):
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="slow", messages=_ask())
        # The session survives a timed-out stream: the next request reuses it. (Two retries
        # absorb the moment the bridge takes to cancel; a leaked slot would last 5 s.)
        assert client.with_options(max_retries=2).models.list().data
        assert client.transport.session.handshakes == 1


def test_refused_destination_through_openai_is_raised_as_is_and_not_retried(
    bridge: BridgeProcess,
) -> None:
    # RefusedDestinationError is no OpenAIError, so every openai retries and wraps it: the
    # client re-raises it unwrapped, and the retries cost no backoff and no handshake.
    with shroud_sdk.OpenAI(
        bridge_url=bridge.url, api_key="k", policy=bridge.policy_path, max_retries=5
    ) as client:
        started = time.monotonic()
        with pytest.raises(shroud_sdk.RefusedDestinationError):
            client.get("https://api.openai.com/v1/models", cast_to=object)
        assert time.monotonic() - started < 5  # openai's five backoffs take over 11 s
        assert client.transport.session.handshakes == 0
