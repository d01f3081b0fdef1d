"""Fixtures for the SDK tests: a real bridge subprocess in front of the demo model, and clients.

``bridge`` is shared by a test module (starting a bridge takes about a second); tests that need
other bridge flags start their own with ``tests.bridgeproc.running_bridge``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.bridgeproc import BridgeProcess, running_bridge


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """A simulated bridge subprocess in front of the demo model (any API key accepted)."""
    with running_bridge(tmp_path_factory.mktemp("sdk-bridge")) as process:
        yield process


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """Fail the test if it leaves threads behind (the sync client's loop thread, workers)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in leaked:
        thread.join(2)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"
