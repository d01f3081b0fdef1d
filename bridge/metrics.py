"""Prometheus metrics of the bridge: counts, latencies and errors, never content.

Every label value comes from a closed set fixed here or at start: enums (handshake failure
reasons, error kinds, stream outcomes, record directions), HTTP status codes (or ``other``), and
the *allowlist entries* of the configuration (a request path is reported as the entry that
admitted it, e.g. ``/v1/models/*``, or ``other``). No method takes free text, so no prompt,
completion, key, model name or client-chosen path can reach ``/metrics``. The registry is
private to each :class:`BridgeMetrics`, so tests and several bridges in one process do not mix.

With several workers (``bridge.workers``) prometheus_client runs in its multiprocess mode:
each worker's values live in files of its own, and the parent serves their aggregate
(:func:`bind_aggregate`). Counters and histograms add up; each gauge says how it aggregates
(``multiprocess_mode``): live workers' values summed for what is open now, the earliest
``not_after`` for the evidence expiry (the first key to expire is the one to alert on).

This module does not decide when to count; the server calls the methods.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer

from bridge.log_throttle import PEER_EVENTS, LogKind
from shroud_sdk.refusals import OverloadLimit

OTHER: Final = "other"
_NAMESPACE: Final = "shroud_bridge"
# Quote generation on TDX takes tens of milliseconds to seconds; upstream answers up to minutes.
_QUOTE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_UPSTREAM_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# /metrics is for the operator's scraper, but whoever reaches its port can connect, and the
# server spends a thread and a descriptor on each connection for as long as its client takes.
# So at most MAX_SCRAPES are served at once (more are closed on accept), and every read and
# write of one may take SCRAPE_TIMEOUT seconds. bridge.descriptors counts them in its base.
_log = logging.getLogger(__name__)

MAX_SCRAPES: Final = 8
SCRAPE_TIMEOUT: Final = 10.0


class HandshakeFailure(StrEnum):
    """Why a handshake did not complete (the reason label of failed handshakes)."""

    TIMEOUT = "timeout"
    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNSUPPORTED_SUITE = "unsupported_suite"
    WRONG_AUDIENCE = "wrong_audience"
    DISCLOSURE_REFUSED = "disclosure_refused"
    OVERLOADED = "overloaded"
    QUOTE_FAILED = "quote_failed"
    EVIDENCE_UNAVAILABLE = "evidence_unavailable"  # no valid attested key (rotation failing)
    FRESH_QUOTE_LIMITED = "fresh_quote_limited"  # the source's fresh-quote budget is spent
    CLIENT_CLOSED = "client_closed"
    INTERNAL = "internal"


class ErrorKind(StrEnum):
    """Errors outside the handshake (the kind label of ``errors_total``)."""

    RECORD_AUTH = "record_auth"  # an AEAD record failed authentication: connection closed
    PROTOCOL = "protocol"
    PATH_NOT_ALLOWED = "path_not_allowed"
    METHOD_NOT_ALLOWED = "method_not_allowed"  # TRACE or CONNECT: never forwarded
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_STREAMS = "too_many_streams"
    DISCLOSURE_MISMATCH = "disclosure_mismatch"
    IDLE_TIMEOUT = "idle_timeout"
    SEND_TIMEOUT = "send_timeout"  # a client did not read in time: connection aborted
    REQUEST_BODY_TIMEOUT = "request_body_timeout"
    INVALID_BODY = (
        "invalid_body"  # a JSON body too deep, with duplicate keys or too many containers: 400
    )
    UPSTREAM_CONNECT = "upstream_connect"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    INTERNAL = "internal"


class QuotePurpose(StrEnum):
    """What a quote was made for (docs/protocol.md section 3.6)."""

    ATTESTED_KEY = "attested_key"  # binds a rotation's attested key and window
    FRESH = "fresh"  # binds one handshake


class RotationResult(StrEnum):
    """How an attested-key rotation ended."""

    OK = "ok"
    FAILED = "failed"


class StreamOutcome(StrEnum):
    """How a request stream ended."""

    COMPLETED = "completed"
    CLIENT_RESET = "client_reset"
    UPSTREAM_ERROR = "upstream_error"
    REFUSED = "refused"


class Direction(StrEnum):
    """Record direction, as the channel names it."""

    CLIENT_TO_BRIDGE = "c2b"
    BRIDGE_TO_CLIENT = "b2c"


def status_label(status: int) -> str:
    """An HTTP status as a label: the code for 100-599, else ``other``."""
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        return str(status)
    return OTHER


class BridgeMetrics:
    """The bridge's metric objects, in a registry of their own.

    ``path_matcher`` maps a request path to the allowlist entry that admits it (or None); it is
    ``BridgeConfig.match_allowed_path`` in the server. Only its answers, checked against
    ``allowed_paths``, become label values.
    """

    def __init__(
        self,
        allowed_paths: Iterable[str],
        path_matcher: Callable[[str], str | None],
        *,
        provider: str,
        simulated: bool,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._allowed = frozenset(allowed_paths)
        self._match = path_matcher
        r = self.registry
        self.info = Gauge(
            f"{_NAMESPACE}_info",
            "Static facts about this bridge (value is always 1).",
            ["quote_provider", "simulated"],
            multiprocess_mode="max",
            registry=r,
        )
        self.info.labels(provider, "true" if simulated else "false").set(1)
        self.handshakes = Counter(
            f"{_NAMESPACE}_handshakes",
            "Handshakes by result and, for failures, reason.",
            ["result", "reason"],
            registry=r,
        )
        self.handshake_seconds = Histogram(
            f"{_NAMESPACE}_handshake_seconds",
            "Time to answer a ClientHello (including a fresh quote, if one was asked for).",
            buckets=_QUOTE_BUCKETS,
            registry=r,
        )
        self.quotes_generated = Counter(
            f"{_NAMESPACE}_quotes_generated",
            "Quotes obtained from the provider, by purpose (attested_key or fresh).",
            ["purpose"],
            registry=r,
        )
        self.quote_generation_seconds = Histogram(
            f"{_NAMESPACE}_quote_generation_seconds",
            "Time the quote provider took per quote, by purpose.",
            ["purpose"],
            buckets=_QUOTE_BUCKETS,
            registry=r,
        )
        self.evidence_rotations = Counter(
            f"{_NAMESPACE}_evidence_rotations",
            "Attested-key rotations by result.",
            ["result"],
            registry=r,
        )
        self.evidence_expiry = Gauge(
            f"{_NAMESPACE}_evidence_expiry_timestamp_seconds",
            "not_after (UNIX seconds) of the attested key being served; alert well before it.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.handshakes_in_progress = Gauge(
            f"{_NAMESPACE}_handshakes_in_progress",
            "Handshakes being processed.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.sessions_active = Gauge(
            f"{_NAMESPACE}_sessions_active",
            "Attested connections currently open.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.streams = Counter(
            f"{_NAMESPACE}_streams",
            "Request streams by allowlist entry and outcome.",
            ["path", "outcome"],
            registry=r,
        )
        self.streams_active = Gauge(
            f"{_NAMESPACE}_streams_active",
            "Request streams currently open.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.upstream_seconds = Histogram(
            f"{_NAMESPACE}_upstream_response_seconds",
            "Time from forwarding a request to the upstream's response headers.",
            ["path"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.responses = Counter(
            f"{_NAMESPACE}_responses",
            "Responses sent to clients by allowlist entry and HTTP status.",
            ["path", "status"],
            registry=r,
        )
        self.errors = Counter(
            f"{_NAMESPACE}_errors", "Errors outside the handshake, by kind.", ["kind"], registry=r
        )
        self.records = Counter(
            f"{_NAMESPACE}_records", "Encrypted records by direction.", ["direction"], registry=r
        )
        self.record_bytes = Counter(
            f"{_NAMESPACE}_record_bytes",
            "Encrypted record bytes (padded, on the wire) by direction.",
            ["direction"],
            registry=r,
        )
        self.overload_refusals = Counter(
            f"{_NAMESPACE}_overload_refusals",
            "Work refused because a bound was reached, by limit (docs/deployment.md).",
            ["limit"],
            registry=r,
        )
        self.connections_open = Gauge(
            f"{_NAMESPACE}_connections_open",
            "TCP connections held open, in any state (bounded by max_sessions).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.buffered_request_bytes = Gauge(
            f"{_NAMESPACE}_buffered_request_bytes",
            "Request bytes held, across sessions (bounded by max_buffered_bytes).",
            multiprocess_mode="livesum",
            registry=r,
        )
        # Resolved once: records are counted on the streaming hot path, and a labels() lookup
        # per record costs more than the counting.
        self._record_counters = {
            d: (self.records.labels(d.value), self.record_bytes.labels(d.value)) for d in Direction
        }

    def path_label(self, path: str) -> str:
        """The allowlist entry admitting ``path``, or ``other``; never ``path`` itself."""
        entry = self._match(path)
        return entry if entry is not None and entry in self._allowed else OTHER

    # -- recording ---------------------------------------------------------------------------

    def handshake_ok(self, seconds: float) -> None:
        """A completed handshake, with the time it took to answer."""
        self.handshakes.labels("ok", "").inc()
        self.handshake_seconds.observe(seconds)

    def quote_generated(self, purpose: QuotePurpose, seconds: float) -> None:
        """The provider produced a quote in ``seconds``."""
        label = QuotePurpose(purpose).value
        self.quotes_generated.labels(label).inc()
        self.quote_generation_seconds.labels(label).observe(seconds)

    def rotation(self, result: RotationResult, not_after: int | None = None) -> None:
        """An attested-key rotation ended; ``not_after`` of the key now served, if new."""
        self.evidence_rotations.labels(RotationResult(result).value).inc()
        if not_after is not None:
            self.evidence_expiry.set(not_after)

    def handshake_failed(self, reason: HandshakeFailure) -> None:
        """A failed handshake."""
        self.handshakes.labels("failed", HandshakeFailure(reason).value).inc()

    def stream_finished(self, path: str, outcome: StreamOutcome) -> None:
        """A request stream ended."""
        self.streams.labels(self.path_label(path), StreamOutcome(outcome).value).inc()

    def upstream_responded(self, path: str, seconds: float, status: int) -> None:
        """The upstream answered with response headers after ``seconds``."""
        self.upstream_seconds.labels(self.path_label(path)).observe(seconds)
        self.responses.labels(self.path_label(path), status_label(status)).inc()

    def response_sent(self, path: str, status: int) -> None:
        """The bridge itself answered (401, 404, 413, 429...) without reaching the upstream."""
        self.responses.labels(self.path_label(path), status_label(status)).inc()

    def error(self, kind: ErrorKind) -> None:
        """An error outside the handshake."""
        self.errors.labels(ErrorKind(kind).value).inc()

    def overload_refused(self, limit: OverloadLimit) -> None:
        """One refusal by the bound ``limit``."""
        self.overload_refusals.labels(OverloadLimit(limit).value).inc()

    def record(self, direction: Direction, size: int, count: int = 1) -> None:
        """``count`` encrypted records of ``size`` bytes in all, sent or received."""
        # Once per flush of the streaming path: no Enum conversion (a Direction is its own
        # key; anything else is refused as every label here is), and no increment by zero.
        counters = self._record_counters.get(direction)
        if counters is None:
            counters = self._record_counters[Direction(direction)]
        records, record_bytes = counters
        if count > 0:
            records.inc(count)
        if size > 0:
            record_bytes.inc(size)

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type, for a ``/metrics`` handler."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def serve(self, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
        """Serve ``/metrics`` on ``host:port`` in a daemon thread; ``shutdown()`` the server."""
        server = _bind(host, port, self.registry)
        return server, serve_in_thread(server)


class _QuietHandler(WSGIRequestHandler):
    timeout = SCRAPE_TIMEOUT  # per socket operation (StreamRequestHandler.setup)

    def log_message(self, format: str, *args: object) -> None:
        return None  # no access log: scrapes are not events


class BoundedScrapeServer(ThreadingWSGIServer):
    """A thread per connection, as prometheus_client's, but at most :data:`MAX_SCRAPES` at
    once: a connection beyond them is closed as soon as it is accepted."""

    # socketserver's default backlog of 5 would have a connection flood's SYNs dropped, and a
    # scrape's connect wait for their retransmission (a second and more).
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_SCRAPES)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started: nobody else gives it back
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a whole traceback to stderr for each connection that fails (a
        # peer resetting it mid-request): ~30 lines a connection, at the peer's will.
        exc = sys.exception()
        PEER_EVENTS.log(
            _log,
            LogKind.SCRAPE_FAILED,
            logging.INFO,
            "metrics connection from %s failed: %s",
            client_address[0] if isinstance(client_address, tuple) else "?",
            type(exc).__name__,
        )


def _bind(host: str, port: int, registry: CollectorRegistry) -> WSGIServer:
    class _Server(BoundedScrapeServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return make_server(host, port, make_wsgi_app(registry), _Server, handler_class=_QuietHandler)


def bind_aggregate(host: str, port: int, directory: str) -> WSGIServer:
    """A ``/metrics`` server for the aggregate of every worker's metrics (multiprocess mode
    files in ``directory``), bound to ``host:port`` now and serving nothing until
    :func:`serve_in_thread` (so a parent can bind before it forks, and serve after)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return _bind(host, port, registry)


def serve_in_thread(server: WSGIServer) -> threading.Thread:
    """Serve ``server`` in a daemon thread; ``shutdown()`` and ``server_close()`` it."""
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return thread
