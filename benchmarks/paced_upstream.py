"""A paced SSE upstream for the bridge benchmarks: every event carries the time it was sent.

``python -m benchmarks.paced_upstream`` prints its base URL and serves until killed. ``POST
/v1/chat/completions`` with ``{"stream": true, "max_tokens": N, "rate": R}`` answers ``N``
chat-completion-chunk events at ``R`` per second on an absolute schedule (event ``i`` at
``start + i / R``: no drift from late wake-ups), each event's ``id`` being ``t=<time.time()>``
taken just before it is written; then ``data: [DONE]``. A reader on the same machine computes
each chunk's one-way latency as its arrival time minus that stamp, for the direct path and
through the bridge alike. It is a load generator, not a model: no request validation beyond
what it needs, HTTP/1.1 keep-alive with chunked responses only.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import suppress

_DONE = b"data: [DONE]\n\n"
_EVENT = (
    b'data: {"id":"t=%.6f","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":" w%d"},"finish_reason":null}]}\n\n'
)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            request = json.loads(await reader.readexactly(length)) if length else {}
            tokens = int(request.get("max_tokens", 100))
            rate = float(request.get("rate", 20.0))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(tokens):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                event = _EVENT % (time.time(), i)
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(_DONE), _DONE))
            await writer.drain()
    writer.close()


async def _main() -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main())
