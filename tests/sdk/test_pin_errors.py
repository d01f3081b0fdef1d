"""A bridge running another image is refused with the digests an operator can compare.

The SDK's refusal names the policy key and shows the image digest the policy expected next to
the one the bridge's verified RTMR3 log recorded (issue 12: pins users understand).
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from attestation.eventlog import CONFIG_HASH_EVENT, IMAGE_DIGEST_EVENT, RuntimeEventLog
from attestation.policy import Policy
from attestation.simulated import SimulatedTdx
from shroud_sdk.channel.constants import Suite
from shroud_sdk.channel.evidence import EventLog, Evidence
from shroud_sdk.errors import AttestationFailedError
from shroud_sdk.verifier import AttestationVerifier

NOW = int(time.time())
RUNNING = "sha256:" + hashlib.sha256(b"bridge 2.0").hexdigest()
PUBLISHED = "sha256:" + hashlib.sha256(b"bridge 1.9").hexdigest()
SIM = Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM


def test_the_refusal_shows_the_expected_and_the_running_image_digest() -> None:
    platform = SimulatedTdx.generate(b"pin-errors", now=NOW)
    td = platform.td()
    log = RuntimeEventLog()
    td.extend_rtmr(3, log.append(IMAGE_DIGEST_EVENT, RUNNING.encode()))
    td.extend_rtmr(3, log.append(CONFIG_HASH_EVENT, hashlib.sha384(b"config").digest()))
    evidence = Evidence(
        "tdx",
        td.quote(bytes(64)),
        (EventLog("shroud-runtime", log.to_bytes()),),
        json.dumps(platform.collateral()).encode(),
    )
    roots = (platform.root_pem.decode(),)
    policy = Policy(trusted_roots=roots, allow_simulated_tee=True, image_digest=PUBLISHED)
    with pytest.raises(AttestationFailedError) as info:
        AttestationVerifier(policy)(evidence, SIM)
    assert info.value.check == "policy"
    assert f"image_digest: expected {PUBLISHED}, got {RUNNING}" in str(info.value)
    # The same policy naming the running image lets the bridge through.
    accepted = Policy(trusted_roots=roots, allow_simulated_tee=True, image_digest=RUNNING)
    report = AttestationVerifier(accepted)(evidence, SIM)
    assert report.report.ok
    assert report.report.image_digests is not None
    assert report.report.image_digests.image_digest == RUNNING
