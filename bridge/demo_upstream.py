"""A built-in, OpenAI-shaped demo model, so the bridge can run with ``--upstream demo``.

``DemoUpstream`` is a tiny HTTP/1.1 server on asyncio streams that answers:

- ``GET /v1/models`` and ``GET /v1/models/shroud-demo-echo``: one model, described as a demo;
- ``POST /v1/chat/completions``: a deterministic reply that quotes the last user message, plain
  or streamed token by token as server-sent events in OpenAI's ``chat.completion.chunk`` shape,
  ending with ``data: [DONE]``; ``usage`` in every answer (and, with
  ``stream_options.include_usage``, as a final chunk); ``max_tokens`` /
  ``max_completion_tokens`` truncate the reply (``finish_reason: "length"``);
- anything else: OpenAI-shaped error JSON (400, 404, 405, 411, 413, 431).

"Tokens" are whitespace-delimited words with their leading whitespace, counted the same way for
prompt and completion. It is not a language model, not a general HTTP server (no chunked request
bodies, no pipelining beyond sequential keep-alive), it ignores ``Authorization`` (the bridge in
front of it decides who gets in), and it never logs request content.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

_log = logging.getLogger(__name__)

DEMO_MODEL_ID: Final = "shroud-demo-echo"
DEMO_MODEL_DESCRIPTION: Final = (
    "Demo model built into shroud-bridge: it replies by quoting your last message. "
    "It is not a language model."
)
DEMO_OWNER: Final = "shroud-demo"
_REPLY_PREFIX: Final = 'Shroud demo model here. You said: "'
_REPLY_SUFFIX: Final = '"'
_EMPTY_REPLY: Final = "Shroud demo model here. You did not say anything."

_MAX_HEAD: Final = 16 * 1024
_DEFAULT_MAX_BODY: Final = 1024 * 1024
_IDLE_TIMEOUT: Final = 30.0
_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TOKEN_RE: Final = re.compile(r"\s*\S+")


def tokenize(text: str) -> list[str]:
    """The demo's tokens: each word with the whitespace before it (joining gives ``text``)."""
    tokens = _TOKEN_RE.findall(text)
    return tokens if "".join(tokens) == text else [*tokens, text[len("".join(tokens)) :]]


def demo_reply(messages: list[dict[str, Any]]) -> str:
    """The deterministic reply to validated ``messages``: the last user message, quoted."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = " ".join(_content_text(message.get("content")).split())
            if text:
                return _REPLY_PREFIX + text + _REPLY_SUFFIX
    return _EMPTY_REPLY


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class _RequestError(Exception):
    """An OpenAI-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class _ChatRequest:
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    max_tokens: int | None


