"""A custom attestation policy: organisation rules from TOML plus a check written in Python.

The deployment's own pins (its trusted root, MRTD and RTMR3 events) come from
``$SHROUD_POLICY``; ``custom_policy.toml`` adds organisation-wide rules; ``RequireImageDigest``
is a Python check that insists the bridge measured an image digest into RTMR3 at all.
"""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from attestation.policy import Policy, PolicyInput, Violation
from shroud_sdk import OpenAI


@dataclass(frozen=True)
class RequireImageDigest:
    """Refuse bridges that do not name the image they run in their verified RTMR3 log."""

    name: str = "image_digest_present"
    pins_measurements: bool = False  # it requires a digest, but does not say which one

    def __call__(self, evidence: PolicyInput) -> list[Violation]:
        digests = evidence.image_digests
        if digests is not None and digests.image_digest is not None:
            return []
        return [Violation("image_digest", "an image digest event in RTMR3", "none")]


deployment = Policy.load(os.environ["SHROUD_POLICY"])
rules = tomllib.loads(Path(__file__).with_name("custom_policy.toml").read_text())
policy = Policy(
    **(deployment.model_dump(exclude={"custom_checks"}) | rules),
    custom_checks=(RequireImageDigest(),),
)
print(policy.to_toml())

client = OpenAI(policy=policy)  # SHROUD_BRIDGE_URL and SHROUD_API_KEY from the environment
answer = client.chat.completions.create(
    model=os.environ.get("SHROUD_MODEL", "shroud-demo-echo"),
    messages=[{"role": "user", "content": "Checked against my own rules?"}],
)
print(answer.choices[0].message.content)
report = client.attestation
assert report is not None
if report.policy_result is not None:
    print("policy fields compared:", ", ".join(report.policy_result.evaluated))
client.close()
