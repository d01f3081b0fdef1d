"""Fixtures for the end-to-end tests: a real bridge subprocess (see ``tests.bridgeproc``).

``demo_bridge`` is one bridge per module in front of the built-in demo model; tests that need
another upstream or other flags start their own with ``tests.bridgeproc.running_bridge``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bridgeproc import BridgeProcess, running_bridge


@pytest.fixture(scope="module")
def demo_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """A simulated bridge in front of the demo model, shared by one test module."""
    with running_bridge(tmp_path_factory.mktemp("demo-bridge")) as bridge:
        yield bridge
