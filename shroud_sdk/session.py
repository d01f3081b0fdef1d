"""Attested sessions: the asyncio (and thread-backed sync) shell around ``ClientConnection``.

An ``AsyncSession`` owns at most one live WebSocket to the bridge at a time. The first request
opens it: the ClientHello goes out, the BridgeHello's evidence is verified (in a worker thread,
since collateral may be fetched) and only then may request records be sealed; the channel core
itself refuses to seal earlier. One connection carries many concurrent streams; each record is
opened as soon as websockets' protocol callback has parsed its message (``_BridgeSocket``), and
its events go to per-stream inboxes there and then, with no reader task in between. A
connection that closed or failed is replaced by a new handshake and a new verification on the
next request.

Flow control: each stream's inbox holds at most ``STREAM_BUFFER_RECORDS`` records the
application has not read (queued, or handed over in a batch it has not finished); past that
the connection stops reading the socket (the events already read wait, in order, until the
application makes room), so a response the application does not consume stays in the network
(and the bridge, after its send timeout, drops the connection) rather than in this process's
memory. Streams share one connection, so one stream left unread also stalls the
others: close what you do not read.

Data path: the application takes every record that has arrived for its stream in one batch
(all that one WebSocket read brought, at least), waiting on one future with a deadline timer
rather than a task, so a record wakes one task: the application's. A sync reader that runs
the loop itself is not woken at all: queuing its record stops the loop in the round that read
it. A reply is sent only when the core has something to send (a CLOSE reply).

Retry rule: ``open_stream`` retries on a fresh connection only when the request provably never
left this process (the connection was found dead before the request HEADERS were sealed).
Once a request record has been sealed it is never re-sent here.

``SyncSession`` runs an ``AsyncSession`` on a private event loop with a thread of its own (one
per session), so synchronous callers need no event loop of their own and it works inside a
running one (Jupyter). A sync caller reading a response body runs that loop itself while it
waits (``SyncSession.receive_body``): the socket is read and the record opened on the
caller's thread, with no hand-off between threads per chunk. The loop thread runs the loop
whenever no reader does (a request from another thread, a second reader, a reader busy
elsewhere for more than a moment); a reader that cannot take the loop waits for its records
as they are queued (``AsyncStream.receive_body_blocking``). ``close()`` stops and joins that
thread.

Redirects: the WebSocket opening never follows one (DESIGN.md §6). A 3xx answer to the upgrade
is a ``SessionConnectError`` naming it; nothing of the request was sent.

Errors raised here are neutral (``SessionConnectError``, ``SessionSendInterruptedError``,
``SessionTimeoutError``, ``StreamAbortedError``, ``SessionDisclosureRefusedError``,
``SessionOverloadedError``, channel errors); ``shroud_sdk.transport`` maps them to httpx and
``openai`` exceptions. Deliberately not here: HTTP semantics and the evidence checks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import re
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar, cast
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection as WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Event as WebSocketEvent
from websockets.protocol import State

from shroud_sdk.channel.connection import ClientConfig, ClientConnection, ConnectionState
from shroud_sdk.channel.constants import (
    DEFAULT_CLIENT_SUITES,
    DISCLOSABLE_FIELDS,
    HYBRID_SUITES,
    MAX_BRIDGE_HELLO_LEN,
    RESET_CANCELLED,
    SIMULATED_SUITES,
)
from shroud_sdk.channel.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from shroud_sdk.channel.evidence import Evidence, EvidenceVerifier, VerifiedEvidence
from shroud_sdk.channel.usage import SignedUsage
from shroud_sdk.errors import (
    ChannelError,
    ConnectionFailedError,
    HandshakeError,
    LocalProtocolError,
    RekeyRequiredError,
    ShroudError,
)
from shroud_sdk.hello_refusal import bridge_refusal
from shroud_sdk.refusals import Overload
from shroud_sdk.ws_frames import parser_between_frames, whole_binary_frames

_T = TypeVar("_T")

# A BridgeHello carries a quote, event logs and collateral; records are far smaller.
_MAX_MESSAGE: Final = MAX_BRIDGE_HELLO_LEN
# Messages held before the link takes them (the handshake expects one): websockets' default
# ``max_queue``, the bound its own receive queue kept before the SDK read in its callback.
_MAX_HELD: Final = 16
# RFC 6455 section 7.4.1: the bridge closes a handshake whose disclosure set it refuses with
# 1008 and a reason "disclosure refused: required=a,b allowed=c,d" (docs/deployment.md).
_WS_POLICY_VIOLATION: Final = 1008
_DISCLOSURE_REASON_PREFIX: Final = "disclosure"
_DISCLOSURE_FIELD_LIST: Final = re.compile(r"\b(required|allowed)=([A-Za-z_,]*)")
# docs/protocol.md §9: a bridge out of fresh quotes for this source closes with 1013 and
# "fresh quote rate limit: retry after <n>s"; one without a valid attested key with 4001 and
# "evidence-unavailable".
_WS_TRY_AGAIN_LATER: Final = 1013
_FRESH_QUOTE_LIMIT_PREFIX: Final = "fresh quote rate limit"
_RETRY_AFTER: Final = re.compile(r"retry after (\d{1,6})s")
_EVIDENCE_UNAVAILABLE: Final = "evidence-unavailable"
# HTTP statuses websockets' connect() would follow as redirects (it follows up to 10).
_REDIRECT_STATUSES: Final = frozenset({300, 301, 302, 303, 307, 308})
# Records of one response held for an application that is not reading it (each at most
# 16 KiB of content): past this the connection's reader stops reading the socket.
STREAM_BUFFER_RECORDS: Final = 64
# SyncSession: the loop's driver when its own thread runs it, and how long (s) the loop may
# stay idle between a reader's reads before that thread takes it back.
_LOOP_THREAD: Final = 0
_IDLE_GRACE: Final = 0.05


class SessionConnectError(ShroudError):
    """The bridge could not be reached or the WebSocket opening failed; nothing was sent."""


class SessionSendInterruptedError(ShroudError):
    """The connection was lost while this request was being sent.

    Some of its records may have reached the bridge, so the request may be answered by the
    model: it must not be sent again on the caller's behalf (unlike ``SessionConnectError``,
    where nothing was sent).
    """


class _DirectConnect(connect):
    """websockets' ``connect``, except that a redirect answer to the upgrade is not followed.

    The client reaches the bridge at the URL it was configured with and nowhere else (DESIGN.md
    §6): a 3xx comes back as the ``InvalidStatus`` it is.
    """

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


class SessionTimeoutError(ShroudError):
    """A timeout expired; ``phase`` is ``connect`` (handshake + verification) or ``read``."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


