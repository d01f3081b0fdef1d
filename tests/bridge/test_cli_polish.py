"""What an operator meets first: --version, help for every flag, a port clash that names the
address and the flag (and leaves no stale development policy), and a quiet clean shutdown."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import shroud_sdk
from bridge.config import BridgeConfig, build_arg_parser
from tests.bridgeproc import free_port, running_bridge
from tests.vectors import REPO_ROOT


def _bridge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_version_names_the_package_and_the_protocol() -> None:
    done = _bridge("--version")
    assert done.returncode == 0
    assert re.fullmatch(r"shroud-bridge \S+ \(protocol shroud/1\)\n", done.stdout)


def test_every_flag_has_help_text() -> None:
    parser = build_arg_parser()
    missing = [
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings and not (action.help or "").strip()
    ]
    assert missing == []


def test_every_numeric_or_switch_flag_states_the_bridge_config_default() -> None:
    """Help texts read their defaults from BridgeConfig, so they cannot drift from it."""
    parser = build_arg_parser()
    checked = []
    for action in parser._actions:
        field = BridgeConfig.model_fields.get(action.dest)
        if field is None or not action.option_strings:
            continue
        default = field.get_default(call_default_factory=True)
        text = " ".join((action.help or "").split())
        if isinstance(default, bool):
            assert "default off" in text, (action.option_strings[0], text)
        elif isinstance(default, int | float):
            assert f"default {default})" in text, (action.option_strings[0], text)
        else:
            continue
        checked.append(action.option_strings[0])
    # issue 10's availability limits are among them.
    assert {"--max-sessions", "--send-timeout", "--proxy-protocol"} <= set(checked)


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port on 127.0.0.1 held by another listener."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


def _start_on(
    tmp_path: Path, listen: int, metrics: int
) -> tuple[subprocess.CompletedProcess[str], Path]:
    policy = tmp_path / "policy.toml"
    done = _bridge(
        "--listen",
        f"127.0.0.1:{listen}",
        "--metrics-listen",
        f"127.0.0.1:{metrics}",
        "--quote-provider",
        "simulated",
        "--simulated-dir",
        str(tmp_path / "simulated"),
        "--upstream",
        "demo",
        "--dev-policy-out",
        str(policy),
    )
    return done, policy


def test_port_clash_names_the_address_and_flag_and_writes_no_policy(
    tmp_path: Path, occupied: int
) -> None:
    done, policy = _start_on(tmp_path, occupied, free_port())
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{occupied} (--listen)" in done.stderr
    assert "choose another with --listen" in done.stderr
    assert "Traceback" not in done.stderr
    assert not policy.exists()  # a client must not load a policy for a bridge that never ran


def test_metrics_port_clash_says_how_to_move_or_disable_metrics(
    tmp_path: Path, occupied: int
) -> None:
    done, policy = _start_on(tmp_path, free_port(), occupied)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{occupied} (--metrics-listen)" in done.stderr
    assert "--metrics-listen off" in done.stderr
    assert not policy.exists()


def test_clean_shutdown_logs_no_traceback(tmp_path: Path) -> None:
    with running_bridge(tmp_path) as bridge:
        with shroud_sdk.OpenAI(bridge_url=bridge.url, policy=bridge.policy_path) as client:
            client.models.list()
        lingering = shroud_sdk.OpenAI(bridge_url=bridge.url, policy=bridge.policy_path)
        lingering.models.list()  # a connection still open, and upstream keep-alives, at SIGTERM
        assert bridge.terminate() == 0
        lingering.close()
        log = bridge.log_text()
    assert "shroud-bridge stopped" in log
    assert "Traceback" not in log
    assert "CancelledError" not in log
