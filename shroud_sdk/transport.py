"""httpx transports that carry each HTTP request over an attested shroud/1 session.

The seam between HTTP clients and the channel (STYLE.md, "httpx: transports as the seam"):
``handle_request`` turns an ``httpx`` request into a shroud/1 stream (HEADERS, DATA, END) and
the bridge's response back into an ``httpx`` response whose body streams record by record, so
``openai``'s SSE parser, LangChain and any other httpx-based client work unchanged.

Four classes, because clients differ in which httpx they pass: ``ShroudTransport`` and
``AsyncShroudTransport`` for ``httpx2`` (what ``openai`` 3.x builds on), and
``LegacyShroudTransport`` and ``AsyncLegacyShroudTransport`` for the legacy ``httpx`` package.

Rules enforced here: a request to any origin other than the attested bridge is refused
(``RefusedDestinationError``), a body whose disclosed fields cannot be read unambiguously is
refused (``InvalidRequestBodyError``), and no redirect is ever followed (a 3xx is returned as
is). A bridge that refuses the *connection* for lack of capacity gets the request answered
with the equivalent HTTP 429/503 and its ``Retry-After`` (``shroud_sdk.overload``), so
``openai`` retries it as it would an overloaded server.
Attestation failures raise ``AttestationError``, integrity failures ``StreamIntegrityError``, a
response the bridge abandoned (RESET) ``StreamResetError``, a refused disclosure set
``DisclosureRefusedError``, a refused fresh quote ``FreshQuoteRateLimitedError`` and a
connection lost while the request was being sent (it may have reached the bridge)
``RequestInterruptedError``; all subclass ``openai.APIConnectionError`` (so generic handlers
catch them, and ``openai`` never retries them). Reachability problems before anything was sent
(a redirect answer to the WebSocket upgrade included) and timeouts raise the httpx exceptions
clients already handle, which ``openai`` retries. Verified usage of the latest response is
``transport.last_usage`` and, once the body was read to its end,
``response.extensions["shroud.usage"]``.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Final, Generic, TypeVar, cast
from urllib.parse import urlsplit

import httpx
import httpx2
import openai

from attestation.policy import Policy
from shroud_sdk.channel.constants import DISCLOSABLE_FIELDS
from shroud_sdk.channel.evidence import EvidenceVerifier
from shroud_sdk.channel.usage import Usage
from shroud_sdk.errors import (
    ChannelError,
    ConnectionFailedError,
    HandshakeError,
    LocalProtocolError,
    ShroudError,
)
from shroud_sdk.json_body import JsonBodyError, parse_json_body
from shroud_sdk.overload import OVERLOAD_EXTENSION, refusal_response_parts
from shroud_sdk.session import (
    AsyncSession,
    AsyncStream,
    BodyPart,
    OutgoingRequest,
    ResponseHead,
    SessionConfig,
    SessionConnectError,
    SessionDisclosureRefusedError,
    SessionFreshQuoteRefusedError,
    SessionOverloadedError,
    SessionSendInterruptedError,
    SessionTimeoutError,
    StreamAbortedError,
    SyncSession,
)
from shroud_sdk.verifier import AttestationReport, AttestationVerifier

# Hop-by-hop and transport-level headers (RFC 9110 §7.6.1) and ones the channel replaces:
# the bridge talks to its upstream itself; compression is not negotiated end to end.
_DROPPED_REQUEST_HEADERS: Final = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "accept-encoding",
        "content-length",
    }
)
_DROPPED_RESPONSE_HEADERS: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length"}
)
USAGE_EXTENSION: Final = "shroud.usage"
ATTESTATION_EXTENSION: Final = "shroud.attestation"


class AttestationError(openai.APIConnectionError):
    """The bridge could not prove it is what the policy requires; no request byte was sent.

    ``report`` is the ``AttestationReport`` when verification produced one; ``check`` names
    the failed step (e.g. ``verification``, ``policy``, ``report-data``, ``simulated-tee``).
    """

    def __init__(
        self,
        *,
        check: str,
        reason: str,
        report: AttestationReport | None,
        request: httpx2.Request,
    ) -> None:
        # A refused hello is not a verification result: its reason already says what happened.
        message = (
            reason
            if check == "bridge-refused"
            else f"bridge attestation failed ({check}): {reason}"
        )
        super().__init__(message=message, request=request)
        self.check = check
        self.reason = reason
        self.report = report


class StreamIntegrityError(openai.APIConnectionError):
    """A record failed authentication, or the response was truncated, reordered or cut.

    Whatever was received of the response must be treated as incomplete and untrusted.
    """

    def __init__(self, *, check: str, reason: str, request: httpx2.Request) -> None:
        super().__init__(message=f"channel integrity failure ({check}): {reason}", request=request)
        self.check = check
        self.reason = reason


class StreamResetError(openai.APIConnectionError):
    """The bridge ended the response early with an authenticated RESET (or CLOSE).

    Not tampering (that is ``StreamIntegrityError``): the bridge itself gave up on this
    response, e.g. because its upstream failed after the response headers were sent. Whatever
    was received is incomplete; the answer is never delivered as if it had ended. It is the
    class ``openai`` raises for a dropped stream (``APIConnectionError``), so existing handlers
    catch it; ``openai`` does not retry it, since the request did reach the model. ``reset_code``
    is the RESET code (docs/protocol.md, "Errors and closing"), ``reason`` the bridge's text.
    """

    def __init__(self, *, code: int, reason: str, request: httpx2.Request) -> None:
        shown = "".join(c for c in reason[:200] if c.isprintable())
        super().__init__(
            message=f"the bridge reset the stream (code {code}): {shown}; the response is "
            "incomplete",
            request=request,
        )
        self.reset_code = code  # ``code`` is openai's (an error-type string)
        self.reason = reason


class RequestInterruptedError(openai.APIConnectionError):
    """The connection to the bridge was lost while the request was being sent.

    Part of the request may have reached the bridge, and so the model: unlike a connection
    that failed before anything was sent (an ``httpx`` ``ConnectError``, which ``openai``
    retries), sending it again could run it twice. ``openai`` does not retry this class (the
    SDK's clients see to that on ``openai`` releases before 2.31 too); retry it yourself if
    repeating the request is harmless.
    """

    def __init__(self, *, request: httpx2.Request) -> None:
        super().__init__(
            message="the connection to the bridge was lost while the request was being sent; "
            "it may have reached the bridge, so it was not retried",
            request=request,
        )


class DisclosureRefusedError(openai.APIConnectionError):
    """The bridge refused the fields this client discloses in clear; no request byte was sent.

    ``required``/``allowed`` are what the bridge said it requires/allows (None when it did not
    say); ``disclosed`` is what this client offered. The message tells the user how to opt in.
    The SDK never widens the disclosure by itself: the refusal arrives before any key is
    agreed, so it is unauthenticated, and obeying it would let a middlebox make the client
    reveal more. ``openai`` does not retry it (the same hello would be refused again).
    """

    def __init__(
        self,
        *,
        disclosed: frozenset[str],
        required: frozenset[str] | None,
        allowed: frozenset[str] | None,
        request: httpx2.Request,
    ) -> None:
        super().__init__(message=_disclosure_advice(disclosed, required, allowed), request=request)
        self.disclosed = disclosed
        self.required = required
        self.allowed = allowed


def _disclosure_advice(
    disclosed: frozenset[str], required: frozenset[str] | None, allowed: frozenset[str] | None
) -> str:
    said: list[str] = []
    if required:
        said.append(f"it requires {', '.join(sorted(required))} in clear")
    if allowed is not None:
        # The bridge may cut this list to fit a close frame: never read it as complete.
        said.append(f"it allows {', '.join(sorted(allowed)) or 'nothing'}")
    details = "; ".join(said) or "it did not say which fields it wants"
    wanted = disclosed | (required or frozenset())
    if allowed is not None:
        wanted &= allowed | (required or frozenset())  # only ever suggest less, if it was cut
    return (
        f"the bridge refused this client's disclosure set ({details}). Nothing was sent. "
        "The SDK never discloses more on its own: if you accept showing these fields to the "
        f"operator, pass OpenAI(..., disclose={sorted(wanted)!r})"
    )


class FreshQuoteRateLimitedError(openai.APIConnectionError):
    """The bridge refused this client a fresh quote (its per-source rate limit for policies
    with ``fresh_quote = true``); no request byte was sent.

    ``retry_after`` is the bridge's advice in seconds (None when it gave none); it is
    unauthenticated. Bridges serve attested-key evidence without this limit.
    """

    def __init__(self, *, retry_after: int | None, request: httpx2.Request) -> None:
        after = f"; retry after {retry_after} s" if retry_after is not None else ""
        super().__init__(
            message=f"the bridge refused a fresh quote (per-source rate limit){after}",
            request=request,
        )
        self.retry_after = retry_after


class InvalidRequestBodyError(ShroudError, ValueError):
    """The request body is JSON whose disclosed fields cannot be read unambiguously: a key
    repeated in one object (parsers disagree on which one counts) or nesting too deep to
    parse. Nothing was sent. ``code`` is ``duplicate_key`` or ``too_deep``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"refusing to send the request: {reason}")
        self.code = code


