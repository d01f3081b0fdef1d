"""A short script that builds a client and exits, exits cleanly.

The verifier warms OpenSSL up on a background thread as it is built; a daemon thread still in
OpenSSL while the interpreter finalises aborted such scripts with SIGABRT about half the time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.bridgeproc import BridgeProcess
from tests.vectors import REPO_ROOT

SCRIPT = "from shroud_sdk import OpenAI\nclient = OpenAI()\n"


def test_building_a_client_and_exiting_never_aborts(bridge: BridgeProcess, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHROUD_")}
    env |= {
        "PYTHONPATH": str(REPO_ROOT),
        "SHROUD_BRIDGE_URL": bridge.url,
        "SHROUD_POLICY": str(bridge.policy_path),
    }
    codes = [
        subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, timeout=60, check=False
        ).returncode
        for _ in range(12)
    ]
    assert codes == [0] * 12
