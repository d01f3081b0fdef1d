"""A bridge that refuses the client's disclosure set: a typed, helpful error, never auto-widening.

The bridge closes the handshake with 1008 and ``disclosure refused: required=...`` when the
fields a client offers to show in clear do not satisfy its rules. The SDK raises
``DisclosureRefusedError`` (an ``openai.APIConnectionError``) naming the fields and the
``disclose=`` opt-in, and sends nothing else: the close reason is unauthenticated, so a client
that obeyed it would let any middlebox make it reveal more.

Two bridges: the real in-process bridge configured with ``--disclose-required`` (behind a
recording relay), and a minimal WebSocket server on 127.0.0.1 that refuses with exactly the
reason format of docs/deployment.md, and records each ClientHello it gets.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from websockets.asyncio.server import Server, ServerConnection, serve

import shroud_sdk
from attestation.policy import Policy
from shroud_sdk.channel.handshake import ClientHello
from tests.relay import Direction, Relay, ThreadedRelay
from tests.sdk.harness import AUDIENCE, ThreadBridge, thread_bridge

MODEL = "shroud-demo-echo"
WS_POLICY_VIOLATION = 1008  # RFC 6455 section 7.4.1


def _ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


# -- the real bridge, configured to require "model" in clear -------------------------------------


@pytest.fixture
def strict_bridge(tmp_path: Path) -> Iterator[ThreadBridge]:
    with thread_bridge(tmp_path / "bridge", args=["--disclose-required", "model"]) as b:
        yield b


@pytest.fixture
def relay(strict_bridge: ThreadBridge) -> Iterator[Relay]:
    with ThreadedRelay("127.0.0.1", strict_bridge.port) as r:
        yield r


def test_bridge_requiring_disclosure_raises_typed_error_and_sends_nothing(
    strict_bridge: ThreadBridge, relay: Relay
) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    with shroud_sdk.OpenAI(
        bridge_url=relay.url(), api_key="k", policy=strict_bridge.policy, audience=AUDIENCE
    ) as client:
        with pytest.raises(shroud_sdk.DisclosureRefusedError) as info:
            client.chat.completions.create(model=MODEL, messages=_ask(canary))
        error = info.value
        assert isinstance(error, openai.APIConnectionError)
        assert not isinstance(error, shroud_sdk.AttestationError)
        # It names what the bridge requires and how to opt in.
        assert error.required == frozenset({"model"})
        assert "requires model in clear" in str(error)
        assert "OpenAI(..., disclose=['model'])" in str(error)
        assert error.disclosed == frozenset()
        # Not widened and not retried: one hello, with the user's (empty) disclosure set.
        assert client.transport.session.handshakes == 1
        assert client.disclosed_fields == frozenset()
    assert len(relay.connections) == 1
    assert len(relay.connections[0].binary_frames[Direction.C2B]) == 1
    assert not relay.seen(canary.encode())
    assert not relay.seen(MODEL.encode())


async def test_async_client_gets_the_same_refusal(
    strict_bridge: ThreadBridge, relay: Relay
) -> None:
    async with shroud_sdk.AsyncOpenAI(
        bridge_url=relay.url(), api_key="k", policy=strict_bridge.policy, audience=AUDIENCE
    ) as client:
        with pytest.raises(shroud_sdk.DisclosureRefusedError):
            await client.models.list()
        assert client.transport.session.handshakes == 1


def test_user_who_opts_in_to_the_required_field_is_served(
    strict_bridge: ThreadBridge, relay: Relay
) -> None:
    with shroud_sdk.OpenAI(
        bridge_url=relay.url(),
        api_key="k",
        policy=strict_bridge.policy,
        audience=AUDIENCE,
        disclose=["model"],
    ) as client:
        answer = client.chat.completions.create(model=MODEL, messages=_ask("hi"))
        assert answer.choices[0].message.content is not None
    assert MODEL.encode() in relay.payloads(Direction.C2B)  # disclosed, as the user chose


# -- a refusing WebSocket server with the exact reason format ------------------------------------


class RefusingServer:
    """Answers every ClientHello by closing with 1008 and ``reason``; records the hellos."""

    def __init__(self, reason: str, code: int = WS_POLICY_VIOLATION) -> None:
        self.reason = reason
        self.code = code
        self.hellos: list[ClientHello] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Server | None = None

    async def _handle(self, websocket: ServerConnection) -> None:
        message = await websocket.recv()
        assert isinstance(message, bytes)
        self.hellos.append(ClientHello.decode(message))
        await websocket.close(self.code, self.reason)

    async def _start(self) -> Server:
        return await serve(self._handle, "127.0.0.1", 0, compression=None)

    def __enter__(self) -> RefusingServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    def __exit__(self, *exc: object) -> None:
        server = self._server
        assert server is not None

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def any_policy(tmp_path: Path) -> Policy:
    # Never consulted: the refusal comes before any evidence.
    with thread_bridge(tmp_path / "policy-source") as b:
        return b.policy


def _refused_by(
    server: RefusingServer, policy: Policy, disclose: tuple[str, ...] = ()
) -> shroud_sdk.DisclosureRefusedError:
    with shroud_sdk.OpenAI(
        bridge_url=server.url, api_key="k", policy=policy, disclose=disclose
    ) as client:
        with pytest.raises(shroud_sdk.DisclosureRefusedError) as info:
            client.models.list()
        with pytest.raises(shroud_sdk.DisclosureRefusedError):  # and again: still not widened
            client.models.list()
    return info.value


def test_refusal_names_the_required_fields_and_the_opt_in(any_policy: Policy) -> None:
    reason = "disclosure refused: required=max_tokens,model allowed=max_tokens,model,stream"
    with RefusingServer(reason) as server:
        error = _refused_by(server, any_policy)
    assert error.required == frozenset({"model", "max_tokens"})
    assert error.allowed == frozenset({"max_tokens", "model", "stream"})
    assert "max_tokens, model" in str(error)
    assert "OpenAI(..., disclose=['max_tokens', 'model'])" in str(error)


def test_middlebox_close_reason_never_widens_the_disclosure(any_policy: Policy) -> None:
    # Anyone on the path can forge this close before a key exists. The client must keep
    # offering exactly what the user chose, on every attempt.
    with RefusingServer("disclosure refused: required=model,stream,n") as server:
        _refused_by(server, any_policy, disclose=("stream",))
    assert len(server.hellos) == 2
    assert [hello.disclose for hello in server.hellos] == [("stream",), ("stream",)]


def test_unknown_field_names_in_the_reason_are_not_suggested(any_policy: Policy) -> None:
    with RefusingServer("disclosure refused: required=messages,model") as server:
        error = _refused_by(server, any_policy)
    assert error.required == frozenset({"model"})  # "messages" is never disclosable
    assert "messages" not in str(error)


def test_refusal_of_fields_beyond_the_allowed_set_says_what_is_allowed(
    any_policy: Policy,
) -> None:
    with RefusingServer("disclosure refused: required= allowed=model") as server:
        error = _refused_by(server, any_policy, disclose=("model", "n"))
    assert error.required == frozenset()
    assert error.allowed == frozenset({"model"})
    assert error.disclosed == frozenset({"model", "n"})
    assert "it allows model" in str(error)
    assert "disclose=['model']" in str(error)


def test_reason_without_field_lists_still_gives_a_typed_error(any_policy: Policy) -> None:
    with RefusingServer("disclosure set refused") as server:  # bridges before 0964aed
        error = _refused_by(server, any_policy)
    assert error.required is None
    assert error.allowed is None
    assert "disclose=" in str(error)


def test_other_policy_violation_close_is_not_a_disclosure_refusal(any_policy: Policy) -> None:
    with (
        RefusingServer("timeout") as server,
        shroud_sdk.OpenAI(
            bridge_url=server.url, api_key="k", policy=any_policy, max_retries=0
        ) as client,
        pytest.raises(openai.APIConnectionError) as info,
    ):
        client.models.list()
    assert not isinstance(info.value, shroud_sdk.DisclosureRefusedError)
