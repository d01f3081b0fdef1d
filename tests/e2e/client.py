"""A minimal asyncio shroud/1 client for bridge tests: the channel core over a ``websockets``
client, with a verifier that really verifies the simulated bridge's evidence.

``SimulatedTdxVerifier`` parses the quote, verifies it with ``attestation.verify_quote``
against the collateral the bridge shipped and the simulated root the test trusts, replays the
RTMR3 runtime log against the quote, and returns the quote's REPORTDATA, which the channel core
then compares with the handshake. The production verifier (policy, image pins) is the SDK's;
this one exists so the bridge tests do not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from websockets.asyncio.client import ClientConnection as WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed

from attestation.collateral import Collateral
from attestation.eventlog import RUNTIME_LOG_RTMR, RuntimeEventLog, replay_against
from attestation.quote_parser import parse_quote
from attestation.report import VerificationReport
from attestation.verify import verify_quote
from shroud_sdk.channel.connection import ClientConfig, ClientConnection
from shroud_sdk.channel.constants import SIMULATED_SUITES
from shroud_sdk.channel.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from shroud_sdk.channel.evidence import Evidence
from shroud_sdk.channel.usage import SignedUsage
from shroud_sdk.errors import HandshakeError


class EvidenceRejectedError(HandshakeError):
    """The test verifier refused the bridge's evidence."""


@dataclass(frozen=True)
class Verified:
    """What the verifier proves: the quote's REPORTDATA, with the verification report."""

    report_data: bytes
    report: VerificationReport


class SimulatedTdxVerifier:
    """Verify simulated TDX evidence against one trusted simulated root."""

    def __init__(self, root_pem: bytes, clock: Callable[[], float] = time.time) -> None:
        self._root = x509.load_pem_x509_certificate(root_pem)
        self._clock = clock
        self.report_data_seen: list[bytes] = []

    def __call__(self, evidence: Evidence, suite: int, /) -> Verified:
        if suite not in SIMULATED_SUITES:
            raise EvidenceRejectedError("evidence", "simulated evidence, real suite")
        if evidence.type != "tdx" or evidence.collateral is None:
            raise EvidenceRejectedError("evidence", "expected TDX evidence with collateral")
        now = int(self._clock())
        attested = evidence.attested_key
        if attested is not None and not attested.not_before - 60 <= now < attested.not_after:
            raise EvidenceRejectedError("evidence-window", "attested key outside its window")
        quote = parse_quote(evidence.quote)
        collateral = Collateral.from_json_text(evidence.collateral)
        report = verify_quote(quote, collateral, now=now, trusted_roots=[self._root])
        if not report.ok:
            failed = ", ".join(c.name for c in report.failed)
            raise EvidenceRejectedError("evidence", f"quote verification failed: {failed}")
        runtime = [log for log in evidence.event_logs if log.format == "shroud-runtime"]
        if len(runtime) != 1:
            raise EvidenceRejectedError("evidence", "expected exactly one runtime event log")
        log = RuntimeEventLog.from_bytes(runtime[0].data).to_event_log()
        rtmrs = quote.td_report.rtmrs
        if not replay_against([log], rtmrs).register(RUNTIME_LOG_RTMR).matches:
            raise EvidenceRejectedError("evidence", "runtime log does not replay to RTMR3")
        self.report_data_seen.append(quote.td_report.report_data)
        return Verified(quote.td_report.report_data, report)


