"""Nothing leaves in the clear when a client is configured without the Shroud transport.

Each test points the "bridge" at a listener on 127.0.0.1 that records every connection and
byte, then makes the mistake a user (or a framework) makes: a plain ``openai`` client given
``transport.base_url``, a framework that builds its own async client from that URL, a bare
httpx client. The base URL names ``<host>-<port>.shroud.invalid.``, which no resolver answers
(RFC 6761 §6.4), so each attempt fails at DNS: the listener sees no connection and not one
byte, and the prompt and API key stay in the process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import socket
import threading
from collections.abc import Iterator

import httpx
import httpx2
import openai
import pytest

import shroud_sdk
from attestation.policy import Policy

PROMPT = f"prompt-canary-{secrets.token_hex(8)}"
API_KEY = f"sk-canary-{secrets.token_hex(8)}"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


class Listener:
    """A TCP listener on 127.0.0.1 that records what every connection sends.

    As a proxy (``answer_connect``), it answers a CONNECT with 200, as a hostile proxy
    would, so that anything the client sends next is recorded too.
    """

    def __init__(self, *, answer_connect: bool = False) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.connections = 0
        self.received = bytearray()
        self._answer_connect = answer_connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._record, args=(conn,), daemon=True).start()

    def _record(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        with conn:
            try:
                while data := conn.recv(65536):
                    self.received += data
                    if self._answer_connect and data.startswith(b"CONNECT "):
                        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def transport(listener: Listener, no_proxy_env: None) -> Iterator[shroud_sdk.ShroudTransport]:
    """A transport for a "bridge" at the listener's address (never used to send)."""
    policy = Policy(allow_unpinned_measurements=True)
    shroud = shroud_sdk.ShroudTransport(
        f"ws://127.0.0.1:{listener.port}/", shroud_sdk.AttestationVerifier(policy)
    )
    yield shroud
    shroud.close()


def _assert_nothing_reached(listener: Listener, error: BaseException) -> None:
    assert listener.connections == 0
    assert bytes(listener.received) == b""
    # The chain ends in a name-resolution failure: no socket was opened anywhere.
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, socket.gaierror):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, socket.gaierror), f"not a DNS failure: {error!r}"


def test_base_url_never_names_the_bridge_address(
    transport: shroud_sdk.ShroudTransport, listener: Listener
) -> None:
    assert transport.base_url == f"https://127-0-0-1-{listener.port}.shroud.invalid./v1"


def test_plain_openai_client_given_the_base_url_sends_nothing(
    transport: shroud_sdk.ShroudTransport, listener: Listener
) -> None:
    with (
        openai.OpenAI(base_url=transport.base_url, api_key=API_KEY, max_retries=1) as client,
        pytest.raises(openai.APIConnectionError) as info,
    ):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": PROMPT}])
    _assert_nothing_reached(listener, info.value)


def test_plain_async_openai_client_given_the_base_url_sends_nothing(
    transport: shroud_sdk.ShroudTransport, listener: Listener
) -> None:
    async def attempt() -> BaseException:
        client = openai.AsyncOpenAI(base_url=transport.base_url, api_key=API_KEY, max_retries=0)
        try:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": PROMPT}], stream=True
            )
        except openai.APIConnectionError as error:
            return error
        finally:
            await client.close()
        raise AssertionError("the request did not fail")

    _assert_nothing_reached(listener, asyncio.run(attempt()))


@pytest.mark.parametrize("flavour", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_httpx_client_without_the_transport_sends_nothing(
    transport: shroud_sdk.ShroudTransport, listener: Listener, flavour: object
) -> None:
    module = httpx if flavour is httpx else httpx2
    with module.Client() as client, pytest.raises(module.ConnectError) as info:
        client.post(
            transport.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "m", "messages": [{"role": "user", "content": PROMPT}]},
        )
    _assert_nothing_reached(listener, info.value)


def test_shroud_clients_base_url_is_unroutable_too(listener: Listener, no_proxy_env: None) -> None:
    clients = shroud_sdk.ShroudClients(
        bridge_url=f"ws://127.0.0.1:{listener.port}/",
        policy=Policy(allow_unpinned_measurements=True),
    )
    with (
        openai.OpenAI(base_url=clients.base_url, api_key=API_KEY, max_retries=0) as client,
        pytest.raises(openai.APIConnectionError) as info,
    ):
        client.models.list()
    _assert_nothing_reached(listener, info.value)


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_openai") is None,
    reason="langchain-openai is not installed (make setup installs it)",
)
def test_langchain_given_only_the_sync_client_sends_nothing_from_ainvoke(
    listener: Listener, no_proxy_env: None
) -> None:
    # The misconfiguration examples/langchain_chat.py used to ship: http_client only, so
    # LangChain builds its own default async client from base_url for ainvoke().
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    clients = shroud_sdk.ShroudClients(
        bridge_url=f"ws://127.0.0.1:{listener.port}/",
        policy=Policy(allow_unpinned_measurements=True),
    )
    llm = ChatOpenAI(
        model="m",
        api_key=SecretStr(API_KEY),
        base_url=clients.base_url,
        http_client=clients.http_client,
        max_retries=0,
    )
    with pytest.raises(openai.APIConnectionError) as info:
        asyncio.run(llm.ainvoke(PROMPT))
    _assert_nothing_reached(listener, info.value)
    clients.close()


def test_through_a_proxy_only_the_unresolvable_name_is_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With HTTPS_PROXY set, a plain client asks the proxy to CONNECT to the .invalid name
    # (https, always: the base URL never says http). Even a proxy that says yes sees only
    # that name and a TLS ClientHello: no CA issues a certificate for .invalid.
    proxy = Listener(answer_connect=True)
    try:
        for name in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        policy = Policy(allow_unpinned_measurements=True)
        shroud = shroud_sdk.ShroudTransport(
            "wss://inference.example.com/shroud", shroud_sdk.AttestationVerifier(policy)
        )
        with (
            openai.OpenAI(base_url=shroud.base_url, api_key=API_KEY, max_retries=0) as client,
            pytest.raises(openai.APIConnectionError),
        ):
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": PROMPT}]
            )
        shroud.close()
    finally:
        proxy.close()
    seen = bytes(proxy.received)
    assert seen.startswith(b"CONNECT inference-example-com-443.shroud.invalid.:443 ")
    assert PROMPT.encode() not in seen
    assert API_KEY.encode() not in seen