class StreamAbortedError(ShroudError):
    """The bridge reset the stream (authenticated RESET): the response is incomplete."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the bridge reset the stream (code {code}): {reason[:200]}")
        self.code = code
        self.reason = reason


class SessionFreshQuoteRefusedError(ShroudError):
    """The bridge refused a fresh quote for this client's source (its rate limit); nothing
    was sent. ``retry_after`` is the bridge's advice in seconds (None if it gave none); like
    every close reason it is unauthenticated."""

    def __init__(self, retry_after: int | None) -> None:
        after = f"; retry after {retry_after} s" if retry_after is not None else ""
        super().__init__(f"the bridge refused a fresh quote (its per-source rate limit){after}")
        self.retry_after = retry_after


class SessionDisclosureRefusedError(ShroudError):
    """The bridge refused this client's disclosure set during the handshake; nothing was sent.

    ``required`` and ``allowed`` are the field names the bridge's close reason listed (only
    names this SDK knows as disclosable; None when the reason did not say). The reason is
    unauthenticated: it informs the user, it must never change what the client discloses.
    """

    def __init__(
        self,
        disclosed: frozenset[str],
        required: frozenset[str] | None,
        allowed: frozenset[str] | None,
    ) -> None:
        super().__init__("the bridge refused this client's disclosure set")
        self.disclosed = disclosed
        self.required = required
        self.allowed = allowed

    @classmethod
    def from_close_reason(
        cls, disclosed: frozenset[str], reason: str
    ) -> SessionDisclosureRefusedError:
        """Parse ``required=``/``allowed=`` lists out of the bridge's close reason."""
        lists: dict[str, frozenset[str]] = {}
        for key, names in _DISCLOSURE_FIELD_LIST.findall(reason[:200]):
            lists[key] = frozenset(n for n in names.split(",") if n in DISCLOSABLE_FIELDS)
        return cls(disclosed, lists.get("required"), lists.get("allowed"))


class SessionOverloadedError(ShroudError):
    """The bridge (or a proxy before it) refused the connection for lack of capacity.

    ``overload`` says which limit and when to retry (``shroud_sdk.refusals``). It came before
    any key was agreed, so it is unauthenticated: nothing was sent, and nothing but the time of
    a retry may depend on it.
    """

    def __init__(self, overload: Overload) -> None:
        super().__init__(
            f"the bridge refused the connection ({overload.limit.value}): "
            f"{overload.limit.explanation}; retry in {overload.retry_after} s"
        )
        self.overload = overload


def _redirect_refusal(response: Response) -> str:
    location = response.headers.get("Location")
    target = "".join(c for c in location[:200] if c.isprintable()) if location else None
    to = f" to {target!r}" if target is not None else ""
    return (
        f"the bridge URL answered the WebSocket upgrade with a redirect (HTTP "
        f"{response.status_code}{to}); the SDK never follows redirects, so nothing was sent. "
        "Configure the bridge URL its operator publishes"
    )


@dataclass(frozen=True)
class SessionConfig:
    """Where the bridge is and how to trust it.

    ``url`` is ``wss://`` (or ``ws://`` to a loopback address, for development);
    ``audience`` the deployment name the bridge must answer to (default: ``host:port`` of
    the URL); ``verifier`` the evidence verifier; ``allow_simulated`` also offers the
    simulated-TEE suites; ``require_post_quantum`` offers only hybrid suites; ``disclose`` the
    request fields shown to the operator in clear; ``ssl_context``
    verifies the TLS terminator of a ``wss://`` URL (default: ``ssl.create_default_context()``,
    made here, so the system CAs or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as they are now). The
    evidence mode follows the verifier: fresh when it ``requires_fresh_quote`` (the policy's
    ``fresh_quote``), the bridge's attested key otherwise.
    """

    url: str
    verifier: EvidenceVerifier = field(repr=False)
    audience: str = ""
    allow_simulated: bool = False
    disclose: frozenset[str] = frozenset()
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    require_post_quantum: bool = False

    def __post_init__(self) -> None:
        check_bridge_url(self.url)
        if not self.audience:
            object.__setattr__(self, "audience", default_audience(self.url))
        secure = urlsplit(self.url).scheme == "wss"
        if self.ssl_context is not None:
            check_ssl_context(self.ssl_context, secure=secure)
        elif secure:
            object.__setattr__(self, "ssl_context", ssl.create_default_context())

    def client_config(self, verifier: EvidenceVerifier) -> ClientConfig:
        """The channel core's configuration for one connection."""
        suites = set(DEFAULT_CLIENT_SUITES)  # hybrid first (the core orders the offer)
        if self.allow_simulated:
            suites |= SIMULATED_SUITES
        if self.require_post_quantum:
            suites &= HYBRID_SUITES
        return ClientConfig(
            audience=self.audience,
            verifier=verifier,
            allowed_suites=frozenset(suites),
            disclose=self.disclose,
            fresh_quote=bool(getattr(self.verifier, "requires_fresh_quote", False)),
        )


