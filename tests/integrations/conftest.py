"""Fixtures for the framework tests: a real bridge subprocess, and Shroud clients for it.

The bridge runs with the simulated TDX in front of the demo model, served under any model name
(LlamaIndex's ``OpenAI`` class accepts only OpenAI's model names). Every framework is wired the
way docs/frameworks.md says, through ``shroud_sdk.ShroudClients``. The versions of openai,
httpx and every framework are printed in pytest's header (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

import shroud_sdk
from bridge.demo_upstream import DEMO_MODEL_ID, DemoUpstream
from tests.bridgeproc import BridgeProcess, running_bridge

API_KEY = "integrations-key-0123456789abcdef"
ECHO = 'Shroud demo model here. You said: "{}"'

# LiteLLM fetches a model price list from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


class AnyModelUpstream(DemoUpstream):
    """The demo model, answering to whichever model name a request asks for."""

    async def _route(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        body: bytes,
        keep_alive: bool,
    ) -> None:
        if path == "/v1/chat/completions" and body:
            with contextlib.suppress(ValueError):
                data = json.loads(body)
                if isinstance(data, dict):
                    data["model"] = DEMO_MODEL_ID
                    body = json.dumps(data).encode()
        await super()._route(writer, method, path, body, keep_alive)


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = AnyModelUpstream()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield server.base_url
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture(scope="session")
def bridge(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[BridgeProcess]:
    with running_bridge(
        tmp_path_factory.mktemp("integrations-bridge"),
        upstream=upstream,
        env={"SHROUD_BRIDGE_API_KEYS": API_KEY},
    ) as process:
        yield process


def _clients(bridge: BridgeProcess) -> shroud_sdk.ShroudClients:
    return shroud_sdk.ShroudClients(
        bridge_url=bridge.url, api_key=API_KEY, policy=bridge.policy_path, max_retries=0
    )


@pytest.fixture
def shroud(bridge: BridgeProcess) -> Iterator[shroud_sdk.ShroudClients]:
    """Shroud clients for sync tests (the sync session is closed afterwards)."""
    with _clients(bridge) as clients:
        yield clients


@pytest.fixture
async def ashroud(bridge: BridgeProcess) -> AsyncIterator[shroud_sdk.ShroudClients]:
    """Shroud clients for async tests, closed on the test's event loop."""
    async with _clients(bridge) as clients:
        yield clients


def assert_attested(clients: shroud_sdk.ShroudClients, *, sync: bool) -> None:
    """The requests went through an attested, post-quantum session."""
    transport = (clients.http_client if sync else clients.async_http_client).shroud_transport
    report = transport.attestation
    assert isinstance(report, shroud_sdk.AttestationReport)
    assert report.ok
    assert report.post_quantum
