"""Streaming with verified usage, and what an integrity failure looks like.

A stream either ends with the bridge's authenticated END (then ``client.last_usage`` holds the
token counts the bridge signed) or raises ``StreamIntegrityError``: a truncated, reordered or
altered answer is never handed over as if it were complete.
"""

import os
import sys

import shroud_sdk

client = shroud_sdk.OpenAI()  # SHROUD_BRIDGE_URL, SHROUD_API_KEY, SHROUD_POLICY

try:
    stream = client.chat.completions.create(
        model=os.environ.get("SHROUD_MODEL", "shroud-demo-echo"),
        messages=[{"role": "user", "content": "Stream a short answer, please."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices:
            print(chunk.choices[0].delta.content or "", end="", flush=True)
    print()
except shroud_sdk.StreamIntegrityError as exc:
    print(f"\nthe answer was damaged in transit ({exc.check}); discard it", file=sys.stderr)
    sys.exit(1)

usage = client.last_usage  # verified against the bridge's attested usage-signing key
if usage is not None:
    print(
        f"signed usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion "
        f"= {usage.total_tokens} tokens"
    )
client.close()
