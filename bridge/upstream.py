"""The bridge's HTTP client to its OpenAI-compatible upstream (vLLM, the demo model, ...).

One ``httpx2.AsyncClient`` per bridge process, no redirects, separate connect and read
timeouts. A request is sent with its (already size-checked, already decrypted) body; the
response is streamed back chunk by chunk, exactly as the upstream sent it (SSE included), and
closing the response context (because the client reset the stream or went away) closes the
upstream connection, which is how vLLM learns to stop generating.

Headers: hop-by-hop headers and the client's ``Authorization`` are never forwarded (the client's
key is for the bridge; the upstream's key, if any, is the bridge's own configuration), and
``Accept-Encoding: identity`` is forced, because compressing secrets before encrypting them would
leak their content through record lengths (the CRIME/BREACH family).

Path mapping: the tunnelled path is the OpenAI path (``/v1/chat/completions``) and the upstream
is configured as the OpenAI base URL (``http://vllm:8000/v1``), so a base URL ending in ``/v1``
has that suffix dropped before the path is appended: ``http://vllm:8000/v1/chat/completions``.

Deliberately not here: deciding which paths are allowed, authentication and metadata checks
(``bridge.session``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Final

import httpx2

# RFC 9110 section 7.6.1 (Connection) and the headers it traditionally names, plus framing
# headers that the bridge recomputes on each side of the tunnel.
HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Request headers the client may not pass to the upstream, beyond the hop-by-hop ones.
_DROPPED_REQUEST_HEADERS: Final = frozenset({"authorization", "accept-encoding", "cookie"})
_OPENAI_PREFIX: Final = "/v1"
# Response headers only the bridge itself may set (e.g. x-shroud-overload on its refusals).
BRIDGE_HEADER_PREFIX: Final = "x-shroud-"


class UpstreamError(Exception):
    """The upstream request failed; ``after_headers`` tells whether a response had started."""

    def __init__(self, message: str, *, after_headers: bool) -> None:
        super().__init__(message)
        self.after_headers = after_headers


class UpstreamConnectError(UpstreamError):
    """Could not connect, or the upstream broke HTTP (answer: 502)."""


class UpstreamTimeoutError(UpstreamError):
    """Connect or read timeout (answer: 504 before headers)."""


@dataclass(frozen=True)
class UpstreamRequest:
    """What the bridge forwards: method, OpenAI path (with query), client headers, body."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


class UpstreamResponse:
    """A streaming upstream response: ``status``, filtered ``headers`` and ``chunks()``."""

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response
        self.status: int = response.status_code
        self.headers: tuple[tuple[str, str], ...] = tuple(
            forward_response_headers(response.headers.multi_items())
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body bytes as received; ``UpstreamError(after_headers=True)`` on failure."""
        try:
            async for chunk in self._response.aiter_raw():
                if chunk:
                    yield chunk
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeoutError(_describe(exc), after_headers=True) from exc
        except httpx2.HTTPError as exc:
            raise UpstreamConnectError(_describe(exc), after_headers=True) from exc


def upstream_url(base_url: str, path: str) -> str:
    """Where ``path`` (an OpenAI path such as ``/v1/models``) goes on ``base_url``."""
    base = base_url.rstrip("/")
    if base.endswith(_OPENAI_PREFIX) and (
        path == _OPENAI_PREFIX or path.startswith((_OPENAI_PREFIX + "/", _OPENAI_PREFIX + "?"))
    ):
        base = base[: -len(_OPENAI_PREFIX)]
    return base + path


def forward_request_headers(
    headers: Iterable[tuple[str, str]], upstream_api_key: str | None
) -> list[tuple[str, str]]:
    """Client headers minus hop-by-hop, Authorization, Cookie; plus identity encoding and the
    bridge's own upstream key when configured."""
    out = [
        (name, value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP_HEADERS | _DROPPED_REQUEST_HEADERS
    ]
    out.append(("accept-encoding", "identity"))
    if upstream_api_key is not None:
        out.append(("authorization", f"Bearer {upstream_api_key}"))
    return out


def forward_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream response headers minus hop-by-hop ones and the bridge's own ``x-shroud-*``
    (an upstream must not pass its answer off as a bridge refusal), names lower-cased."""
    return [
        (name.lower(), value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP_HEADERS
        and not name.lower().startswith(BRIDGE_HEADER_PREFIX)
        and "\r" not in value
        and "\n" not in value
    ]


def _describe(exc: BaseException) -> str:
    """The exception's type, and the OS error behind it if any: never its message, which may
    quote the request URL (path, query) or bytes of the upstream's answer."""
    cause: BaseException | None = exc
    for _ in range(8):  # a chain of causes is short; never follow a cycle forever
        if cause is None or isinstance(cause, OSError):
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return f"{type(exc).__name__} ({cause.strerror})"
    return type(exc).__name__


class Upstream:
    """The pooled HTTP client to one upstream base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
            ),
            follow_redirects=False,
            trust_env=False,  # never route confidential traffic through an env-configured proxy
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Upstream(base_url={self.base_url!r})"

    @contextlib.asynccontextmanager
    async def send(self, request: UpstreamRequest) -> AsyncIterator[UpstreamResponse]:
        """Send ``request``; yield the response once its headers arrived.

        Raises ``UpstreamConnectError`` / ``UpstreamTimeoutError`` (``after_headers=False``)
        when no response started. Leaving the context closes the upstream response, also
        when the body was not read to the end (that is the cancellation path).
        """
        http_request = self._client.build_request(
            request.method,
            upstream_url(self.base_url, request.path),
            headers=forward_request_headers(request.headers, self._api_key),
            content=request.body if request.body or request.method != "GET" else None,
        )
        try:
            response = await self._client.send(http_request, stream=True)
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeoutError(_describe(exc), after_headers=False) from exc
        except httpx2.HTTPError as exc:
            raise UpstreamConnectError(_describe(exc), after_headers=False) from exc
        try:
            yield UpstreamResponse(response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close every pooled upstream connection."""
        await self._client.aclose()