@dataclass
class Response:
    """One response as the client saw it. ``reset`` is set instead of ``ended`` on RESET."""

    stream_id: int
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    received: int = 0  # body bytes, kept in ``body`` or not (``keep_bodies``)
    usage: SignedUsage | None = None
    ended: bool = False
    reset: StreamReset | None = None

    def json(self) -> object:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), if any."""
        return next((v for n, v in self.headers if n == name), None)


@dataclass
class _Stream:
    response: Response
    done: asyncio.Event = field(default_factory=asyncio.Event)
    got_headers: asyncio.Event = field(default_factory=asyncio.Event)
    chunks: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)


class ChannelClient:
    """An attested shroud/1 connection; ``await ChannelClient.connect(...)``, then requests."""

    def __init__(
        self,
        ws: WebSocket,
        conn: ClientConnection,
        done: HandshakeComplete,
        *,
        keep_bodies: bool = True,
    ) -> None:
        self.ws = ws
        self._keep_bodies = keep_bodies
        self.conn = conn
        self.handshake = done
        self._lock = asyncio.Lock()
        self._streams: dict[int, _Stream] = {}
        self.closed_by_peer: ConnectionClosed | None = None
        self.failure: BaseException | None = None
        self.connection_done = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        audience: str,
        root_pem: bytes,
        disclose: frozenset[str] = frozenset(),
        seconds: float = 15.0,
        fresh: bool = False,
        local_address: str | None = None,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keep_bodies: bool = True,
    ) -> ChannelClient:
        """Open the WebSocket, run the handshake with the real verifier, start reading.

        ``fresh`` asks for a quote over this handshake instead of the bridge's attested key.
        ``local_address`` binds the client's socket (e.g. 127.0.0.2: Linux routes all of
        127.0.0.0/8 to loopback, so tests can be several sources); ``headers`` are added to
        the WebSocket upgrade request (e.g. X-Forwarded-For); ``ssl_context`` is what a
        ``wss://`` URL's certificate is verified with (e.g. a test CA). ``keep_bodies=False``
        only counts body bytes (``Response.received``): for responses too large to keep.
        """
        conn = ClientConnection(
            ClientConfig(
                audience=audience,
                verifier=SimulatedTdxVerifier(root_pem),
                allowed_suites=frozenset(SIMULATED_SUITES),
                disclose=disclose,
                fresh_quote=fresh,
            )
        )
        # websockets makes its own default context for wss:// unless given one (None refused).
        tls: dict[str, Any] = {"ssl": ssl_context} if ssl_context is not None else {}
        ws = await connect(
            url,
            compression=None,
            open_timeout=seconds,
            max_size=None,
            additional_headers=dict(headers or {}),
            local_addr=(local_address, 0) if local_address is not None else None,
            **tls,
        )
        try:
            async with asyncio.timeout(seconds):
                for message in conn.data_to_send():
                    await ws.send(message)
                reply = await ws.recv()
            assert isinstance(reply, bytes)
            conn.receive_data(reply)
        except BaseException:
            await ws.close()
            raise
        events = conn.events_received()
        assert len(events) == 1
        assert isinstance(events[0], HandshakeComplete)
        return cls(ws, conn, events[0], keep_bodies=keep_bodies)

    async def _flush(self) -> None:
        async with self._lock:
            for message in self.conn.data_to_send():
                await self.ws.send(message)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                assert isinstance(message, bytes)
                self.conn.receive_data(message)
                for event in self.conn.events_received():
                    self._dispatch(event)
                await self._flush()
        except (WebSocketClosed, Exception) as exc:
            self.failure = exc
        finally:
            with contextlib.suppress(Exception):
                self.conn.receive_eof()
            for stream in self._streams.values():
                stream.done.set()
                stream.got_headers.set()
            self.connection_done.set()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, ConnectionClosed):
            self.closed_by_peer = event
            return
        stream = self._streams.get(getattr(event, "stream_id", -1))
        if stream is None:
            return
        response = stream.response
        if isinstance(event, ResponseReceived):
            response.status, response.headers = event.status, event.headers
            stream.got_headers.set()
        elif isinstance(event, DataReceived):
            response.received += len(event.data)
            if self._keep_bodies:
                response.body += event.data
                stream.chunks.put_nowait(event.data)
        elif isinstance(event, StreamEnded):
            response.usage, response.ended = event.usage, True
            stream.done.set()
            stream.got_headers.set()
        elif isinstance(event, StreamReset):
            response.reset = event
            stream.done.set()
            stream.got_headers.set()

    async def start(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        disclosed: Mapping[str, object] | None = None,
        end: bool = True,
    ) -> int:
        """Send a request (HEADERS, DATA, and END unless ``end`` is False); return its id."""
        if disclosed is None:
            document = json.loads(body) if body else {}
            disclosed = {name: document.get(name) for name in self.handshake.disclose}
        sid = self.conn.send_request(method, path, headers, disclosed=disclosed)
        self._streams[sid] = _Stream(Response(sid))
        if body:
            self.conn.send_data(sid, body)
        if end:
            self.conn.end_stream(sid)
        await self._flush()
        return sid

    async def send_body(self, sid: int, data: bytes, *, end: bool = False) -> None:
        """Send more request body on ``sid``."""
        self.conn.send_data(sid, data)
        if end:
            self.conn.end_stream(sid)
        await self._flush()

    async def reset(self, sid: int) -> None:
        """Abandon ``sid`` (RESET)."""
        self.conn.reset_stream(sid, 0, "client gave up")
        await self._flush()

    async def first_chunk(self, sid: int, seconds: float = 10.0) -> bytes:
        """Wait for the first body chunk of ``sid``."""
        async with asyncio.timeout(seconds):
            return await self._streams[sid].chunks.get()

    async def status(self, sid: int, seconds: float = 10.0) -> int:
        """Wait for the response HEADERS of ``sid`` (or its end) and return the status (0 when
        the stream ended without a response)."""
        stream = self._streams[sid]
        async with asyncio.timeout(seconds):
            await stream.got_headers.wait()
        return stream.response.status

    async def response(self, sid: int, seconds: float = 15.0) -> Response:
        """Wait until ``sid`` ended (END, RESET or connection loss) and return it."""
        stream = self._streams[sid]
        async with asyncio.timeout(seconds):
            await stream.done.wait()
        return stream.response

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        disclosed: Mapping[str, object] | None = None,
        seconds: float = 15.0,
    ) -> Response:
        """Send a whole request and wait for the whole response."""
        sid = await self.start(method, path, headers=headers, body=body, disclosed=disclosed)
        return await self.response(sid, seconds)

    async def close(self) -> None:
        """Send CLOSE (if still open) and close the WebSocket."""
        with contextlib.suppress(Exception):
            self.conn.close()
            await self._flush()
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(5):
                await self.connection_done.wait()
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def chat_body(
    text: str = "hello there", *, model: str = "shroud-demo-echo", **extra: object
) -> bytes:
    """A chat completion request body as JSON bytes."""
    document: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
    return json.dumps(document).encode()


def sse_data(body: bytes) -> list[object]:
    """The JSON payloads of an SSE body's ``data:`` lines (``[DONE]`` kept as a string)."""
    out: list[object] = []
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out
