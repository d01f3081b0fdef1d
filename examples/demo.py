"""``make demo``: a real attested, end-to-end encrypted request, on this machine.

1. Starts ``shroud-bridge`` (``python -m bridge``) on a free loopback port with the SIMULATED
   TDX quote provider, the built-in demo model as upstream and a demo image digest measured
   into RTMR3; it writes a development policy that trusts its simulated root CA and pins its
   MRTD, image digest and configuration hash (``--dev-policy-out``).
2. Runs ``examples/quickstart.py``, an ordinary OpenAI program with one import changed, with
   ``SHROUD_BRIDGE_URL``, ``SHROUD_API_KEY`` and ``SHROUD_POLICY`` pointing at that bridge.
   It verifies the bridge's quote before sending anything, streams the answer and prints what
   it verified.
3. Stops the bridge, and keeps the policy the client trusted in ``build/demo/policy.toml`` (or
   ``$SHROUD_DEMO_DIR``) so you can read what was pinned (docs/policy.md explains each key).

Nothing here is hidden from the real path: the same verifier, channel and bridge code run as
in production. Only the quotes are simulated (signed by a CA generated on this machine), which
is why the policy must say ``allow_simulated_tee = true`` and a default client refuses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

REPO_ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = REPO_ROOT / "examples" / "quickstart.py"
# The image digest the demo bridge measures into RTMR3 and the policy pins.
DEMO_IMAGE_DIGEST = "sha256:" + hashlib.sha256(b"shroud demo bridge image").hexdigest()
DEMO_API_KEY = "demo-key-0123456789abcdef"  # the bridge's minimum length is 16 characters
STARTUP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the bridge exited early:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url, timeout=1.0, trust_env=False).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"the bridge did not come up:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    """Run the demo; return the quickstart's exit status."""
    kept = Path(os.environ.get("SHROUD_DEMO_DIR") or REPO_ROOT / "build" / "demo")
    kept.mkdir(parents=True, exist_ok=True)
    policy = kept / "policy.toml"
    policy.unlink(missing_ok=True)  # the bridge writes a fresh one once it is listening
    with tempfile.TemporaryDirectory(prefix="shroud-demo-") as tmp:
        workdir = Path(tmp)
        port = _free_port()
        log = workdir / "bridge.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SHROUD_")}
        environment["PYTHONPATH"] = str(REPO_ROOT)
        command = [
            sys.executable,
            "-m",
            "bridge",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            "demo",
            "--quote-provider",
            "simulated",
            "--collateral",
            "simulated",
            "--simulated-dir",
            str(workdir / "simulated"),
            "--dev-policy-out",
            str(policy),
            "--image-digest",
            DEMO_IMAGE_DIGEST,
            "--metrics-listen",
            "off",
        ]
        print(f"== starting shroud-bridge (simulated TDX, demo model) on 127.0.0.1:{port}")
        with log.open("wb") as sink:
            bridge = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                command,
                cwd=REPO_ROOT,
                env=environment | {"SHROUD_BRIDGE_API_KEYS": DEMO_API_KEY},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_healthy(bridge, f"http://127.0.0.1:{port}/healthz", log)
            print(f"== the bridge wrote its development policy to {_shown(policy)}:")
            print("   trusts its simulated root, pins its MRTD, image digest and config hash")
            print("== running examples/quickstart.py (from shroud_sdk import OpenAI)")
            print()
            client_env = environment | {
                "SHROUD_BRIDGE_URL": f"ws://127.0.0.1:{port}/",
                "SHROUD_API_KEY": DEMO_API_KEY,
                "SHROUD_POLICY": str(policy),
            }
            result = subprocess.run(  # noqa: S603 (our own interpreter and example)
                [sys.executable, str(QUICKSTART)], cwd=REPO_ROOT, env=client_env, check=False
            )
        finally:
            print()
            print("== stopping the bridge")
            _stop(bridge)
        if result.returncode != 0:
            print(f"quickstart failed ({result.returncode}); bridge log:", file=sys.stderr)
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        else:
            print(f"== the policy the client trusted is kept in {_shown(policy)}")
            print(
                "   (docs/policy.md explains each key; it trusts only this demo's simulated root)"
            )
        return result.returncode


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (shorter to copy)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
