"""An idle attested connection outlives the proxy's read timeout thanks to the bridge's pings.

nginx closes an upgraded connection on which nothing came from the bridge for
``proxy_read_timeout``. The bridge's WebSocket pings (``--ping-interval``) are traffic from the
bridge, so a connection waiting for its next request stays open and attested. The control case
(pings rarer than the timeout) shows the proxy really does cut idle connections.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.deploy.fleet import running_fleet
from tests.deploy.nginx import require_nginx
from tests.deploy.tls import DeployPki

pytestmark = pytest.mark.slow

PROXY_READ_TIMEOUT = 2.0
IDLE = 3 * PROXY_READ_TIMEOUT
CHAT = {"model": "shroud-demo-echo", "messages": [{"role": "user", "content": "ping?"}]}


@pytest.mark.parametrize(
    ("ping_interval", "handshakes_after_idle"),
    [("0.5", 1), ("60", 2)],
    ids=["pings-keep-it-open", "control-without-pings-the-proxy-cuts-it"],
)
def test_idle_connection_and_proxy_read_timeout(
    tmp_path: Path, pki: DeployPki, ping_interval: str, handshakes_after_idle: int
) -> None:
    require_nginx()
    with (
        running_fleet(
            tmp_path,
            pki,
            count=1,
            read_timeout=f"{PROXY_READ_TIMEOUT:g}s",
            bridge_args=["--ping-interval", ping_interval],
        ) as fleet,
        fleet.client(fleet.dev_policy()) as client,
    ):
        assert client.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
        time.sleep(IDLE)
        assert client.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
        assert client.transport.session.handshakes == handshakes_after_idle
        if handshakes_after_idle == 2:
            assert "upstream timed out" in fleet.proxy.error_log()
