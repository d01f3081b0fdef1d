"""Quickstart: an ordinary OpenAI program with one import changed.

Before the first byte of the prompt leaves this process, the client verifies the bridge's
Intel TDX quote against the attestation policy; afterwards everything travels end-to-end
encrypted. Configuration comes from the environment:

    SHROUD_BRIDGE_URL   wss://... of the bridge (ws:// only to loopback, for development)
    SHROUD_API_KEY      the bridge's API key
    SHROUD_POLICY       path to the attestation policy (TOML)

``make demo`` starts a local simulated bridge and runs this file against it.
"""

import os

from shroud_sdk import OpenAI  # was: from openai import OpenAI

client = OpenAI()

stream = client.chat.completions.create(
    model=os.environ.get("SHROUD_MODEL", "shroud-demo-echo"),
    messages=[{"role": "user", "content": "What can the operator of this service see?"}],
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()

# The one thing an OpenAI program could not show you: what was verified before sending.
report = client.attestation
if report is not None:
    print()
    print("Verified before the prompt was sent:")
    print(f"  TCB status:      {report.tcb_status.value if report.tcb_status else 'unknown'}")
    print(f"  key agreement:   suite {int(report.suite)}, {report.suite.description}")
    print(f"  image hash:      {report.image_hash.hex() if report.image_hash else 'unknown'}")
    if report.image_digests is not None:
        print(f"  image digest:    {report.image_digests.image_digest}")
    for register, value in report.measurements.items():
        print(f"  {register + ':':<17}{value}")
    if report.simulated:
        print("  (SIMULATED TEE: this proves the code path, not confidential hardware)")
client.close()
