"""A scriptable OpenAI-shaped upstream on 127.0.0.1, running in its own thread and event loop.

The request body's ``model`` picks the behaviour, so one server serves a whole test module:

- ``echo``: JSON answer carrying the headers and body the upstream received, with usage;
- ``stream``: an SSE chat stream (with a usage chunk only if ``stream_options.include_usage``);
- ``slow``: waits ``SLOW_SECONDS`` before any response header (the bridge should answer 504);
- ``fail-midstream``: starts an SSE stream, then drops the connection mid-body;
- ``slow-stream``: ten SSE events 100 ms apart, then ``[DONE]`` (an in-flight stream);
- ``stall``: sends one SSE event, then nothing, and records when the client closes;
- ``endless``: streams an event every 50 ms until the client goes away, and records that;
- ``flood``: streams 8 KiB events as fast as the bridge takes them until it goes away (a
  response far larger than any socket buffer, for flow-control and memory tests);
- ``bad-chunk``: starts an SSE stream with one event, then, once the test sets
  ``bad_chunk_release``, sends bytes that are no chunk at all, and keeps the connection open
  (the break reaches the bridge in a later read than the headers);
- ``bad-status``: answers with status 600, which no HTTP server may send;
- ``long-header``, ``large-head``: headers the channel cannot carry (one too long, all too
  many bytes for one record);
- ``endless-head``: header lines, 4 KB each, until the bridge hangs up (a hostile upstream).
- ``big-json``: an embeddings answer (JSON, not SSE) of ``BIG_JSON_BYTES`` with
  ``BIG_JSON_USAGE`` as its last member: a body far larger than the bridge may keep.

``python -m tests.e2e.fake_upstream PORT`` serves it in a process of its own (to be killed).

``GET /v1/models`` lists the models. It speaks just enough HTTP/1.1 for the bridge's client.

``capacity`` models a model server sized for so many requests at once: a request beyond it
gets 503 at once (as from a gateway in front of a full vLLM).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
from typing import Any

SLOW_SECONDS = 5.0
FLOOD_EVENT_CHARS = 8192
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
BIG_JSON_BYTES = 16 * 1024 * 1024
BIG_JSON_USAGE = {"prompt_tokens": 4096, "completion_tokens": 0, "total_tokens": 4096}


@functools.cache
def big_json_body() -> bytes:
    """The ``big-json`` answer: 1536-dimension embeddings, ``BIG_JSON_BYTES`` or a little more."""
    vector = ",".join(f"{(i % 97 - 48) / 97:.9f}" for i in range(1536))
    item = '{"object": "embedding", "index": %d, "embedding": [' + vector + "]}"
    count = BIG_JSON_BYTES // len(item) + 1
    data = ", ".join(item % i for i in range(count))
    usage = json.dumps(BIG_JSON_USAGE)
    return f'{{"object": "list", "data": [{data}], "model": "big-json", "usage": {usage}}}'.encode()


class FakeUpstream:
    """``with FakeUpstream() as up: up.base_url``; see the module docstring."""

    def __init__(self, port: int = 0, *, capacity: int | None = None) -> None:
        self._port = port
        self._capacity = capacity
        self.in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.endless_disconnected = threading.Event()
        self.stall_disconnected = threading.Event()
        self.bad_chunk_release = threading.Event()
        self.requests = 0
        self.flood_bytes = 0  # body bytes the flood model handed to its socket so far
        self.big_json_answers = 0  # big-json answers handed to their sockets so far
        self._connections: set[asyncio.Task[None]] = set()

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ending in /v1)."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests += 1
        if self._capacity is not None and self.in_flight >= self._capacity:
            await _json(writer, 503, {"error": {"message": "at capacity", "type": "x"}})
            return True
        self.in_flight += 1
        try:
            return await self._answer(method, path, headers, body, reader, writer)
        finally:
            self.in_flight -= 1

    async def _answer(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if method == "GET" and path == "/v1/models":
            models = [
                "echo",
                "stream",
                "slow",
                "slow-stream",
                "fail-midstream",
                "stall",
                "endless",
                "flood",
            ]
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "t"} for m in models]
            await _json(writer, 200, {"object": "list", "data": data})
            return True
        request: dict[str, Any] = json.loads(body) if body else {}
        model = request.get("model")
        if model == "echo":
            await _json(
                writer,
                200,
                {"received_headers": headers, "received_body": request, "usage": USAGE},
            )
            return True
        if model == "slow":
            await asyncio.sleep(SLOW_SECONDS)
            await _json(writer, 200, {"usage": USAGE})
            return True
        if model == "big-json":
            payload = big_json_body()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % len(payload)
            )
            writer.write(payload)
            self.big_json_answers += 1
            await writer.drain()
            return True
        if model == "bad-status":
            await _json(writer, 600, {"usage": USAGE})
            return True
        if model == "long-header":  # a value longer than the channel's 8192 characters
            writer.write(
                b"HTTP/1.1 200 OK\r\nx-long: %s\r\ncontent-length: 2\r\n\r\n{}" % (b"a" * 9000)
            )
            await writer.drain()
            return True
        if model == "endless-head":  # header lines until the bridge hangs up: a hostile upstream
            with contextlib.suppress(ConnectionError):
                writer.write(b"HTTP/1.1 200 OK\r\n")
                while True:
                    writer.write(b"x-more: %s\r\n" % (b"h" * 4000))
                    await writer.drain()
            return False
        if model == "large-head":  # each value fits, together past one record's 16 KiB
            values = b"".join(b"x-big-%d: %s\r\n" % (i, b"b" * 8000) for i in range(3))
            writer.write(b"HTTP/1.1 200 OK\r\n%scontent-length: 2\r\n\r\n{}" % values)
            await writer.drain()
            return True
        await _start_sse(writer)
        if model == "stream":
            for word in ("one", " two", " three"):
                await _chunk(writer, _event({"choices": [{"delta": {"content": word}}]}))
            options = request.get("stream_options") or {}
            if options.get("include_usage"):
                await _chunk(writer, _event({"choices": [], "usage": USAGE}))
            await _chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if model == "slow-stream":
            for i in range(10):
                await asyncio.sleep(0.1)
                await _chunk(writer, _event({"choices": [{"delta": {"content": f"{i} "}}]}))
            await _chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if model == "fail-midstream":
            await _chunk(writer, _event({"choices": [{"delta": {"content": "partial"}}]}))
            await asyncio.sleep(0.1)
            transport = writer.transport
            transport.abort()  # no terminating chunk: a truncated body
            return False
        if model == "bad-chunk":
            await _chunk(writer, _event({"choices": [{"delta": {"content": "partial"}}]}))
            await asyncio.to_thread(self.bad_chunk_release.wait, 30)
            writer.write(b"not a chunk\r\n\r\n")
            await writer.drain()
            await reader.read()  # until the bridge closes the connection
            return False
        if model == "stall":
            await _chunk(writer, _event({"choices": [{"delta": {"content": "wait"}}]}))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    if not await reader.read(1):  # EOF: the bridge closed the request
                        self.stall_disconnected.set()
            return False
        if model == "endless":
            try:
                while True:
                    await _chunk(writer, _event({"choices": [{"delta": {"content": "x"}}]}))
                    await asyncio.sleep(0.05)
            except (ConnectionError, RuntimeError):
                self.endless_disconnected.set()
                return False
        if model == "flood":
            event = _event({"choices": [{"delta": {"content": "x" * FLOOD_EVENT_CHARS}}]})
            try:
                while True:
                    await _chunk(writer, event)
                    self.flood_bytes += len(event)
            except (ConnectionError, RuntimeError):
                return False
        await _json(writer, 404, {"error": {"message": "unknown model", "type": "x"}})
        return True


def _event(document: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


async def _json(writer: asyncio.StreamWriter, status: int, document: dict[str, Any]) -> None:
    payload = json.dumps(document).encode()
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nx-upstream: fake\r\n\r\n".encode()
        + payload
    )
    await writer.drain()


async def _start_sse(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    await writer.drain()


async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    if writer.is_closing():
        raise ConnectionError("client went away")
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


if __name__ == "__main__":
    import signal
    import sys

    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before the server thread starts
    with FakeUpstream(int(sys.argv[1])) as served:
        print(served.base_url, flush=True)
        signal.sigwait(stop)
