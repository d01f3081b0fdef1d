"""Bridges come and go under the proxy: clients move on, re-attested, and nothing is replayed.

Each test starts its own fleet, since it stops or kills bridges.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import shroud_sdk
from shroud_sdk.transport import StreamIntegrityError, StreamResetError
from tests.bridgeproc import BridgeProcess
from tests.deploy.fleet import Fleet, running_fleet
from tests.deploy.nginx import require_nginx
from tests.deploy.tls import DeployPki
from tests.e2e.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow

CHAT = {"model": "shroud-demo-echo", "messages": [{"role": "user", "content": "still there?"}]}
# The spec's bound for "the next request of an existing client succeeds" after a bridge stops.
FAILOVER_DEADLINE = 5.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _holder(fleet: Fleet) -> BridgeProcess:
    """The one bridge holding an attested connection (read from the bridges' own metrics)."""
    active = fleet.active_sessions()
    holders = [b for b, n in zip(fleet.bridges, active, strict=False) if n > 0]
    assert len(holders) == 1, active
    return holders[0]


def _wait_until_client_sees_the_close(client: shroud_sdk.OpenAI) -> None:
    """Wait for the client's reader to notice that its connection is gone.

    A request that crosses a bridge's death in flight fails loudly (the tests below); this
    test is about the *next* request, so it waits for the client to have seen the close.
    """
    session = client.transport.session.async_session
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        link = session._link
        if link is None or not link.usable:
            return
        time.sleep(0.01)
    raise AssertionError("the client never noticed that its bridge went away")


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_stopped_bridge_moves_the_client_to_another_reattested(
    tmp_path: Path, pki: DeployPki, how: str
) -> None:
    require_nginx()
    with (
        running_fleet(tmp_path, pki, count=3) as fleet,
        fleet.client(fleet.dev_policy()) as client,
    ):
        assert client.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
        first_report = client.attestation
        holder = _holder(fleet)
        fleet.stop(holder, kill=how == "sigkill")
        _wait_until_client_sees_the_close(client)

        started = time.monotonic()
        completion = client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        elapsed = time.monotonic() - started

        assert completion.choices[0].message.content
        assert elapsed < FAILOVER_DEADLINE, f"next request took {elapsed:.2f}s"
        assert client.transport.session.handshakes == 2  # a new handshake ...
        assert client.attestation is not None
        assert client.attestation.ok  # ... re-verified
        assert client.attestation is not first_report
        assert _holder(fleet) is not holder


def _serving(fleet: Fleet, upstream: FakeUpstream, requests: int) -> BridgeProcess:
    deadline = time.monotonic() + 10
    while upstream.requests < requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert upstream.requests == requests
    return _holder(fleet)


def test_stream_cut_mid_response_by_a_dying_bridge_fails_loudly_and_is_not_retried(
    tmp_path: Path, pki: DeployPki, upstream: FakeUpstream
) -> None:
    require_nginx()
    # openai's default retries stay on: they must not repeat a request that reached a model.
    with (
        running_fleet(tmp_path, pki, count=2, upstream=upstream.base_url) as fleet,
        fleet.client(fleet.dev_policy(), max_retries=2) as client,
    ):
        before = upstream.requests
        stream = client.chat.completions.create(
            model="slow-stream", messages=[{"role": "user", "content": "x"}], stream=True
        )
        chunks = iter(stream)
        next(chunks)  # the response is flowing
        fleet.stop(_serving(fleet, upstream, before + 1), kill=True)
        with pytest.raises((StreamIntegrityError, StreamResetError)):
            for _ in chunks:
                pass
        assert upstream.requests == before + 1  # never sent again

        # The client carries on with another bridge, after a new attestation.
        _wait_until_client_sees_the_close(client)
        raw = client.chat.completions.with_raw_response.create(model="echo", messages=[])
        assert raw.status_code == 200
        assert client.transport.session.handshakes == 2
        assert upstream.requests == before + 2


def test_request_in_flight_when_its_bridge_dies_is_not_replayed(
    tmp_path: Path, pki: DeployPki, upstream: FakeUpstream
) -> None:
    require_nginx()
    with (
        running_fleet(tmp_path, pki, count=2, upstream=upstream.base_url) as fleet,
        fleet.client(fleet.dev_policy(), max_retries=2) as client,
    ):
        before = upstream.requests
        outcome: list[BaseException | object] = []

        def call() -> None:
            try:  # "slow" holds its response headers back for seconds
                outcome.append(client.chat.completions.create(model="slow", messages=[]))
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        fleet.stop(_serving(fleet, upstream, before + 1), kill=True)
        caller.join(30)
        assert not caller.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], StreamIntegrityError), outcome[0]
        assert upstream.requests == before + 1  # openai did not retry it elsewhere
