"""The benchmark's model server: OpenAI-shaped SSE whose every token carries its send time.

Run as its own process (``python -m benchmarks.sse_upstream``); it prints ``PORT <n>`` once it
listens on 127.0.0.1. Every path the table compares (plain ``openai``, the bare TCP relay, the
bridge) talks to this one server, so the upstream's own cost is the same on each side.

- ``POST /v1/chat/completions`` with ``"stream": true`` streams ``max_tokens`` chunks in the
  ``chat.completion.chunk`` shape (chunked transfer encoding, as model servers send them),
  then a finish chunk and ``data: [DONE]``. Each token's content is the sending moment on
  ``CLOCK_MONOTONIC`` in nanoseconds (one clock for every process on the machine) and a space,
  so a client gets one-way latency as ``time.monotonic_ns() - int(content)``.
- ``bench_pace_us`` in the request body paces the tokens that many microseconds apart on an
  absolute schedule (a late token is sent at once, never pushing the later ones back); 0 or
  absent sends them as fast as the socket takes them.
- ``GET /v1/models`` lists one model (for first-request timings).

Not a general HTTP server: no request pipelining, no chunked request bodies, errors as 400.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Final

MODEL: Final = "bench-timestamps"
_MAX_HEAD: Final = 16 * 1024
_MAX_BODY: Final = 1024 * 1024
_HEAD_200_SSE: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
)
_MODELS: Final = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "b"}]}
).encode()


def _chunk_event(content: str | None, finish: str | None) -> bytes:
    delta = {} if content is None else {"content": content}
    event = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


# Every token event is the same bytes around the timestamp: rendered once.
_TOKEN_PREFIX, _TOKEN_SUFFIX = _chunk_event("\x00", None).split(b"\\u0000")
_FINISH: Final = _chunk_event(None, "stop")
_DONE: Final = b"data: [DONE]\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _stream(writer: asyncio.StreamWriter, tokens: int, pace_ns: int) -> None:
    writer.write(_HEAD_200_SSE + _http_chunk(_chunk_event("", None)))
    await writer.drain()
    start = time.monotonic_ns()
    for i in range(tokens):
        if pace_ns:
            wait = start + (i + 1) * pace_ns - time.monotonic_ns()
            if wait > 0:
                await asyncio.sleep(wait / 1e9)
        stamp = b"%d " % time.monotonic_ns()
        writer.write(_http_chunk(_TOKEN_PREFIX + stamp + _TOKEN_SUFFIX))
        await writer.drain()
    writer.write(_http_chunk(_FINISH) + _http_chunk(_DONE) + b"0\r\n\r\n")
    await writer.drain()


def _plain(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: keep-alive\r\n\r\n" % len(body)
    ) + body


async def _one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return False
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length > _MAX_BODY:
        return False
    body = await reader.readexactly(length) if length else b""
    if method == "GET" and path.startswith("/v1/models"):
        writer.write(_plain(b"200 OK", _MODELS))
    elif method == "POST" and path.startswith("/v1/chat/completions"):
        request = json.loads(body)
        if not request.get("stream"):
            writer.write(_plain(b"400 Bad Request", b'{"error":{"message":"stream only"}}'))
        else:
            tokens = int(request.get("max_tokens") or 16)
            await _stream(writer, tokens, int(request.get("bench_pace_us") or 0) * 1000)
            return True
    else:
        writer.write(_plain(b"404 Not Found", b'{"error":{"message":"not here"}}'))
    await writer.drain()
    return True


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await _one_request(reader, writer):
            pass
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, limit=_MAX_HEAD, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
