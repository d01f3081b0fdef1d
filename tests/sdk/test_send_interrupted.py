"""A connection lost while a request is being sent: a typed error, never a second send.

Part of the request may already have reached the bridge, and so the model; DESIGN.md §6 lets
the transport retry only when a request provably did not reach the bridge. So the error must be
one ``openai`` does not retry, on every supported openai major (openai before 2.31 retries
anything a transport raises; the SDK's clients keep it from retrying this). A connection that
fails *before* anything was sent stays an httpx ``ConnectError``, which openai retries.

The loss is made real: a TCP relay in front of a real (in-process) bridge forwards the
handshake, then stops reading the client's request after 64 KiB and resets the connection. The
request body is far larger than any socket buffering (the kernel caps a send buffer at 4 MiB
and the relay's receive buffer is fixed small), so the reset always lands while the SDK is
still sending.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import shroud_sdk
from tests.sdk.harness import AUDIENCE, ThreadBridge, thread_bridge

# Larger than a client's largest send buffer plus the relay's buffers and what it reads.
BODY_CHARACTERS = 7 * 1024 * 1024
CUT_AFTER_BYTES = 64 * 1024  # well past the upgrade and ClientHello (a few KiB)


class CuttingRelay:
    """Forwards 127.0.0.1:``port`` to the bridge. Connection number ``n`` (from 1) is reset
    (RST, and its bridge side closed) once the client has sent ``cuts[n - 1]`` bytes; later
    connections are forwarded whole. Counts connections."""

    def __init__(self, target_port: int, cuts: tuple[int, ...] = (CUT_AFTER_BYTES,)) -> None:
        self._target = ("127.0.0.1", target_port)
        self._cuts = cuts
        self._listener = socket.socket()
        # Fixed (so not auto-tuned) and inherited by accepted sockets: little TCP window.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._start(self._accept_loop)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            cut = self._cuts[self.connections - 1] if self.connections <= len(self._cuts) else None
            self._start(self._serve, client, cut)

    def _serve(self, client: socket.socket, cut: int | None) -> None:
        upstream = socket.create_connection(self._target)
        self._start(self._pump, upstream, client)
        if cut is None:
            self._pump(client, upstream)
            _close(upstream)
            _close(client)
            return
        received = 0
        with suppress(OSError):
            while received < cut:
                data = client.recv(min(65536, cut - received))
                if not data:
                    break
                upstream.sendall(data)
                received += len(data)
        # Linger 0: close with a reset, as a crashed middlebox or a dropped route would.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        _close(upstream)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # pass the end of the stream on

    def close(self) -> None:
        _close(self._listener)
        for thread in self._threads:
            thread.join(5)


def _close(sock: socket.socket) -> None:
    """Close ``sock``, waking a thread blocked on it (close() alone does not, on Linux)."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadBridge]:
    # A body limit above the request's size: a request sent again would be answered.
    args = ["--max-request-body", str(8 * 1024 * 1024)]
    with thread_bridge(tmp_path_factory.mktemp("send-interrupted"), args=args) as running:
        yield running


@pytest.fixture
def relay(bridge: ThreadBridge) -> Iterator[CuttingRelay]:
    cutting = CuttingRelay(bridge.port)
    try:
        yield cutting
    finally:
        cutting.close()


def _big_request() -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": "x" * BODY_CHARACTERS}]


def _options(bridge: ThreadBridge, relay: CuttingRelay) -> dict[str, Any]:
    # Default max_retries (2): the test shows that openai does not send the request again.
    return {"bridge_url": relay.url, "api_key": "k", "policy": bridge.policy, "audience": AUDIENCE}


def _assert_interrupted(error: BaseException, relay: CuttingRelay) -> None:
    assert isinstance(error, shroud_sdk.RequestInterruptedError), repr(error)
    assert isinstance(error, openai.APIConnectionError)  # what generic handlers catch
    assert "may have reached the bridge" in str(error)
    assert relay.connections == 1  # never sent again, on a new connection or otherwise


def test_connection_lost_while_sending_is_typed_and_not_sent_again(
    bridge: ThreadBridge, relay: CuttingRelay
) -> None:
    with (
        shroud_sdk.OpenAI(**_options(bridge, relay)) as client,
        pytest.raises(openai.APIConnectionError) as caught,
    ):
        client.chat.completions.create(model="shroud-demo-echo", messages=_big_request())
    _assert_interrupted(caught.value, relay)
    assert client.transport.session.handshakes == 1  # the handshake went through the relay


async def test_async_connection_lost_while_sending_is_typed_and_not_sent_again(
    bridge: ThreadBridge, relay: CuttingRelay
) -> None:
    async with shroud_sdk.AsyncOpenAI(**_options(bridge, relay)) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await client.chat.completions.create(model="shroud-demo-echo", messages=_big_request())
    _assert_interrupted(caught.value, relay)


def test_the_next_request_gets_a_new_attested_connection(
    bridge: ThreadBridge, relay: CuttingRelay
) -> None:
    """The interrupted connection is not reused; a later request (small, so not cut) is
    served on a new handshake."""
    with shroud_sdk.OpenAI(**_options(bridge, relay)) as client:
        with pytest.raises(shroud_sdk.RequestInterruptedError):
            client.chat.completions.create(model="shroud-demo-echo", messages=_big_request())
        reply = client.chat.completions.create(
            model="shroud-demo-echo", messages=[{"role": "user", "content": "hello"}]
        )
    assert "hello" in (reply.choices[0].message.content or "")
    assert client.transport.session.handshakes == 2
    assert relay.connections == 2


def test_a_connection_that_fails_before_sending_is_still_retried(bridge: ThreadBridge) -> None:
    """Nothing was sent, so openai's usual retry of a connection error stays: only the
    may-have-been-sent case is exempt."""
    first_reset_at_once = CuttingRelay(bridge.port, cuts=(0,))
    try:
        with shroud_sdk.OpenAI(
            bridge_url=first_reset_at_once.url,
            api_key="k",
            policy=bridge.policy,
            audience=AUDIENCE,
            max_retries=1,
        ) as client:
            reply = client.chat.completions.create(
                model="shroud-demo-echo", messages=[{"role": "user", "content": "hello"}]
            )
        assert "hello" in (reply.choices[0].message.content or "")
        assert first_reset_at_once.connections == 2  # refused once, retried by openai
    finally:
        first_reset_at_once.close()