def _validate_chat(body: bytes) -> _ChatRequest:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise _RequestError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(data, dict):
        raise _RequestError(400, "The request body must be a JSON object.")
    model = data.get("model")
    if not isinstance(model, str):
        raise _RequestError(400, "you must provide a model parameter", param="model")
    if model != DEMO_MODEL_ID:
        raise _RequestError(
            404,
            f"The model `{model}` does not exist; this demo upstream serves `{DEMO_MODEL_ID}`.",
            param="model",
            code="model_not_found",
        )
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _RequestError(400, "'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        _validate_message(i, message)
    stream = data.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _RequestError(400, "'stream' must be a boolean", param="stream")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _RequestError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise _RequestError(400, "'stream_options' is malformed", param="stream_options")
        include_usage = bool(options.get("include_usage", False))
    max_tokens = None
    for name in ("max_tokens", "max_completion_tokens"):
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _RequestError(400, f"'{name}' must be a positive integer", param=name)
        max_tokens = value if max_tokens is None else min(max_tokens, value)
    n = data.get("n")
    if n is not None and n != 1:
        raise _RequestError(400, "The demo model only supports n=1.", param="n")
    return _ChatRequest(messages, bool(stream), include_usage, max_tokens)


def _validate_message(index: int, message: object) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _RequestError(400, f"{where} must be an object", param=where)
    role = message.get("role")
    if role not in _ROLES:
        raise _RequestError(400, f"{where}.role must be one of {sorted(_ROLES)}", param=where)
    content = message.get("content")
    if content is None and role in {"assistant", "function"}:
        return
    if isinstance(content, str):
        return
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return
    raise _RequestError(
        400, f"{where}.content must be a string or an array of text parts", param=where
    )


class DemoUpstream:
    """The demo model's HTTP server. ``async with DemoUpstream() as demo: demo.base_url``."""

    def __init__(
        self,
        *,
        token_delay: float = 0.0,
        max_body: int = _DEFAULT_MAX_BODY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token_delay = token_delay
        self._max_body = max_body
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (port 0 picks a free one)."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=_MAX_HEAD)

    @property
    def port(self) -> int:
        """The port actually bound."""
        if self._server is None:
            raise RuntimeError("DemoUpstream is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to point a client (or the bridge) at."""
        if self._server is None:
            raise RuntimeError("DemoUpstream is not started")
        host = self._server.sockets[0].getsockname()[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    async def close(self) -> None:
        """Stop listening and end open connections."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DemoUpstream:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- HTTP/1.1 ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            keep_alive = True
            while keep_alive:
                keep_alive = await self._one_request(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or idled out: nothing to answer
        except asyncio.CancelledError:
            # Only close() cancels a connection. Ending normally instead of as cancelled keeps
            # asyncio's start_server callback (Python 3.11) from logging a traceback for it.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            async with asyncio.timeout(_IDLE_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                await self._send_error(writer, _RequestError(400, "incomplete request head"))
            return False
        except asyncio.LimitOverrunError:
            await self._send_error(writer, _RequestError(431, "request head too large"))
            return False
        try:
            method, path, headers, keep_alive = _parse_head(head)
            body = await self._read_body(reader, headers)
            await self._route(writer, method, path, body, keep_alive)
        except _RequestError as error:
            await self._send_error(writer, error)
            return False
        return keep_alive

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "transfer-encoding" in headers:
            raise _RequestError(
                411, "chunked request bodies are not supported; send Content-Length"
            )
        raw = headers.get("content-length", "0")
        if not raw.isdigit():
            raise _RequestError(400, "invalid Content-Length")
        length = int(raw)
        if length > self._max_body:
            raise _RequestError(413, f"request body over {self._max_body} bytes")
        return await reader.readexactly(length) if length else b""

    async def _route(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        body: bytes,
        keep_alive: bool,
    ) -> None:
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise _RequestError(405, f"{method} is not allowed on {path}")
            await self._send_json(writer, 200, self._models(path), keep_alive)
        elif path == "/v1/chat/completions":
            if method != "POST":
                raise _RequestError(405, f"{method} is not allowed on {path}")
            request = _validate_chat(body)
            await self._chat(writer, request, body, keep_alive)
        else:
            raise _RequestError(404, f"Unknown path {path[:100]!r} on the demo upstream")

    def _model_object(self) -> dict[str, Any]:
        return {
            "id": DEMO_MODEL_ID,
            "object": "model",
            "created": 0,
            "owned_by": DEMO_OWNER,
            "description": DEMO_MODEL_DESCRIPTION,
        }

    def _models(self, path: str) -> dict[str, Any]:
        if path == "/v1/models":
            return {"object": "list", "data": [self._model_object()]}
        if path == f"/v1/models/{DEMO_MODEL_ID}":
            return self._model_object()
        raise _RequestError(404, "The model does not exist.", code="model_not_found")

    async def _chat(
        self, writer: asyncio.StreamWriter, request: _ChatRequest, body: bytes, keep_alive: bool
    ) -> None:
        tokens = tokenize(demo_reply(request.messages))
        finish = "stop"
        if request.max_tokens is not None and len(tokens) > request.max_tokens:
            tokens, finish = tokens[: request.max_tokens], "length"
        prompt_tokens = sum(
            len(tokenize(_content_text(m.get("content")))) for m in request.messages
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        # Deterministic per request body, so tests and demos can compare runs.
        completion_id = "chatcmpl-demo-" + hashlib.sha256(body).hexdigest()[:24]
        created = int(self._clock())
        if not request.stream:
            await self._send_json(
                writer,
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": DEMO_MODEL_ID,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(tokens),
                                "refusal": None,
                            },
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                },
                keep_alive,
            )
            return
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": DEMO_MODEL_ID,
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            item: dict[str, Any] = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if request.include_usage:
                item["usage"] = None
            return item

        await self._start_stream(writer, keep_alive)
        await self._send_event(writer, chunk({"role": "assistant", "content": ""}, None))
        for token in tokens:
            if self._token_delay:
                await asyncio.sleep(self._token_delay)
            await self._send_event(writer, chunk({"content": token}, None))
        await self._send_event(writer, chunk({}, finish))
        if request.include_usage:
            await self._send_event(writer, {**base, "choices": [], "usage": usage})
        await self._send_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    # -- writing -------------------------------------------------------------------------------

    async def _send_json(
        self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any], keep_alive: bool
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        writer.write(
            _status_line(status)
            + b"content-type: application/json\r\n"
            + b"content-length: %d\r\n" % len(payload)
            + (b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n")
            + b"\r\n"
            + payload
        )
        await writer.drain()

    async def _send_error(self, writer: asyncio.StreamWriter, error: _RequestError) -> None:
        await self._send_json(writer, error.status, error.body, keep_alive=False)

    async def _start_stream(self, writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        writer.write(
            _status_line(200)
            + b"content-type: text/event-stream; charset=utf-8\r\n"
            + b"cache-control: no-cache\r\n"
            + b"transfer-encoding: chunked\r\n"
            + (b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n")
            + b"\r\n"
        )
        await writer.drain()

    async def _send_event(self, writer: asyncio.StreamWriter, event: dict[str, Any]) -> None:
        await self._send_chunk(writer, b"data: " + json.dumps(event).encode() + b"\n\n")

    async def _send_chunk(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("ascii")


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str], bool]:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text[:-4].split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise _RequestError(400, "malformed request line") from None
    if version not in {"HTTP/1.1", "HTTP/1.0"} or not method.isalpha():
        raise _RequestError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _RequestError(400, "malformed header line")
        key = name.lower()
        if key in headers and key in {"content-length", "transfer-encoding"}:
            raise _RequestError(400, f"duplicate {name} header")
        headers[key] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return method, target.partition("?")[0], headers, keep_alive
