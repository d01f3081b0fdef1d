"""Many concurrent streamed requests from asyncio, all on one attested connection.

The first request performs the handshake and verification; the others wait for it and then
share the connection as separate encrypted streams.
"""

import asyncio
import os

from shroud_sdk import AsyncOpenAI

QUESTIONS = [f"Question number {i}: what is {i} squared?" for i in range(1, 9)]


async def ask(client: AsyncOpenAI, question: str) -> str:
    stream = await client.chat.completions.create(
        model=os.environ.get("SHROUD_MODEL", "shroud-demo-echo"),
        messages=[{"role": "user", "content": question}],
        stream=True,
    )
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


async def main() -> None:
    async with AsyncOpenAI() as client:  # SHROUD_BRIDGE_URL, SHROUD_API_KEY, SHROUD_POLICY
        answers = await asyncio.gather(*(ask(client, q) for q in QUESTIONS))
        for question, answer in zip(QUESTIONS, answers, strict=True):
            print(f"{question}\n  -> {answer}")
        print(f"attested handshakes: {client.transport.session.handshakes}")


asyncio.run(main())
