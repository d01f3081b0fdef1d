"""The WebSocket opening never follows a redirect (DESIGN.md §6).

websockets' ``connect`` follows up to ten 3xx answers to the upgrade by default. A client must
reach the bridge at the URL it was configured with and nowhere else: a redirect, from a
misconfigured proxy or from someone who wants the client's connections, is a connection failure
that names it, and nothing is sent to where it points. Each case uses a real HTTP server that
answers the upgrade with the redirect, pointing at a real bridge that would serve the client:
following it would succeed, so the test fails if the SDK follows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest

import shroud_sdk
from tests.sdk.harness import AUDIENCE, ThreadBridge, thread_bridge


class Redirector:
    """An HTTP server on 127.0.0.1 that answers every request with ``status`` to ``location``."""

    def __init__(self, status: int, location: str) -> None:
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # as any web server answers an upgrade request

            def do_GET(self) -> None:
                owner.requests += 1
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"ws://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> Redirector:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadBridge]:
    with thread_bridge(tmp_path_factory.mktemp("redirects")) as running:
        yield running


def _options(bridge: ThreadBridge, redirector: Redirector) -> dict[str, Any]:
    return {
        "bridge_url": redirector.url,
        "api_key": "k",
        "policy": bridge.policy,
        "audience": AUDIENCE,  # the bridge's own: following the redirect would be served
        "max_retries": 0,
    }


def _refusal(bridge: ThreadBridge, redirector: Redirector) -> tuple[str, shroud_sdk.OpenAI]:
    """The message of the connection error a request through ``redirector`` raises."""
    with (
        shroud_sdk.OpenAI(**_options(bridge, redirector)) as client,
        pytest.raises(openai.APIConnectionError) as caught,
    ):
        client.models.list()
    assert caught.value.__cause__ is not None
    return str(caught.value.__cause__), client


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_answer_to_the_upgrade_is_a_connect_error_and_not_followed(
    bridge: ThreadBridge, status: int
) -> None:
    with Redirector(status, bridge.url) as redirector:
        message, client = _refusal(bridge, redirector)
    assert client.transport.session.handshakes == 0  # no ClientHello went anywhere
    assert client.attestation is None
    assert redirector.requests == 1
    assert f"redirect (HTTP {status} to '{bridge.url}')" in message, message
    assert "never follows redirects" in message
    assert "nothing was sent" in message


async def test_the_async_client_does_not_follow_a_redirect_either(bridge: ThreadBridge) -> None:
    with Redirector(302, bridge.url) as redirector:
        async with shroud_sdk.AsyncOpenAI(**_options(bridge, redirector)) as client:
            with pytest.raises(openai.APIConnectionError) as caught:
                await client.models.list()
    assert client.transport.session.handshakes == 0
    assert "never follows redirects" in str(caught.value.__cause__)


def test_a_hostile_location_is_shown_cut_and_without_control_characters(
    bridge: ThreadBridge,
) -> None:
    # \x9b: the C1 control sequence introducer, a terminal escape in one byte.
    with Redirector(301, "ws://evil.example/\x9b2J" + "a" * 500) as redirector:
        message, _ = _refusal(bridge, redirector)
    assert "\x9b" not in message
    assert "a" * 201 not in message
    assert "ws://evil.example/" in message
