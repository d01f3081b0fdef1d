"""Every example runs against a real simulated bridge subprocess and says what it should.

The LangChain example runs only when ``langchain_openai`` is installed (the ``langchain``
extra); the wiring it relies on, an ``openai`` client built with ``http_client=`` an httpx
client on a Shroud transport, is always tested in tests/sdk/test_transport.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bridgeproc import BridgeProcess, running_bridge
from tests.vectors import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
API_KEY = "examples-key-0123456789abcdef"
IMAGE_DIGEST = "sha256:" + hashlib.sha256(b"examples image").hexdigest()
ECHO = 'Shroud demo model here. You said: "'


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    with running_bridge(
        tmp_path_factory.mktemp("examples-bridge"),
        args=["--image-digest", IMAGE_DIGEST],
        env={"SHROUD_BRIDGE_API_KEYS": API_KEY},
    ) as process:
        yield process


def _run(
    script: str, bridge: BridgeProcess | None = None, extra_env: dict[str, str] | None = None
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHROUD_", "OPENAI_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env |= extra_env or {}
    if bridge is not None:
        env |= {
            "SHROUD_BRIDGE_URL": bridge.url,
            "SHROUD_API_KEY": API_KEY,
            "SHROUD_POLICY": str(bridge.policy_path),
        }
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_quickstart_is_an_openai_program_with_one_import_changed() -> None:
    source = (EXAMPLES / "quickstart.py").read_text()
    assert "from shroud_sdk import OpenAI  # was: from openai import OpenAI" in source
    assert "client = OpenAI()" in source


def test_quickstart_streams_the_answer_and_shows_what_was_verified(
    bridge: BridgeProcess,
) -> None:
    out = _run("quickstart.py", bridge)
    assert ECHO + 'What can the operator of this service see?"' in out
    assert "TCB status:      UpToDate" in out
    # Post-quantum by default, against the simulated bridge too.
    assert "key agreement:   suite 32514, hybrid P-256 + ML-KEM-768, SIMULATED TEE" in out
    assert f"image digest:    {IMAGE_DIGEST}" in out
    pins = bridge.policy.measurements.mr_td
    assert pins is not None
    assert any(f"mr_td:           {mr_td}" in out for mr_td in pins)


def test_streaming_example_reports_signed_usage(bridge: BridgeProcess) -> None:
    out = _run("streaming.py", bridge)
    assert ECHO + 'Stream a short answer, please."' in out
    assert "signed usage:" in out


def test_async_example_shares_one_handshake(bridge: BridgeProcess) -> None:
    out = _run("async_concurrency.py", bridge)
    assert out.count("  -> " + ECHO) == 8
    assert "attested handshakes: 1" in out


def test_custom_policy_example_applies_toml_rules_and_python_check(bridge: BridgeProcess) -> None:
    out = _run("custom_policy.py", bridge)
    assert "max_collateral_age_seconds = 2592000" in out
    assert "custom.image_digest_present" in out
    assert ECHO + 'Checked against my own rules?"' in out


def test_attestation_failure_example_is_refused_with_a_report(bridge: BridgeProcess) -> None:
    out = _run("attestation_failure.py", bridge)
    assert "refused the bridge: policy" in out
    assert "policy violation: allowed_image_hashes" in out
    assert "This must never reach" not in out


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_openai") is None,
    reason="langchain_openai is not installed (optional extra 'langchain'); the same wiring is "
    "tested without LangChain in tests/sdk/test_transport.py",
)
def test_langchain_example(bridge: BridgeProcess) -> None:  # pragma: no cover - optional
    out = _run("langchain_chat.py", bridge)
    assert ECHO + 'Hello from LangChain"' in out
    assert ECHO + 'Hello again, asynchronously"' in out  # ainvoke, on the attested async client
    assert "attested: True" in out


def test_make_demo_runs_the_attested_quickstart_end_to_end(tmp_path: Path) -> None:
    out = _run("demo.py", extra_env={"SHROUD_DEMO_DIR": str(tmp_path)})
    kept = tmp_path / "policy.toml"
    assert f"the policy the client trusted is kept in {kept}" in out
    assert "allow_simulated_tee = true" in kept.read_text()  # kept after the bridge stopped
    assert ECHO in out
    assert "Verified before the prompt was sent:" in out
    assert "image digest:    sha256:" in out
    assert "SIMULATED TEE" in out
    assert "== stopping the bridge" in out
