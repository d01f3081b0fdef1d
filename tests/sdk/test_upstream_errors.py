"""An upstream's error reaches the caller as plain ``openai`` would show it: same class, same
status, same message (body included) and the same parsed ``body``, for every openai release
`make test` runs. The upstream answers every request with one error; the bridge is real."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import shroud_sdk
from tests.bridgeproc import running_bridge

ERROR = {"error": {"message": "model crashed: CUDA out of memory", "type": "server_error"}}


class ErrorUpstream:
    """Answers every request with 500 and ``ERROR`` (``chunked`` or with Content-Length)."""

    def __init__(self, *, chunked: bool) -> None:
        self._chunked = chunked
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        payload = json.dumps(ERROR).encode()
        if self._chunked:
            framing = b"transfer-encoding: chunked\r\n\r\n"
            payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
        else:
            framing = b"content-length: %d\r\n\r\n" % len(payload)
        conn.sendall(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
            b"connection: close\r\n" + framing + payload
        )

    def close(self) -> None:
        self._sock.close()


@pytest.fixture(params=[False, True], ids=["content-length", "chunked"])
def upstream(request: pytest.FixtureRequest) -> Iterator[ErrorUpstream]:
    server = ErrorUpstream(chunked=request.param)
    yield server
    server.close()


def _plain_error(upstream: ErrorUpstream, *, stream: bool) -> openai.APIStatusError:
    with (
        openai.OpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as info,
    ):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=stream
        )
    return info.value


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_upstream_error_body_is_in_the_message_as_plain_openai_shows_it(
    tmp_path: Path, upstream: ErrorUpstream, stream: bool
) -> None:
    expected = _plain_error(upstream, stream=stream)
    with (
        running_bridge(tmp_path, upstream=upstream.base_url) as bridge,
        shroud_sdk.OpenAI(
            bridge_url=bridge.url, api_key="k", policy=bridge.policy_path, max_retries=0
        ) as client,
        pytest.raises(openai.APIStatusError) as info,
    ):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=stream
        )
    error = info.value
    assert type(error) is type(expected) is openai.InternalServerError
    assert error.status_code == 500
    assert str(error) == str(expected)
    assert "model crashed: CUDA out of memory" in str(error)
    assert error.body == expected.body