class RefusedDestinationError(ShroudError):
    """The request was addressed to a host other than the attested bridge; nothing was sent."""


# RFC 6761 §6.4: names under ".invalid" never resolve. The trailing dot makes the name fully
# qualified, so no resolver appends a search domain (where a wildcard record could answer).
UNROUTABLE_SUFFIX: Final = ".shroud.invalid."
_LABEL_CHARS: Final = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class _Origin:
    """The name HTTP clients use for the bridge: one that cannot be reached without us.

    ``base_url`` is handed to ``openai`` and to frameworks. Should any client end up without
    this transport (a framework building its own default client from the URL, a plain
    ``openai.OpenAI(base_url=...)``), its request fails at DNS and not one byte, prompt or
    API key, leaves the process. Only this transport knows the name stands for ``bridge``.
    """

    host: str  # e.g. "inference-example-com-443.shroud.invalid."
    bridge: str  # the bridge URL, for messages

    @classmethod
    def of_bridge(cls, bridge_url: str) -> _Origin:
        parts = urlsplit(bridge_url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        label = _LABEL_CHARS.sub("-", (parts.hostname or "").lower()).strip("-")[:48]
        return cls(f"{label}-{port}{UNROUTABLE_SUFFIX}", bridge_url)

    def base_url(self, path: str = "/v1") -> str:
        """The HTTP base URL an ``openai`` client should use for this bridge."""
        return f"https://{self.host}{path}"

    def addresses(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether a request for ``scheme://host:port`` is meant for this bridge."""
        return (
            scheme == "https"
            and host.lower().rstrip(".") == self.host.rstrip(".")  # with or without the dot
            and port in (None, 443)
        )


def _outgoing(
    origin: _Origin,
    method: str,
    scheme: str,
    host: str,
    port: int | None,
    raw_path: bytes,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    disclose: Iterable[str],
) -> OutgoingRequest:
    """The request as the channel carries it, if it is addressed to the attested bridge."""
    if not origin.addresses(scheme, host, port):
        shown = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
        raise RefusedDestinationError(
            f"refusing to send a request to {shown[:200]}: this transport carries requests "
            f"only to the attested bridge {origin.bridge}, addressed as {origin.base_url()} "
            "(transport.base_url, a name that never resolves, so that a client without this "
            "transport cannot reach the bridge in clear). Pass base_url=transport.base_url"
        )
    kept = tuple(
        (name.lower(), value)
        for name, value in headers
        if name.lower() not in _DROPPED_REQUEST_HEADERS
    )
    return OutgoingRequest(
        method.upper(), raw_path.decode("ascii"), kept, body, _disclosed_values(body, disclose)
    )


def _disclosed_values(body: bytes, disclose: Iterable[str]) -> dict[str, object]:
    """The negotiated fields' values from a JSON body (None when absent or not JSON)."""
    names = tuple(disclose)
    if not names or not body:
        return dict.fromkeys(names)
    try:
        document = parse_json_body(body)
    except JsonBodyError as exc:
        raise InvalidRequestBodyError(exc.code, exc.reason) from None
    if not isinstance(document, dict):
        return dict.fromkeys(names)
    values: dict[str, object] = {}
    for name in names:
        value = document.get(name)
        kind = DISCLOSABLE_FIELDS.get(name)
        # A value of the wrong JSON type is sent as-is: the channel refuses it with a typed
        # error rather than the SDK quietly disclosing nothing.
        values[name] = value if kind is not None else None
    return values


def _ends_event_stream(chunk: bytes) -> bool:
    """Whether ``chunk`` ends with OpenAI's SSE terminator ``data: [DONE]``.

    SSE clients stop reading at that event and close the response, so the record after it,
    the authenticated END (and its signed usage), would go unread: a truncation just before
    END would pass unnoticed. The transport therefore holds such a chunk back until END.
    """
    return chunk.rstrip(b"\r\n").endswith(b"data: [DONE]")


def _timeouts(extensions: Mapping[str, Any]) -> tuple[float | None, float | None]:
    timeout = extensions.get("timeout") or {}
    return timeout.get("connect"), timeout.get("read")


def _response_headers(head: ResponseHead) -> list[tuple[str, str]]:
    return [(n, v) for n, v in head.headers if n not in _DROPPED_RESPONSE_HEADERS]


def _map_error(exc: BaseException, request: object, flavour: ModuleType) -> BaseException:
    """The exception a caller of this transport should see for a session failure."""
    req = cast(httpx2.Request, request)
    if isinstance(exc, ConnectionFailedError):
        exc = exc.original
    if isinstance(exc, HandshakeError):
        report = getattr(exc, "report", None)
        if not isinstance(report, AttestationReport):
            report = None  # a custom verifier's report type is not ours to promise
        return AttestationError(check=exc.check, reason=exc.reason, report=report, request=req)
    if isinstance(exc, SessionDisclosureRefusedError):
        return DisclosureRefusedError(
            disclosed=exc.disclosed, required=exc.required, allowed=exc.allowed, request=req
        )
    if isinstance(exc, SessionFreshQuoteRefusedError):
        return FreshQuoteRateLimitedError(retry_after=exc.retry_after, request=req)
    if isinstance(exc, LocalProtocolError):
        return exc  # the caller asked for something the protocol forbids: a bug to fix
    if isinstance(exc, ChannelError):
        return StreamIntegrityError(check=exc.check, reason=exc.reason, request=req)
    if isinstance(exc, SessionTimeoutError):
        kind = flavour.ConnectTimeout if exc.phase == "connect" else flavour.ReadTimeout
        return cast(BaseException, kind(str(exc), request=request))
    if isinstance(exc, StreamAbortedError):
        return StreamResetError(code=exc.code, reason=exc.reason, request=req)
    if isinstance(exc, SessionSendInterruptedError):
        return RequestInterruptedError(request=req)
    if isinstance(exc, SessionConnectError):
        return cast(BaseException, flavour.ConnectError(str(exc), request=request))
    return exc


def _choice(given: bool | None, policy: Policy | None, key: str) -> bool:
    """An explicit argument wins; else the ``AttestationVerifier``'s policy ``key``; else False."""
    if given is not None:
        return given
    return policy is not None and bool(getattr(policy, key))


class _ResponseBody:
    """A response body as the transport delivers it, record by record (all four transports).

    Holds back a chunk that ends the SSE stream until the authenticated END (see
    ``_ends_event_stream``), and on END records the bridge-signed usage in the transport and
    in the response's own extensions (httpx copies the mapping it was given).
    """

    def __init__(
        self,
        transport: _BaseTransport[Any],
        request: Any,
        stream: AsyncStream,
        read_timeout: float | None,
    ) -> None:
        self.stream = stream
        self._transport = transport
        self._request = request
        self._read_timeout = read_timeout
        self._held: bytes | None = None
        self._ended = False
        self.response: Any = None  # set once the httpx response exists

    async def next_chunks(self) -> list[bytes] | None:
        """The chunks to deliver after the next read; None once the body has ended."""
        if self._ended:
            return None
        try:
            part = await self.stream.receive_body(self._read_timeout)
        except (ShroudError, OSError) as exc:
            raise self.map_error(exc) from exc
        return self._deliver(part)

    def next_chunks_blocking(self, session: SyncSession) -> list[bytes] | None:
        """:meth:`next_chunks` on the sync caller's own thread (``SyncSession.receive_body``)."""
        if self._ended:
            return None
        try:
            part = session.receive_body(self.stream, self._read_timeout)
        except (ShroudError, OSError) as exc:
            raise self.map_error(exc) from exc
        return self._deliver(part)

    def _deliver(self, part: BodyPart) -> list[bytes]:
        out = [self._held] if self._held is not None else []
        self._held = None
        out.extend(part.chunks)
        if part.ended:
            self._ended = True
            usage = self.stream.usage
            if usage is not None:
                self._transport._last_usage = usage.usage
                self.response.extensions[USAGE_EXTENSION] = usage.usage
        elif out and _ends_event_stream(out[-1]):
            self._held = out.pop()  # delivered only once the authenticated END has arrived
        return out

    def map_error(self, exc: BaseException) -> BaseException:
        """The exception the body's reader sees for ``exc``."""
        return self._transport.map_error(exc, self._request)


class _SyncBody(httpx2.SyncByteStream, httpx.SyncByteStream):
    def __init__(self, body: _ResponseBody, session: SyncSession) -> None:
        self._body = body
        self._session = session

    def __iter__(self) -> Iterator[bytes]:
        # Read on this (the caller's) thread: it runs the session's loop while it waits, so
        # no other thread hands the records over (``SyncSession.receive_body``).
        while (chunks := self._body.next_chunks_blocking(self._session)) is not None:
            yield from chunks

    def close(self) -> None:
        # Abandon a stream not read to its END (RESET): the bridge frees its slot. A closed
        # session has nothing left to abandon.
        if not self._body.stream.finished:
            with contextlib.suppress(ShroudError):
                self._session.run(self._body.stream.aclose(), timeout=5)


class _AsyncBody(httpx2.AsyncByteStream, httpx.AsyncByteStream):
    def __init__(self, body: _ResponseBody) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunks := await self._body.next_chunks()) is not None:
            for chunk in chunks:
                yield chunk

    async def aclose(self) -> None:
        await self._body.stream.aclose()  # a RESET unless the body was read to its END


_S = TypeVar("_S", SyncSession, AsyncSession)


class _BaseTransport(Generic[_S]):
    """What the four transports share (arguments as ``ShroudTransport``).

    They differ only in the httpx flavour (``_flavour``) and in how they wait: the sync ones
    run the same coroutines on their session's private loop thread.
    """

    _flavour: ClassVar[ModuleType]

    def __init__(
        self,
        bridge_url: str,
        verifier: EvidenceVerifier,
        *,
        allow_simulated: bool | None = None,
        disclose: Iterable[str] = (),
        audience: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        require_post_quantum: bool | None = None,
    ) -> None:
        policy = verifier.policy if isinstance(verifier, AttestationVerifier) else None
        config = SessionConfig(
            url=bridge_url,
            verifier=verifier,
            audience=audience or "",
            allow_simulated=_choice(allow_simulated, policy, "allow_simulated_tee"),
            disclose=frozenset(disclose),
            ssl_context=ssl_context,
            require_post_quantum=_choice(require_post_quantum, policy, "require_post_quantum"),
        )
        self._session: _S = self._new_session(config)
        self._origin = _Origin.of_bridge(config.url)
        self._last_usage: Usage | None = None

    def _new_session(self, config: SessionConfig) -> _S:
        raise NotImplementedError  # pragma: no cover - the sync and async bases define it

    @property
    def session(self) -> _S:
        """The attested session requests travel on."""
        return self._session

    @property
    def attestation(self) -> object | None:
        """The latest ``AttestationReport`` (None before the first handshake)."""
        return self._session.attestation

    @property
    def last_usage(self) -> Usage | None:
        """Bridge-signed, verified token usage of the latest fully read response."""
        return self._last_usage

    @property
    def base_url(self) -> str:
        """The HTTP base URL (``https://<name>.shroud.invalid./v1``) this transport carries.

        The name stands for the bridge but never resolves: give it to ``openai`` or a
        framework together with this transport, and anything that bypasses the transport
        fails at DNS without sending a byte.
        """
        return self._origin.base_url()

    def map_error(self, exc: BaseException, request: Any) -> BaseException:
        """The exception a caller of this transport sees for a session failure."""
        return _map_error(exc, request, self._flavour)

    def _outgoing_request(self, request: Any, body: bytes) -> OutgoingRequest:
        url = request.url
        return _outgoing(
            self._origin,
            request.method,
            url.scheme,
            url.host,
            url.port,
            url.raw_path,
            request.headers.items(),
            body,
            self._session.config.disclose,
        )

    async def _start(
        self, session: AsyncSession, request: Any, outgoing: OutgoingRequest
    ) -> tuple[ResponseHead, _ResponseBody]:
        """Send ``outgoing`` and wait for the response head (runs on the session's loop)."""
        connect_timeout, read_timeout = _timeouts(request.extensions)
        try:
            stream = await session.open_stream(outgoing, connect_timeout=connect_timeout)
        except SessionOverloadedError:
            raise  # answered as an HTTP 429/503 by ``_handle`` (shroud_sdk.overload)
        except (ShroudError, OSError) as exc:
            raise self.map_error(exc, request) from exc
        try:
            head = await stream.receive_head(read_timeout)
        except (ShroudError, OSError) as exc:
            await stream.aclose()  # abandon it (RESET): the bridge frees its slot
            raise self.map_error(exc, request) from exc
        return head, _ResponseBody(self, request, stream, read_timeout)

    def _refusal_response(self, request: Any, refused: SessionOverloadedError) -> Any:
        """The HTTP answer to a request whose connection the bridge refused (overload)."""
        status, headers, content = refusal_response_parts(refused.overload)
        return self._flavour.Response(
            status,
            headers=headers,
            content=content,
            request=request,
            extensions={OVERLOAD_EXTENSION: refused.overload},
        )

    def _response(
        self, request: Any, head: ResponseHead, body: _ResponseBody, stream: object
    ) -> Any:
        body.response = self._flavour.Response(
            head.status,
            headers=_response_headers(head),
            stream=stream,
            request=request,
            extensions={ATTESTATION_EXTENSION: body.stream.report},
        )
        return body.response


class _SyncTransport(_BaseTransport[SyncSession]):
    def _new_session(self, config: SessionConfig) -> SyncSession:
        return SyncSession(config)

    def _handle(self, request: Any) -> Any:
        outgoing = self._outgoing_request(request, request.read())
        start = self._start(self._session.async_session, request, outgoing)
        try:
            head, body = self._session.run(start)
        except SessionOverloadedError as refused:
            return self._refusal_response(request, refused)
        except ShroudError as exc:  # the session itself was closed
            raise self.map_error(exc, request) from exc
        return self._response(request, head, body, _SyncBody(body, self._session))

    def close(self) -> None:
        """Close the attested connection and the session's thread."""
        self._session.close()


class _AsyncTransport(_BaseTransport[AsyncSession]):
    def _new_session(self, config: SessionConfig) -> AsyncSession:
        return AsyncSession(config)

    async def _handle(self, request: Any) -> Any:
        outgoing = self._outgoing_request(request, await request.aread())
        try:
            head, body = await self._start(self._session, request, outgoing)
        except SessionOverloadedError as refused:
            return self._refusal_response(request, refused)
        return self._response(request, head, body, _AsyncBody(body))

    async def aclose(self) -> None:
        """Send the authenticated CLOSE and close the WebSocket."""
        await self._session.aclose()


class ShroudTransport(_SyncTransport, httpx2.BaseTransport):
    """An ``httpx2`` transport to one attested bridge (for ``openai`` 3.x and httpx2 users).

    ``verifier`` is normally ``shroud_sdk.verifier.AttestationVerifier(policy)``;
    ``allow_simulated`` (also offer the simulated-TEE suites) and ``require_post_quantum``
    (offer only hybrid suites) default to that policy's ``allow_simulated_tee`` and
    ``require_post_quantum`` (False for other verifiers); ``disclose`` names the request
    fields shown to the operator in clear; ``audience`` defaults to the bridge URL's
    ``host:port``; ``ssl_context`` verifies the TLS terminator of a ``wss://`` URL (default:
    ``ssl.create_default_context()``, which honours ``SSL_CERT_FILE``); it must verify the
    certificate and host name.
    """

    _flavour: ClassVar[ModuleType] = httpx2

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` over the attested session; the response body streams."""
        return cast(httpx2.Response, self._handle(request))


class LegacyShroudTransport(_SyncTransport, httpx.BaseTransport):
    """``ShroudTransport`` for the legacy ``httpx`` package (same arguments)."""

    _flavour: ClassVar[ModuleType] = httpx

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` over the attested session; the response body streams."""
        return cast(httpx.Response, self._handle(request))


class AsyncShroudTransport(_AsyncTransport, httpx2.AsyncBaseTransport):
    """The asyncio ``httpx2`` transport to one bridge (arguments as ``ShroudTransport``)."""

    _flavour: ClassVar[ModuleType] = httpx2

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` over the attested session; the response body streams."""
        return cast(httpx2.Response, await self._handle(request))


class AsyncLegacyShroudTransport(_AsyncTransport, httpx.AsyncBaseTransport):
    """``AsyncShroudTransport`` for the legacy ``httpx`` package (same arguments)."""

    _flavour: ClassVar[ModuleType] = httpx

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` over the attested session; the response body streams."""
        return cast(httpx.Response, await self._handle(request))
