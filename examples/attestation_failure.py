"""Handling an attestation failure: the bridge is not what the policy pins.

This example deliberately pins an image hash the bridge does not have. The client refuses the
bridge during the handshake, before any byte of the prompt is sent, and raises
``shroud_sdk.AttestationError`` (a subclass of ``openai.APIConnectionError``) carrying the full
verification report.
"""

import os

import openai

from attestation.policy import Policy
from shroud_sdk import AttestationError, OpenAI

deployment = Policy.load(os.environ["SHROUD_POLICY"])
wrong = Policy(
    **(deployment.model_dump(exclude={"custom_checks"}) | {"allowed_image_hashes": ["00" * 48]})
)

client = OpenAI(policy=wrong)  # SHROUD_BRIDGE_URL and SHROUD_API_KEY from the environment
try:
    client.chat.completions.create(
        model=os.environ.get("SHROUD_MODEL", "shroud-demo-echo"),
        messages=[{"role": "user", "content": "This must never reach the wrong bridge."}],
    )
except AttestationError as exc:
    print(f"refused the bridge: {exc.check}")
    report = exc.report
    if report is not None:
        print(report.summary())
except openai.APIConnectionError:
    raise  # a generic handler would also have caught the AttestationError above
else:
    raise SystemExit("the bridge was accepted although its image hash is not pinned")
finally:
    client.close()