def check_bridge_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is ``wss://host[:port]/...`` or loopback ``ws://``.

    Plain ``ws://`` is allowed only to loopback: the channel is encrypted either way, but the
    bridge URL's host is also the audience, and a cleartext WebSocket to a remote host is
    almost always a configuration mistake.
    """
    if not isinstance(url, str):
        raise TypeError("the bridge URL must be a string")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"bridge URL must be wss://host[:port][/path], got {url[:200]!r}")
    if parts.username or parts.password or parts.fragment:
        raise ValueError("bridge URL must not hold credentials or a fragment")
    if parts.scheme == "ws" and not is_loopback(parts.hostname):
        raise ValueError("plain ws:// is only allowed to a loopback address; use wss://")


def check_ssl_context(context: object, *, secure: bool) -> None:
    """Raise unless ``context`` is an ``ssl.SSLContext`` that verifies certificate and host name.

    The attested channel does not rely on TLS, but TLS is what hides the disclosed metadata
    and which deployment a client talks to from the network, so a context that skips
    verification is a mistake to refuse, not a choice to honour (there is no ``verify=False``).
    """
    if not isinstance(context, ssl.SSLContext):
        raise TypeError("ssl_context must be an ssl.SSLContext")
    if not secure:
        raise ValueError("ssl_context applies only to a wss:// bridge URL")
    if context.verify_mode is not ssl.CERT_REQUIRED or not context.check_hostname:
        raise ValueError(
            "ssl_context must verify the server certificate and host name "
            "(verify_mode=CERT_REQUIRED, check_hostname=True), e.g. "
            "ssl.create_default_context(cafile=...)"
        )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_audience(url: str) -> str:
    """``host:port`` of the bridge URL (the bridge's default audience is its listen address)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _RecordingVerifier:
    """Wraps the configured verifier to remember the report of the latest evidence.

    The channel core compares REPORTDATA after the verifier returns; when that comparison
    fails, the session still wants to show what the quote said.
    """

    def __init__(self, inner: EvidenceVerifier) -> None:
        self._inner = inner
        self.report: object | None = None

    def __call__(self, evidence: Evidence, suite: int, /) -> VerifiedEvidence:
        result = self._inner(evidence, suite)
        self.report = result.report
        return result


class _StreamInbox:
    """A stream's received events waiting for the application: at most ``limit`` of them.

    The connection (on the session's loop) queues events with :meth:`offer` as records are
    read, or with :meth:`put` once it had to wait; the application takes everything queued at
    once (:meth:`take` on the loop, :meth:`take_blocking` on a caller's thread), so every
    record one WebSocket read brought reaches it in one hand-off. A batch counts as unread
    until the application asks for more: queued and handed-out-but-unread events together
    never exceed ``limit``. Past that, ``offer`` refuses and ``put`` waits, and the connection
    stops reading the socket, so the bridge's sends wait too (TCP flow control) instead of
    this process buffering the whole response. Errors never wait (:meth:`fail`), and a stream the
    application abandoned (:meth:`discard`) takes nothing more.

    Thread-safe between the loop that owns it and one consuming thread: the sync client reads
    on its caller's thread, and the loop is woken only when its reader waits for room.
    """

    def __init__(self, limit: int = STREAM_BUFFER_RECORDS) -> None:
        self._items: collections.deque[Event | BaseException] = collections.deque()
        self._limit = limit
        self._handed_out = 0  # the last batch: unread until the application asks for more
        self._discarded = False
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a consuming thread waits on it
        # Whether a thread waits on ``_arrived``: notifying a Condition runs Python code even
        # with nobody waiting, and on the loop's side that is every record of an async reader.
        self._thread_waits = False
        self._loop = asyncio.get_running_loop()
        self._readable: asyncio.Future[None] | None = None  # a consuming coroutine waits on it
        # A thread runs the loop in ``take_driving`` until this stream has something: whatever
        # queues it stops the loop there and then (one flag, no future or callback).
        self._driving = False
        self._timed_out = False
        self._room: asyncio.Future[None] | None = None  # the reader waits on it when full

    def __len__(self) -> int:
        """Events the application has not read (queued, or in the batch it holds)."""
        with self._lock:
            return len(self._items) + self._handed_out

    async def put(self, event: Event) -> None:
        """Queue ``event``; wait while the application has ``limit`` events unread."""
        while True:
            with self._lock:
                if self._discarded:
                    return
                if len(self._items) + self._handed_out < self._limit:
                    self._items.append(event)
                    if self._thread_waits:
                        self._arrived.notify()
                    break
                room = self._room = self._loop.create_future()
            await room
        self._wake_reader()

    def offer(self, event: Event, *, force: bool = False) -> bool:
        """Queue ``event`` if the application has fewer than ``limit`` events unread (or
        ``force``); return whether it was queued (or dropped: the stream was discarded)."""
        with self._lock:
            if self._discarded:
                return True
            if not force and len(self._items) + self._handed_out >= self._limit:
                return False
            self._items.append(event)
            if self._thread_waits:
                self._arrived.notify()
        self._wake_reader()
        return True

    def fail(self, error: BaseException) -> None:
        """Queue ``error`` after what is already queued, whatever the limit (loop thread)."""
        with self._lock:
            self._items.append(error)
            if self._thread_waits:
                self._arrived.notify()
        self._wake_reader()

    async def take(self, read_timeout: float | None) -> list[Event | BaseException]:
        """Everything queued, waiting up to ``read_timeout`` s for something (on the loop)."""
        _wake(self._release())
        if not self._items:  # only this loop's reader appends: no race with it here
            # A bare future and a timer (only when there is a deadline): the cheapest wait,
            # as this one happens for every record the application waits for.
            readable = self._readable = self._loop.create_future()
            timer = None
            if read_timeout is not None:
                timer = self._loop.call_later(read_timeout, _wake, readable)
            try:
                await readable
            finally:
                self._readable = None
                if timer is not None:
                    timer.cancel()
            if not self._items:  # woken by the timer
                raise SessionTimeoutError("read", "timed out waiting for the bridge")
        with self._lock:
            return self._drain()

    def take_blocking(self, read_timeout: float | None) -> list[Event | BaseException]:
        """:meth:`take` for a thread other than the loop's (the sync client's caller)."""
        room = self._release()
        if room is not None:
            self._loop.call_soon_threadsafe(_wake, room)
        with self._lock:
            self._thread_waits = True
            try:
                arrived = self._arrived.wait_for(lambda: self._items, read_timeout)
            finally:
                self._thread_waits = False
            if not arrived:
                raise SessionTimeoutError("read", "timed out waiting for the bridge")
            return self._drain()

    def take_driving(self, read_timeout: float | None) -> list[Event | BaseException]:
        """:meth:`take` for the thread that holds the loop while it is not running: run the
        loop on this thread until something is queued or ``read_timeout`` s pass.

        No future, no task: what queues the first event stops the loop at once
        (:meth:`_wake_reader`), so it finishes the round that read the record and returns,
        rather than going round again to run a completion callback that stops it.
        """
        _wake(self._release())
        if not self._items:
            loop = self._loop
            self._timed_out = False
            self._driving = True
            timer = None
            try:
                if read_timeout is not None:  # armed inside: an interrupt cancels it below
                    timer = loop.call_later(read_timeout, self._time_out)
                # A stop meant for someone else (e.g. the loop thread's, made stale by a
                # hand-over) ends a run early: only an event or the deadline ends the wait.
                while not self._items and not self._timed_out:
                    loop.run_forever()
            finally:
                self._driving = False
                if timer is not None:
                    timer.cancel()
            if not self._items:
                raise SessionTimeoutError("read", "timed out waiting for the bridge")
        with self._lock:
            return self._drain()

    def discard(self) -> None:
        """The application gave up on the stream: drop what is queued, take nothing more."""
        with self._lock:
            self._discarded = True
            self._items.clear()
        _wake(self._release())

    def _wake_reader(self) -> None:
        """Something was queued: wake whoever waits for it on the loop (never a thread)."""
        if self._driving:
            self._loop.stop()  # ends the reader's run_forever() after this round
        else:
            _wake(self._readable)

    def _time_out(self) -> None:
        self._timed_out = True
        self._loop.stop()

    def _release(self) -> asyncio.Future[None] | None:
        """The application read its last batch: make room; return the reader's wait, if any."""
        with self._lock:
            self._handed_out = 0
            room, self._room = self._room, None
        # One cancelled with the hand-over (the connection failed) wakes nobody: a thread must
        # not schedule waking it on a loop its session may have closed since.
        return None if room is None or room.done() else room

    def _drain(self) -> list[Event | BaseException]:
        batch = list(self._items)
        self._items.clear()
        self._handed_out = len(batch)
        return batch


def _wake(room: asyncio.Future[None] | None) -> None:
    if room is not None and not room.done():
        room.set_result(None)


class _BridgeSocket(WebSocket):
    """websockets' client connection, handing each message over from its protocol callback.

    A data message is passed to the attached receiver as soon as the frames that make it are
    parsed, inside ``data_received``: no task stands between the socket and the channel core
    (websockets' own ``recv`` would add one, the reader task another). Before a receiver is
    attached (the opening handshake), messages wait for :meth:`next_held`; past
    ``_MAX_HELD`` of them the socket's reading stops until they are taken, the bound
    websockets' own receive queue keeps (``max_queue``), so a peer cannot fill this process's
    memory while the client verifies the BridgeHello. Fragmented messages are joined here;
    websockets' protocol layer has already checked their sequence and size.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._arrived: asyncio.Future[None] | None = None
        self._receiver: _Receiver | None = None
        self._fragments: list[bytes] = []
        self._text = False
        self._held_stopped_reading = False

    def data_received(self, data: bytes) -> None:
        receiver = self._receiver
        protocol = self.protocol
        if receiver is not None and parser_between_frames(protocol):
            # The common case: records, each one binary frame (see shroud_sdk.ws_frames).
            messages, taken = whole_binary_frames(data, protocol.max_message_size)
            for message in messages:
                receiver.receive(message, False)
            if taken == len(data):
                return
            data = data[taken:]
        super().data_received(data)

    def process_event(self, event: WebSocketEvent) -> None:
        if not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            super().process_event(event)
            return
        if event.opcode is not Opcode.CONT:
            self._text = event.opcode is Opcode.TEXT
            self._fragments.clear()
        if not event.fin:
            self._fragments.append(bytes(event.data))
            return
        message = bytes(event.data)
        if self._fragments:
            self._fragments.append(message)
            message = b"".join(self._fragments)
            self._fragments.clear()
        if self._receiver is not None:
            self._receiver.receive(message, self._text)
        else:
            self._held.append((message, self._text))
            if len(self._held) >= _MAX_HELD and not self._held_stopped_reading:
                self._held_stopped_reading = True
                self.transport.pause_reading()
            _wake(self._arrived)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._receiver is not None:
            self._receiver.ended()
        _wake(self._arrived)

    async def next_held(self) -> tuple[bytes, bool]:
        """The next message (bytes, is text) while no receiver is attached; raises
        ``ConnectionClosed`` once the connection is gone."""
        while not self._held:
            if self.connection_lost_waiter.done():
                raise self.close_exc
            self._arrived = self.loop.create_future()
            await self._arrived
        message = self._held.popleft()
        if len(self._held) < _MAX_HELD:
            self._resume_held_reading()
        return message

    def _resume_held_reading(self) -> None:
        if self._held_stopped_reading:
            self._held_stopped_reading = False
            self.transport.resume_reading()

    def attach(self, receiver: _Receiver) -> None:
        """From now on every message goes to ``receiver`` on arrival, the held ones first, and
        ``receiver.ended()`` is called when the connection is lost."""
        self._receiver = receiver
        # Resumed first: the hand-over below is synchronous, so if the receiver stops the
        # reading again (a full inbox), that stands.
        self._resume_held_reading()
        while self._held:
            receiver.receive(*self._held.popleft())
        if self.connection_lost_waiter.done():
            receiver.ended()


class _Receiver(Protocol):
    def receive(self, message: bytes, text: bool) -> None: ...

    def ended(self) -> None: ...


class _Link:
    """One WebSocket and its ``ClientConnection``: the unit replaced on failure.

    Receiving (:meth:`receive`, called from the WebSocket's protocol callback): each record is
    opened and its events are queued in their streams' inboxes at once, so the application's
    waiting read is the only task woken per record. An inbox that is full (the application is
    not reading that stream) stops the socket's reading: the events after it wait here, in
    order, and are handed over as the application makes room; then reading resumes.
    """

    def __init__(
        self,
        websocket: _BridgeSocket,
        connection: ClientConnection,
        report: object,
        disclose: tuple[str, ...],
    ) -> None:
        self.websocket = websocket
        self.connection = connection
        self.report = report
        self.disclose = disclose
        self.streams: dict[int, _StreamInbox] = {}
        self.error: BaseException | None = None
        self.send_lock = asyncio.Lock()
        # Events read while an inbox was full, in arrival order, and the task handing them over.
        self._waiting: collections.deque[tuple[_StreamInbox, Event | BaseException]] = (
            collections.deque()
        )
        self._handing_over: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    @property
    def usable(self) -> bool:
        return (
            self.error is None
            and self.connection.state is ConnectionState.OPEN
            and self.websocket.state is State.OPEN
        )

    async def flush(self) -> None:
        for message in self.connection.data_to_send():
            await self.websocket.send(message)

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._hand_over_now()
        for inbox in self.streams.values():
            inbox.fail(error)
        self.streams.clear()

    def stop(self) -> None:
        """The link is abandoned: take no more messages (its streams were failed already)."""
        self._stopped = True
        self._hand_over_now()

    def receive(self, message: bytes, text: bool) -> None:
        """One WebSocket message (from the protocol callback): open it, queue its events."""
        if self._stopped:
            return
        try:
            if text:
                raise HandshakeError("frame", "bridge sent a text frame")  # protocol: binary
            self.connection.receive_data(message)
            self._dispatch(self.connection.events_received())
        except ChannelError as exc:
            self._stop_with(exc, exc.ws_close_code, exc.check[:100])
            return
        except Exception as exc:  # fail closed on anything unforeseen
            self._stop_with(exc, 1000, "")
            return
        if self.connection.has_data_to_send():  # e.g. the reply to a CLOSE
            self._spawn(self._send_reply())

    def ended(self) -> None:
        """The WebSocket connection is gone (protocol callback)."""
        if not self._stopped:
            self._stopped = True
            self.fail(self._eof_error())

    def _stop_with(self, error: BaseException, code: int, reason: str) -> None:
        self.fail(error)
        self.stop()
        self._spawn(self._close(code, reason))

    async def _send_reply(self) -> None:
        with contextlib.suppress(Exception):  # a lost connection is reported by ended()
            async with self.send_lock:
                await self.flush()

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code=code, reason=reason)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _eof_error(self) -> BaseException:
        state = self.connection.state
        if state is ConnectionState.CLOSED:
            return SessionConnectError("the bridge closed the connection")
        try:
            self.connection.receive_eof()
        except ConnectionFailedError as exc:
            return exc.original
        except ChannelError as exc:
            return exc
        return SessionConnectError("the connection ended")  # pragma: no cover

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ConnectionClosed):
                error = SessionConnectError(f"the bridge closed the connection: {event.reason}")
                self.error = self.error or error
                for sid in event.unfinished_streams:
                    inbox = self.streams.pop(sid, None)
                    if inbox is not None:
                        self._queue(
                            inbox,
                            StreamAbortedError(event.code, f"connection closed: {event.reason}"),
                        )
                continue
            if isinstance(event, HandshakeComplete):  # pragma: no cover - handled in connect
                continue
            inbox = self.streams.get(event.stream_id)
            if inbox is None:
                continue  # a stream we abandoned; the core already accounted for it
            if isinstance(event, StreamEnded | StreamReset):
                self.streams.pop(event.stream_id, None)
            self._queue(inbox, event)

    def _queue(self, inbox: _StreamInbox, item: Event | BaseException) -> None:
        if not self._waiting:
            if isinstance(item, BaseException):
                inbox.fail(item)
                return
            if inbox.offer(item):
                return
            # The application is not reading this stream: stop reading the socket (the
            # bridge's sends then wait too) until it makes room.
            self.websocket.transport.pause_reading()
            self._handing_over = asyncio.get_running_loop().create_task(self._hand_over())
        self._waiting.append((inbox, item))

    async def _hand_over(self) -> None:
        """Queue the waiting events as their inboxes make room, then resume reading."""
        while self._waiting:
            inbox, item = self._waiting[0]
            if isinstance(item, BaseException):
                inbox.fail(item)
            else:
                await inbox.put(item)  # waits while the application is not reading this stream
            self._waiting.popleft()
        self._handing_over = None
        self.websocket.transport.resume_reading()

    def _hand_over_now(self) -> None:
        """The connection is over: queue every waiting event, whatever the bounds."""
        if self._handing_over is not None:
            self._handing_over.cancel()
            self._handing_over = None
        while self._waiting:
            inbox, item = self._waiting.popleft()
            if isinstance(item, BaseException):
                inbox.fail(item)
            else:
                inbox.offer(item, force=True)


def _failure(item: Event | BaseException, where: str) -> BaseException:
    """The error a stream's reader raises for ``item``, which is not what it waited for."""
    if isinstance(item, BaseException):
        return item
    if isinstance(item, StreamReset):
        return StreamAbortedError(item.code, item.reason)
    return LocalProtocolError("stream", f"unexpected {type(item).__name__} {where}")


@dataclass(frozen=True)
class OutgoingRequest:
    """One HTTP request as the channel carries it (the transport builds it from httpx's)."""

    method: str
    path: str
    # Headers carry the API key; body and disclosed values come from the prompt's request:
    # none of them may show up in a repr (tracebacks, debuggers, logs).
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes = field(repr=False)
    disclosed: Mapping[str, object] = field(repr=False)


@dataclass
class ResponseHead:
    """A response's status and headers, as the bridge sent them."""

    status: int
    headers: tuple[tuple[str, str], ...] = field(repr=False)


# Not frozen: one is made for every read, and a frozen dataclass's __init__ costs twice as much
# (``object.__setattr__`` per field), on the path of every token.
@dataclass(slots=True)
class BodyPart:
    """What arrived of a response body since the last read: chunks, then maybe its END."""

    chunks: list[bytes] = field(repr=False)
    ended: bool


class AsyncStream:
    """One request/response exchange on an attested connection.

    Its body is read a batch at a time on the session's loop (:meth:`receive_body`), which the
    sync client's reader may be running on its own thread, or from another thread while the
    loop runs elsewhere (:meth:`receive_body_blocking`).
    """

    def __init__(self, link: _Link, stream_id: int, inbox: _StreamInbox):
        self._link = link
        self.stream_id = stream_id
        self._inbox = inbox
        self._backlog: list[Event | BaseException] = []  # taken, not yet looked at
        self.finished = False
        self.usage: SignedUsage | None = None
        self.report = link.report

    async def _take(self, read_timeout: float | None) -> list[Event | BaseException]:
        if self._backlog:
            items, self._backlog = self._backlog, []
            return items
        return await self._inbox.take(read_timeout)

    async def receive_head(self, read_timeout: float | None) -> ResponseHead:
        """Wait for the response HEADERS."""
        event, *self._backlog = await self._take(read_timeout)
        if isinstance(event, ResponseReceived):
            return ResponseHead(event.status, event.headers)
        self.finished = isinstance(event, BaseException | StreamReset)
        raise _failure(event, "before HEADERS")

    async def receive_body(self, read_timeout: float | None) -> BodyPart:
        """The body chunks that arrived (waiting for one), and whether the authenticated END
        came after them. Once ended, an empty ended part."""
        if self.finished:
            return BodyPart([], True)
        return self._body_part(await self._take(read_timeout))

    def receive_body_blocking(self, read_timeout: float | None) -> BodyPart:
        """:meth:`receive_body` on a thread other than the session loop's, while another
        thread runs the loop."""
        return self._receive_body_now(self._inbox.take_blocking, read_timeout)

    def receive_body_driving(self, read_timeout: float | None) -> BodyPart:
        """:meth:`receive_body` on the thread that holds the session's loop while it is not
        running: it runs the loop until the records come (``_StreamInbox.take_driving``)."""
        return self._receive_body_now(self._inbox.take_driving, read_timeout)

    def _receive_body_now(
        self,
        take: Callable[[float | None], list[Event | BaseException]],
        read_timeout: float | None,
    ) -> BodyPart:
        if self.finished:
            return BodyPart([], True)
        if self._backlog:
            items, self._backlog = self._backlog, []
        else:
            items = take(read_timeout)
        return self._body_part(items)

    def _body_part(self, items: list[Event | BaseException]) -> BodyPart:
        chunks: list[bytes] = []
        for index, item in enumerate(items):
            if isinstance(item, DataReceived):
                chunks.append(item.data)
            elif isinstance(item, StreamEnded):
                self.finished = True
                self.usage = item.usage
                return BodyPart(chunks, True)
            elif chunks:  # deliver what came before the failure; it is raised next time
                self._backlog = items[index:]
                return BodyPart(chunks, False)
            else:
                self.finished = isinstance(item, BaseException | StreamReset)
                raise _failure(item, "in a body")
        return BodyPart(chunks, False)

    async def aclose(self) -> None:
        """Abandon the stream if the response was not read to its END (sends RESET)."""
        if self.finished:
            return
        self.finished = True
        link = self._link
        link.streams.pop(self.stream_id, None)
        self._inbox.discard()  # a reader waiting to queue more for it goes on
        if not link.usable:
            return
        async with link.send_lock:
            with contextlib.suppress(ChannelError):
                link.connection.reset_stream(self.stream_id, RESET_CANCELLED, "client closed")
            with contextlib.suppress(Exception):
                await link.flush()


class AsyncSession:
    """Attested connections to one bridge, opened on demand and replaced after failure.

    Bound to the event loop that first uses it; used from another loop, it starts over with
    a new connection (the old one cannot be driven from there).
    """

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._link: _Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connect_lock: asyncio.Lock | None = None
        self.attestation: object | None = None  # the latest verification report
        self.handshakes = 0
        self._closing: set[asyncio.Task[None]] = set()  # keeps close tasks from being GC'd

    async def open_stream(
        self, request: OutgoingRequest, *, connect_timeout: float | None
    ) -> AsyncStream:
        """Send a complete request on an attested connection; return its stream.

        Retries once on a new connection only when the current one was already dead before
        anything of this request was sealed.
        """
        for attempt in (0, 1):
            link = await self._usable_link(connect_timeout)
            async with link.send_lock:
                if not link.usable:
                    if attempt == 0:
                        continue  # died while we waited for the lock: nothing sent yet
                    raise SessionConnectError("the attested connection closed before sending")
                try:
                    stream_id = link.connection.send_request(
                        request.method,
                        request.path,
                        request.headers,
                        disclosed={k: request.disclosed.get(k) for k in link.disclose},
                    )
                except RekeyRequiredError:
                    self._drop(link)
                    if attempt == 0:
                        continue
                    raise
                inbox = _StreamInbox()
                link.streams[stream_id] = inbox
                if request.body:
                    link.connection.send_data(stream_id, request.body)
                link.connection.end_stream(stream_id)
                try:
                    await link.flush()
                except (WebSocketClosed, OSError) as exc:
                    link.fail(SessionConnectError("connection lost while sending the request"))
                    raise SessionSendInterruptedError(
                        "connection lost while sending the request (not retried: it may "
                        "have reached the bridge)"
                    ) from exc
            return AsyncStream(link, stream_id, inbox)
        raise SessionConnectError("no usable attested connection")  # pragma: no cover

    async def _usable_link(self, connect_timeout: float | None) -> _Link:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._link = None
            self._connect_lock = asyncio.Lock()
        assert self._connect_lock is not None
        async with self._connect_lock:
            if self._link is not None and self._link.usable:
                return self._link
            if self._link is not None:
                self._drop(self._link)
            self._link = await self._connect(connect_timeout)
            return self._link

    async def _connect(self, connect_timeout: float | None) -> _Link:
        try:
            return await asyncio.wait_for(self._handshake(), connect_timeout)
        except TimeoutError:
            raise SessionTimeoutError(
                "connect", "timed out connecting to and verifying the bridge"
            ) from None

    async def _handshake(self) -> _Link:
        recorder = _RecordingVerifier(self.config.verifier)
        connection = ClientConnection(self.config.client_config(recorder))
        host = urlsplit(self.config.url).hostname or ""
        try:
            opened = await _DirectConnect(
                self.config.url,
                create_connection=_BridgeSocket,
                compression=None,  # DESIGN.md §3: no permessage-deflate
                max_size=_MAX_MESSAGE,
                open_timeout=None,  # the caller's connect timeout covers the whole handshake
                proxy=None if is_loopback(host) else True,
                ssl=self.config.ssl_context,  # None for ws://; see SessionConfig
                user_agent_header="shroud-sdk",
            )
        except InvalidStatus as exc:
            if exc.response.status_code in _REDIRECT_STATUSES:
                raise SessionConnectError(_redirect_refusal(exc.response)) from None
            overload = Overload.from_http(
                exc.response.status_code, list(exc.response.headers.raw_items())
            )
            if overload is not None:
                raise SessionOverloadedError(overload) from None
            raise SessionConnectError(f"cannot connect to the bridge: {exc}") from None
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise SessionConnectError(f"cannot connect to the bridge: {exc}") from None
        websocket = cast(_BridgeSocket, opened)
        self.handshakes += 1
        try:
            for message in connection.data_to_send():
                await websocket.send(message)
            reply, text = await websocket.next_held()
            if text:
                raise HandshakeError("frame", "bridge sent a text frame")
            # Verification may fetch collateral and parse large logs: keep the loop free.
            await asyncio.to_thread(connection.receive_data, reply)
            events = connection.events_received()
        except ChannelError as exc:
            report = getattr(exc, "report", None) or recorder.report
            if report is not None:
                self.attestation = report
            with contextlib.suppress(Exception):
                await websocket.close(code=exc.ws_close_code, reason=exc.check[:100])
            if report is not None and not hasattr(exc, "report"):
                exc.report = report  # type: ignore[attr-defined]
            raise
        except WebSocketClosed as exc:
            received = exc.rcvd
            if (
                received is not None
                and received.code == _WS_POLICY_VIOLATION
                and received.reason.startswith(_DISCLOSURE_REASON_PREFIX)
            ):
                # Reported, never acted on: this close reason is unauthenticated (no key has
                # been agreed yet), so widening the disclosure to satisfy it would let any
                # middlebox make the client reveal more. Only the user may opt in.
                raise SessionDisclosureRefusedError.from_close_reason(
                    self.config.disclose, received.reason
                ) from None
            if (
                received is not None
                and received.code == _WS_TRY_AGAIN_LATER
                and received.reason.startswith(_FRESH_QUOTE_LIMIT_PREFIX)
            ):
                after = _RETRY_AFTER.search(received.reason)
                raise SessionFreshQuoteRefusedError(
                    int(after.group(1)) if after else None
                ) from None
            if (
                received is not None
                and received.code == HandshakeError.ws_close_code
                and received.reason == _EVIDENCE_UNAVAILABLE
            ):
                raise HandshakeError(
                    _EVIDENCE_UNAVAILABLE,
                    "the bridge has no valid attested key (its evidence expired and rotation "
                    "is failing); retry later, or ask for a fresh quote",
                ) from None
            overload = (
                Overload.from_close(received.code, received.reason)
                if received is not None
                else None
            )
            if overload is not None:
                raise SessionOverloadedError(overload) from None
            if received is not None and received.code == HandshakeError.ws_close_code:
                # The bridge refused our hello (no common suite, other audience): it cannot
                # attest on terms this client accepts. Its reason is shown, never trusted.
                raise bridge_refusal(
                    received.reason,
                    audience=self.config.audience,
                    offered=connection.offered_suites,
                    allow_simulated=self.config.allow_simulated,
                    require_post_quantum=self.config.require_post_quantum,
                ) from None
            raise SessionConnectError(
                "the bridge closed the connection during the handshake"
            ) from exc
        except BaseException:
            with contextlib.suppress(Exception):
                await websocket.close()
            raise
        complete = next(e for e in events if isinstance(e, HandshakeComplete))
        link = _Link(websocket, connection, complete.report, complete.disclose)
        self.attestation = complete.report
        websocket.attach(link)
        return link

    def _drop(self, link: _Link) -> None:
        link.fail(SessionConnectError("connection replaced"))
        link.stop()
        if self._link is link:
            self._link = None
        with contextlib.suppress(Exception):
            task = asyncio.get_running_loop().create_task(link.websocket.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _drop_interrupted(self, stream: AsyncStream) -> None:
        """A run of the loop was interrupted (on the thread holding it, the loop stopped): drop
        ``stream``'s connection and the current one, whose records may be half processed."""
        for link in {stream._link, self._link}:
            if link is None:
                continue
            link.fail(SessionConnectError("a read was interrupted: the connection was dropped"))
            link.stop()
            if self._link is link:
                self._link = None
            link.websocket.transport.abort()  # no running loop needed: nothing more is read

    async def aclose(self) -> None:
        """Send the authenticated CLOSE and close the WebSocket."""
        link, self._link = self._link, None
        if link is None or self._loop is not asyncio.get_running_loop():
            return
        if link.usable:
            async with link.send_lock:
                with contextlib.suppress(ChannelError):
                    link.connection.close()
                with contextlib.suppress(Exception):
                    await link.flush()
        link.fail(SessionConnectError("session closed"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.websocket.close(), 2)
        link.stop()


def _runs_a_loop() -> bool:
    """Whether this thread is running an event loop now."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class SyncSession:
    """An ``AsyncSession`` driven from synchronous code through a private event loop.

    The loop has one driver at a time: its own thread (``shroud-session``), or a caller's
    thread reading a response body (:meth:`receive_body`). A reader takes the loop when nobody
    else needs it, runs it while it waits for its records (so the socket is read, the record
    opened and the chunk returned on the reader's own thread, with no hand-off between
    threads), and leaves it idle between reads. The loop thread takes it back when anyone
    else needs it (a request or close from another thread, a reader that found the loop
    taken) and after ``_IDLE_GRACE`` s idle, so pings are answered and late work is done while
    the application is busy elsewhere.
    """

    def __init__(self, config: SessionConfig) -> None:
        self._async = AsyncSession(config)
        self._loop = asyncio.new_event_loop()
        # Held directly (not through the Condition's Python-level ``__enter__``) where a read
        # has just delivered its record and every step is on the token's latency.
        self._baton_lock = threading.Lock()
        self._baton = threading.Condition(self._baton_lock)
        self._driver: int | None = _LOOP_THREAD  # who runs the loop (a thread id), or None
        self._dependents = 0  # threads waiting for work on the loop without running it
        self._borrowing = False  # a reader is stopping the loop thread to take over
        self._idle_since = 0.0
        self._quit = False
        self._thread = threading.Thread(target=self._serve, name="shroud-session", daemon=True)
        self._thread.start()
        self._closed = False
        self._lock = threading.Lock()

    @property
    def config(self) -> SessionConfig:
        return self._async.config

    @property
    def async_session(self) -> AsyncSession:
        """The ``AsyncSession`` this drives: use it only in coroutines given to ``run``."""
        return self._async

    @property
    def attestation(self) -> object | None:
        """The latest verification report (None before the first handshake)."""
        return self._async.attestation

    @property
    def handshakes(self) -> int:
        """How many handshakes were attempted (each with a fresh verification)."""
        return self._async.handshakes

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coroutine`` on the session's loop and wait for its result."""
        if self._closed:
            coroutine.close()
            raise SessionConnectError("the session is closed")
        with self._depending():
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            try:
                return future.result(timeout)
            except FutureTimeoutError:
                future.cancel()
                raise SessionTimeoutError("read", "timed out") from None

    def receive_body(self, stream: AsyncStream, read_timeout: float | None) -> BodyPart:
        """``stream``'s next body part, read on this thread (see the class docstring)."""
        me = threading.get_ident()
        try:
            if not self._take_loop():
                with self._depending():
                    return stream.receive_body_blocking(read_timeout)
            return stream.receive_body_driving(read_timeout)
        except BaseException as exc:
            if not isinstance(exc, Exception) and self._driver == me:
                # E.g. KeyboardInterrupt on the main thread: it lands wherever the loop was,
                # maybe between opening a record and queuing its events (a record gone, the
                # next one still authentic), or inside websockets' parser. Fail closed: drop
                # the connection, so no stream on it goes on with a gap or waits for a lost END.
                self._async._drop_interrupted(stream)
            raise
        finally:
            # Only this thread makes itself the driver, so this needs no lock; checked rather
            # than remembered, so an interrupt just after ``_take_loop`` cannot keep the loop.
            if self._driver == me:
                self._leave_loop()

    def _take_loop(self) -> bool:
        """Become the loop's driver if nobody else needs it; False if someone does."""
        me = threading.get_ident()
        with self._baton:
            if self._closed or self._dependents or self._borrowing:
                return False
            if _runs_a_loop():
                return False  # e.g. Jupyter's: this thread cannot run a second one
            if self._driver == _LOOP_THREAD:
                self._borrowing = True
                try:
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    # Until its run ends (or someone comes to depend on the loop meanwhile).
                    self._baton.wait_for(lambda: self._driver is None or self._dependents > 0)
                finally:  # interrupted (Ctrl-C), it must not keep the loop thread from serving
                    self._borrowing = False
            depended_on = self._dependents > 0  # may have changed while it waited
            if self._driver is None and not depended_on:
                self._driver = me
                return True
            if self._driver is None:  # stopped, but someone came to depend on it: it goes on
                self._driver = _LOOP_THREAD
                self._baton.notify_all()
            return False

    def _leave_loop(self) -> None:
        with self._baton_lock:
            if self._dependents or self._closed:
                self._driver = _LOOP_THREAD
                self._baton.notify_all()
            else:
                self._driver = None
                self._idle_since = time.monotonic()

    @contextlib.contextmanager
    def _depending(self) -> Iterator[None]:
        """While this runs, the loop is never left idle (the loop thread runs it)."""
        with self._baton:
            self._dependents += 1
            if self._driver is None:
                self._driver = _LOOP_THREAD
                self._baton.notify_all()
        try:
            yield
        finally:
            with self._baton:
                self._dependents -= 1

    def _serve(self) -> None:
        """The loop thread: run the loop whenever no reader does."""
        while True:
            with self._baton:
                while not self._quit:
                    if self._driver == _LOOP_THREAD:
                        break
                    idle = time.monotonic() - self._idle_since
                    if self._driver is None and not self._borrowing and idle >= _IDLE_GRACE:
                        self._driver = _LOOP_THREAD
                        break
                    self._baton.wait(_IDLE_GRACE)
                else:
                    return
            self._loop.run_forever()
            with self._baton:
                if self._dependents and not self._borrowing and not self._quit:
                    # A stop nobody waits for (a reader's, who then found the loop depended
                    # on): whoever depends on the loop is still waiting, so it goes on.
                    continue
                self._driver = None
                self._idle_since = time.monotonic()
                self._baton.notify_all()

    def close(self) -> None:
        """Close the connection, stop the loop and join its thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception), self._depending():
            asyncio.run_coroutine_threadsafe(self._async.aclose(), self._loop).result(5)
        with contextlib.suppress(Exception), self._depending():  # verification's workers
            asyncio.run_coroutine_threadsafe(
                self._loop.shutdown_default_executor(), self._loop
            ).result(5)
        with self._baton:
            # A reader still running the loop returns it when its read ends (the close
            # above failed its stream).
            self._baton.wait_for(lambda: self._driver in (None, _LOOP_THREAD), 5)
            self._quit = True
            if self._driver == _LOOP_THREAD:
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._baton.notify_all()
        self._thread.join(5)
        if not self._thread.is_alive() and not self._loop.is_running():
            self._loop.close()
