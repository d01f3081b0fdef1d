"""The bridge's bounds against RLIMIT_NOFILE: the soft limit is raised to what they need, and a
hard limit below it fails the start with a message naming the settings (bridge.descriptors).
The attack this prevents is tests/stress/test_held_streams.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import BridgeConfig, ConfigError, parse_args
from bridge.descriptors import (
    BASE_DESCRIPTORS,
    DescriptorLimitError,
    descriptors_needed,
    ensure_descriptors,
)
from bridge.listener import MAX_LINGERING_REFUSALS
from tests.bridgeproc import running_bridge


def _config(*extra: str) -> BridgeConfig:
    return parse_args(["--quote-provider", "simulated", *extra], environ={})


class _Limits:
    """A process's RLIMIT_NOFILE, as ensure_descriptors sees and sets it."""

    def __init__(self, soft: int, hard: int) -> None:
        self.value = (soft, hard)
        self.set_calls = 0

    def get(self) -> tuple[int, int]:
        return self.value

    def set(self, value: tuple[int, int]) -> None:
        self.set_calls += 1
        self.value = value


def test_the_need_is_connections_upstream_connections_refusals_and_the_rest() -> None:
    config = _config("--max-sessions", "100", "--max-streams", "300", "--max-source-streams", "50")
    assert descriptors_needed(config) == 100 + 300 + MAX_LINGERING_REFUSALS + BASE_DESCRIPTORS


def test_a_low_soft_limit_is_raised_to_the_need_and_no_further() -> None:
    config = _config()
    limits = _Limits(1024, 524288)  # systemd's default
    assert ensure_descriptors(config, get_limit=limits.get, set_limit=limits.set) == (
        descriptors_needed(config)
    )
    assert limits.value == (descriptors_needed(config), 524288)


def test_a_soft_limit_that_suffices_is_left_alone() -> None:
    limits = _Limits(1 << 20, 1 << 20)
    assert ensure_descriptors(_config(), get_limit=limits.get, set_limit=limits.set) == 1 << 20
    assert limits.set_calls == 0


def test_a_hard_limit_below_the_need_fails_naming_the_settings() -> None:
    config = _config()
    limits = _Limits(1024, 1024)
    with pytest.raises(DescriptorLimitError) as caught:
        ensure_descriptors(config, get_limit=limits.get, set_limit=limits.set)
    message = str(caught.value)
    assert f"need {descriptors_needed(config)} file descriptors" in message
    assert "max_sessions 1024" in message
    assert "max_streams 2048" in message
    assert "hard RLIMIT_NOFILE is 1024" in message
    assert limits.set_calls == 0


def test_each_worker_needs_its_share() -> None:
    config = _config("--max-sessions", "1000", "--max-streams", "2000")
    worker = config.per_worker(4)
    assert (worker.max_sessions, worker.max_streams, worker.max_source_streams) == (250, 500, 128)
    assert descriptors_needed(worker) == 750 + MAX_LINGERING_REFUSALS + BASE_DESCRIPTORS


def test_a_source_share_above_the_whole_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_source_streams <= max_streams"):
        _config("--max-streams", "100")  # below the default source share, 512


def test_a_bridge_whose_bounds_exceed_its_hard_limit_does_not_start(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="hard RLIMIT_NOFILE is 512") as caught,
        running_bridge(tmp_path / "bridge", fd_limit=512, startup_timeout=20),
    ):
        pass
    assert "--max-streams" in str(caught.value)
