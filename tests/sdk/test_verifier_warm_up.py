"""The OpenSSL warm-up a verifier starts when it is built (``shroud_sdk.verifier.start_warm_up``).

It must run once per process, on a daemon thread (never delaying the caller; process exit waits
only for an unfinished warm-up, see test_process_exit.py), and not at all when the verifier is
built with ``warm_up=False``. Each case runs in a fresh interpreter, since the warm-up is per
process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.vectors import REPO_ROOT

_WARM_UP_PROBE = """
import sys
from attestation.policy import Policy
from shroud_sdk import verifier
policy = Policy(allow_unpinned_measurements=True)
verifier.AttestationVerifier(policy, warm_up=sys.argv[1] == "on")
thread = verifier._warm_up_thread
if thread is None:
    print("none")
else:
    thread.join(60)
    verifier.AttestationVerifier(policy)  # a second verifier starts no second thread
    print(thread.daemon, thread.is_alive(), verifier.start_warm_up() is thread)
"""


@pytest.mark.parametrize(("mode", "expected"), [("on", "True False True"), ("off", "none")])
def test_building_a_verifier_warms_up_once_per_process_on_a_daemon_thread(
    mode: str, expected: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WARM_UP_PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.stdout.strip() == expected, done.stderr
