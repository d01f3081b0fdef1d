"""LangChain's ChatOpenAI over an attested Shroud session (``pip install shroud-sdk[langchain]``).

LangChain hands its ``http_client`` to the ``openai`` client it builds; giving it an httpx
client on a Shroud transport makes every request go through the attested, encrypted channel.
"""

import os

import httpx
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from shroud_sdk import AttestationVerifier, LegacyShroudTransport, resolve_policy

policy = resolve_policy(None)  # $SHROUD_POLICY
transport = LegacyShroudTransport(
    os.environ["SHROUD_BRIDGE_URL"],
    AttestationVerifier(policy),
    allow_simulated=policy.allow_simulated_tee,
)
llm = ChatOpenAI(
    model=os.environ.get("SHROUD_MODEL", "shroud-demo-echo"),
    api_key=SecretStr(os.environ.get("SHROUD_API_KEY", "")),
    base_url=transport.base_url,
    http_client=httpx.Client(transport=transport),
    max_retries=0,
)
reply = llm.invoke("Hello from LangChain")
print(reply.content)
print("attested:", transport.attestation is not None)
transport.close()
