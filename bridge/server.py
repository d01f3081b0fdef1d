"""The shroud-bridge server: an asyncio WebSocket endpoint, one shroud/1 session per connection.

:class:`BridgeServer` wires the pieces together at start, in this order (after making sure
the file descriptor limit covers its bounds, ``bridge.descriptors``):

1. the quote provider (``bridge.providers``) and the measured configuration: the image digest
   and configuration hash are extended into RTMR3 *before* the first connection is accepted,
   so every quote reproduces from the served runtime log; the log is kept in the state
   directory (locked while this bridge runs) because RTMR3 outlives the process;
2. with the simulated provider, the development policy for clients (``--dev-policy-out``);
3. the evidence provider (``bridge.evidence``), which from then on is the only holder of the
   quote provider; the channel core calls it with the REPORTDATA it computed (no oracle);
   then this process's attested key (``bridge.attested_key``): the first key and its quote are
   made before listening (a failure fails the start), later ones by a background rotation;
4. a fresh per-process usage-signing key (ECDSA P-256, never written anywhere; its public key
   is in every BridgeHello, so the attested key's signature, or a fresh quote's REPORTDATA,
   vouches for it: docs/protocol.md section 7.3);
5. the upstream client (or the built-in demo model) and the WebSocket listener:
   permessage-deflate off (compression before encryption leaks lengths), ``max_size`` one
   maximal shroud/1 record (checked by ``websockets`` before anything is decoded), keepalive
   pings, and a plain-HTTP ``GET /healthz`` on the same port; Prometheus ``/metrics`` on the
   separate, loopback-by-default ``metrics_listen`` address.

Graceful shutdown (:meth:`BridgeServer.shutdown`): refuse new connections (503, and 503 on
``/healthz``, while still listening so that health checks see the drain), let each session
finish its in-flight streams up to the grace period (new requests get 503), send the
authenticated CLOSE, cancel whatever is left, then stop listening.

It deliberately does not parse flags or install signal handlers (``bridge.cli`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

from cryptography.hazmat.primitives.asymmetric import ec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from bridge.admission import Admission, AdmissionTicket, HandshakeSlots
from bridge.attested_key import AttestedKeyHolder
from bridge.buffer_budget import STREAM_REFUSALS, BufferBudget
from bridge.client_address import ClientAddresses
from bridge.config import BridgeConfig, HostPort, startup_warnings
from bridge.demo_upstream import DemoUpstream
from bridge.descriptors import ensure_descriptors
from bridge.dispatch import api_key_digests
from bridge.evidence import BridgeEvidence, collateral_supplier_for
from bridge.fresh_quotes import FreshQuoteLimiter
from bridge.listener import Gate, connection_class
from bridge.log_throttle import PEER_EVENTS
from bridge.metrics import BridgeMetrics
from bridge.overload import OverloadReport
from bridge.providers import QuoteProvider, create_provider
from bridge.providers.dev_policy import dev_policy_text, write_policy_file
from bridge.providers.measure import MeasuredConfiguration, measure_bridge
from bridge.providers.runtime_store import RuntimeLogStore
from bridge.providers.simulated import SimulatedQuoteProvider
from bridge.session import Session, SessionContext
from bridge.upstream import Upstream
from shroud_sdk.channel.connection import BridgeConfig as ChannelConfig
from shroud_sdk.channel.constants import (
    IMPLEMENTED_SUITES,
    MAX_CLIENT_HELLO_LEN,
    MAX_CONCURRENT_STREAMS,
    MAX_RECORD_LEN,
    SIMULATED_SUITES,
)

_log = logging.getLogger(__name__)

HEALTH_PATH: Final = "/healthz"
# The largest WebSocket message a client may send: one maximal record (or the ClientHello).
MAX_MESSAGE_SIZE: Final = max(MAX_RECORD_LEN, MAX_CLIENT_HELLO_LEN)
# Keepalive: pings (every ``config.ping_interval``) detect dead peers and keep proxies' idle
# timers running, without touching the channel (they are WebSocket control frames, outside the
# encrypted records).
PING_TIMEOUT: Final = 20.0
CLOSE_TIMEOUT: Final = 5.0
# Messages websockets may queue per connection before it stops reading the socket: bounds the
# memory a connection holds while its session is busy (each message is at most one record).
MAX_QUEUED_MESSAGES: Final = 4


class ListenError(OSError):
    """A listener could not bind; the message names the address and the flag that set it."""


@contextlib.contextmanager
def naming_the_listener(address: HostPort, flag: str) -> Iterator[None]:
    """Turn a bind error into a :class:`ListenError` naming ``address`` and ``flag``."""
    try:
        yield
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = f"; another process (another bridge?) holds it: choose another with {flag}"
            if flag == "--metrics-listen":
                hint += " or turn metrics off with --metrics-listen off"
        reason = exc.strerror or str(exc)
        raise ListenError(
            exc.errno, f"cannot listen on {address} ({flag}): {reason}{hint}"
        ) from exc


def listening_socket(address: HostPort) -> socket.socket:
    """A non-blocking socket listening on ``address`` (``--listen``), for workers to share."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with naming_the_listener(address, "--listen"):
        sock = socket.create_server((address.host, address.port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


@dataclass
class PreparedBridge:
    """What happens once per bridge, before any worker serves (:func:`prepare_bridge`)."""

    provider: QuoteProvider
    measured: MeasuredConfiguration
    state: RuntimeLogStore | None  # held (locked) by the process that measured
    dev_policy: str | None  # the development policy to write once listening, if asked for


def prepare_bridge(config: BridgeConfig, provider: QuoteProvider | None = None) -> PreparedBridge:
    """Create the quote provider, extend RTMR3 with the measured configuration, draft the
    development policy. Blocking; run once per bridge (by the parent, before any worker
    exists: RTMR3 is one register per TD, and every worker serves the same runtime log)."""
    if provider is None:
        provider = create_provider(config)
    state_dir = config.effective_state_dir
    state = RuntimeLogStore.open(state_dir) if state_dir is not None else None
    try:
        measured = measure_bridge(provider, config, state)
        dev_policy: str | None = None
        if config.dev_policy_out is not None:
            if not isinstance(provider, SimulatedQuoteProvider):
                raise ValueError("--dev-policy-out needs the simulated quote provider")
            dev_policy = dev_policy_text(provider, measured)
    except BaseException:
        if state is not None:
            state.close()
        raise
    for warning in startup_warnings(config):
        _log.warning("%s", warning)
    return PreparedBridge(provider, measured, state, dev_policy)


class BridgeServer:
    """One bridge: ``await start()``, then ``await shutdown()``.

    ``quote_provider``, ``usage_signing_key`` and ``upstream_base_url`` replace what ``config``
    would create (tests inject slow or counting providers, and fake upstreams); ``suites``
    narrows the suites announced (tests play a bridge that predates the hybrid suite).
    A worker (``bridge.workers``) passes ``prepared`` (measured by its parent, whose state lock
    it does not own) and ``sock``, the listening socket its parent bound.
    """

    def __init__(
        self,
        config: BridgeConfig,
        *,
        quote_provider: QuoteProvider | None = None,
        usage_signing_key: ec.EllipticCurvePrivateKey | None = None,
        upstream_base_url: str | None = None,
        suites: frozenset[int] | None = None,
        prepared: PreparedBridge | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.config = config
        self._prepared = prepared
        self._sock = sock
        self._only_suites = suites
        self._injected_provider = quote_provider
        self._usage_key = usage_signing_key
        self._upstream_base_url = upstream_base_url
        self._server: Server | None = None
        self._demo: DemoUpstream | None = None
        self._upstream: Upstream | None = None
        self._metrics_server: tuple[WSGIServer, threading.Thread] | None = None
        self._state: RuntimeLogStore | None = None
        self._sessions: set[Session] = set()
        self._attested_key: AttestedKeyHolder | None = None
        self._gate: Gate | None = None
        self._overload: OverloadReport | None = None
        self._closing = False
        self.metrics: BridgeMetrics | None = None

    def __repr__(self) -> str:
        return f"BridgeServer(listen={self.config.listen}, sessions={len(self._sessions)})"

    @property
    def port(self) -> int:
        """The WebSocket port actually bound (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the bridge is not started")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/`` of the listener."""
        host = self.config.listen.host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.port}/"

    async def start(self) -> None:
        """Measure (unless ``prepared`` was given), prepare evidence, start the upstream and
        listeners; see module docstring."""
        config = self.config
        # Before anything is measured or bound: bounds that do not fit the descriptor limit
        # fail the start, not the first flood.
        ensure_descriptors(config)
        prepared = self._prepared
        if prepared is None:
            prepared = await asyncio.to_thread(prepare_bridge, config, self._injected_provider)
            self._state = prepared.state  # this process measured: it holds the state lock
        self._prepared = None
        provider, measured = prepared.provider, prepared.measured
        dev_policy = prepared.dev_policy  # written once the listeners are bound

        metrics = BridgeMetrics(
            config.allowed_paths,
            config.match_allowed_path,
            provider=provider.kind.value,
            simulated=provider.simulated,
        )
        self.metrics = metrics
        evidence = BridgeEvidence(
            provider,
            measured.runtime_log,
            collateral=collateral_supplier_for(config, provider),
            on_quote=metrics.quote_generated,
        )
        # A simulated TEE is announced only as such (classical and hybrid twins); hardware gets
        # every real suite. The client's offer order decides: SDK clients offer hybrid first.
        suites = SIMULATED_SUITES if provider.simulated else IMPLEMENTED_SUITES - SIMULATED_SUITES
        if self._only_suites is not None:
            suites = suites & self._only_suites
        # From here on only `evidence` holds the provider (the "no oracle" rule).
        del provider, prepared
        self._injected_provider = None
        attested_key = AttestedKeyHolder(
            evidence, config.evidence_lifetime, on_rotation=metrics.rotation
        )
        await attested_key.start()
        self._attested_key = attested_key
        usage_key = self._usage_key or ec.generate_private_key(ec.SECP256R1())
        self._usage_key = None
        channel = ChannelConfig(
            audience=config.effective_audience,
            evidence_provider=evidence,
            key_evidence=attested_key,
            usage_signing_key=usage_key,
            suites=frozenset(suites),
            # The core's own cap only guards against a broken peer (a violation is fatal);
            # the bridge's per-session cap answers 429 well before it.
            max_concurrent_streams=max(MAX_CONCURRENT_STREAMS, config.max_streams_per_session),
        )
        base_url = self._upstream_base_url
        if base_url is None and config.upstream_is_demo:
            self._demo = DemoUpstream()
            await self._demo.start()
            base_url = self._demo.base_url
            _log.warning("serving the built-in DEMO model (not a language model)")
        self._upstream = Upstream(
            base_url or config.upstream,
            api_key=(
                config.upstream_api_key.get_secret_value()
                if config.upstream_api_key is not None
                else None
            ),
            connect_timeout=config.upstream_connect_timeout,
            read_timeout=config.upstream_read_timeout,
            # Every stream the caps admit gets its upstream connection without queueing.
            pool_size=config.max_streams,
        )
        report = self._overload = OverloadReport(metrics)
        context = SessionContext(
            config=config,
            channel=channel,
            upstream=self._upstream,
            metrics=metrics,
            handshake_slots=HandshakeSlots(
                config.max_concurrent_handshakes,
                per_source=max(1, config.max_concurrent_handshakes // 2),
            ),
            api_key_digests=api_key_digests(k.get_secret_value() for k in config.api_keys),
            fresh_quotes=FreshQuoteLimiter(
                config.fresh_quotes_per_minute, config.fresh_quote_burst
            ),
            budget=BufferBudget(
                config.max_buffered_bytes,
                source_share=config.max_source_buffered_bytes,
                on_change=metrics.buffered_request_bytes.set,
            ),
            overload=report,
            streams=BufferBudget(
                config.max_streams,
                source_share=config.max_source_streams,
                refusals=STREAM_REFUSALS,
            ),
        )
        self._context = context
        self._gate = Gate(
            Admission(
                max_connections=config.max_sessions,
                max_connections_per_source=config.max_connections_per_source,
                handshakes_per_second=config.max_handshakes_per_source,
            ),
            ClientAddresses(config.trusted_proxy_networks, proxy_protocol=config.proxy_protocol),
            report,
            metrics,
        )
        with naming_the_listener(config.listen, "--listen"):
            where: dict[str, object] = (
                {"sock": self._sock}
                if self._sock is not None
                else {"host": config.listen.host, "port": config.listen.port}
            )
            self._server = await serve(
                self._handle,
                **where,  # type: ignore[arg-type]
                create_connection=connection_class(self._gate),
                process_request=self._process_request,
                compression=None,
                max_size=MAX_MESSAGE_SIZE,
                max_queue=MAX_QUEUED_MESSAGES,
                open_timeout=config.handshake_timeout,
                ping_interval=config.ping_interval,
                ping_timeout=PING_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
                server_header=None,
            )
        if config.metrics_listen is not None:
            with naming_the_listener(config.metrics_listen, "--metrics-listen"):
                self._metrics_server = metrics.serve(
                    config.metrics_listen.host, config.metrics_listen.port
                )
        # Only now: a bridge that could not bind leaves no policy behind for a client to load.
        if dev_policy is not None and config.dev_policy_out is not None:
            path = await asyncio.to_thread(write_policy_file, config.dev_policy_out, dev_policy)
            _log.warning("wrote DEVELOPMENT policy for this simulated bridge to %s", path)
        _log.info(
            "shroud-bridge listening on %s (audience %r, upstream %s)",
            self.url,
            config.effective_audience,
            "demo" if config.upstream_is_demo else config.upstream,
        )

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.partition("?")[0] == HEALTH_PATH:
            if self._closing:
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if self._closing:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        assert self._gate is not None  # set before the listener starts
        return self._gate.check_upgrade(connection, request)  # None: go on with the upgrade

    async def _handle(self, websocket: ServerConnection) -> None:
        ticket = getattr(websocket, "ticket", None)
        source = ticket.source if isinstance(ticket, AdmissionTicket) else "unknown"
        session = Session(websocket, self._context, source)
        self._sessions.add(session)
        try:
            if self._closing:
                session.begin_shutdown()
            await session.run()
        finally:
            self._sessions.discard(session)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; let in-flight streams finish for ``grace`` seconds; then close.

        ``grace`` defaults to ``config.shutdown_grace``.
        """
        grace = self.config.shutdown_grace if grace is None else grace
        # The listener stays open while sessions drain: /healthz answers 503 (a load balancer
        # sees the bridge draining, not gone) and new upgrades are refused with 503.
        self._closing = True
        sessions = list(self._sessions)
        for session in sessions:
            session.begin_shutdown()
        waits = [asyncio.create_task(s.finished.wait()) for s in sessions]
        if waits:
            _, still = await asyncio.wait(waits, timeout=grace)
            for task in still:
                task.cancel()
        leftover = [s for s in sessions if not s.finished.is_set()]
        if leftover:
            _log.warning("shutdown grace over: aborting %d session(s)", len(leftover))
            # Each abort sends CLOSE within the send timeout; together they get no longer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.send_timeout):
                    await asyncio.gather(*(s.abort() for s in leftover), return_exceptions=True)
        if self._server is not None:
            self._server.close(close_connections=False)
            # Whatever is still open (a client that never read, a connection still in its
            # upgrade) is dropped: shutdown ends within grace + send timeout, whatever clients do.
            if self._gate is not None:
                self._gate.abort_all()
            await self._server.wait_closed()
            self._server = None
        if self._attested_key is not None:
            await self._attested_key.stop()
        if self._upstream is not None:
            await self._upstream.aclose()
        if self._demo is not None:
            await self._demo.close()
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._metrics_server = None
        if self._state is not None:
            self._state.close()
            self._state = None
        # The counts of lines the throttles held back since their last summary.
        if self._overload is not None:
            self._overload.flush()
        PEER_EVENTS.flush()
        _log.info("shroud-bridge stopped")
