"""The bridge's accepted connections before they become sessions: PROXY header, admission and
per-source checks, refused as cheaply as possible.

:func:`connection_class` gives ``websockets.serve`` (``create_connection``) a
``ServerConnection`` subclass bound to one :class:`Gate`. Each connection, in order:

1. **at TCP accept**, if its peer is a trusted proxy and ``proxy_protocol`` is on, waits for
   the PROXY v2 header (``bridge.proxy_protocol``) before anything reaches the HTTP parser
   (a missing or malformed header drops the connection); the header's source, or else the
   peer, is the connection's address;
2. is **admitted** (``bridge.admission``): the global cap on open connections, and the
   per-source cap unless the address is itself a trusted proxy. A refused connection gets a
   fixed HTTP 503/429 answer with ``Retry-After`` at once, without parsing anything it sends,
   and is closed when the client closes or after :data:`REFUSAL_LINGER` seconds (at once when
   :data:`MAX_LINGERING_REFUSALS` refused connections already linger: a connection flood must
   not turn the linger into a pile of descriptors);
3. reads at most :data:`MAX_UPGRADE_REQUEST` bytes of upgrade request (more: dropped);
4. **at the WebSocket upgrade** (:meth:`Gate.check_upgrade`, from the server's
   ``process_request``), learns the client behind a trusted proxy from ``X-Forwarded-For``
   (``bridge.client_address``) and counts it there, then spends one of the source's
   handshakes. Refusals are HTTP 429 with ``Retry-After``;
5. gives its places back when the TCP connection ends, whatever happened.

The refusal wording is ``shroud_sdk.refusals``; logging and counting ``bridge.overload``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State

from bridge import errors
from bridge.admission import Admission, AdmissionTicket, source_key
from bridge.client_address import FORWARDED_FOR_HEADER, ClientAddresses
from bridge.metrics import BridgeMetrics
from bridge.overload import OverloadReport
from bridge.proxy_protocol import MAX_HEADER_LEN, ProxyHeaderError, parse
from shroud_sdk.refusals import Overload

# How long a refused connection may stay open for its client to read the answer.
REFUSAL_LINGER: Final = 1.0
# Refused connections that may linger at once; beyond, a refusal is closed as soon as written
# (its client may then see a reset instead of the answer). Part of bridge.descriptors' count.
MAX_LINGERING_REFUSALS: Final = 256
# The largest WebSocket upgrade request read (nginx's default header buffers hold 32 KiB);
# a connection sending more before its upgrade completes is dropped.
MAX_UPGRADE_REQUEST: Final = 32 * 1024
_REASONS: Final = {429: "Too Many Requests", 503: "Service Unavailable"}


def refusal_bytes(overload: Overload) -> bytes:
    """A complete HTTP/1.1 response refusing a connection (sent before reading its request)."""
    answer = errors.overloaded(overload)
    head = [f"HTTP/1.1 {answer.status} {_REASONS[answer.status]}"]
    head += [f"{name}: {value}" for name, value in answer.headers]
    head += ["connection: close", "", ""]
    return "\r\n".join(head).encode("ascii") + answer.body


class Gate:
    """What every accepted connection of one server shares (see the module docstring)."""

    def __init__(
        self,
        admission: Admission,
        addresses: ClientAddresses,
        report: OverloadReport,
        metrics: BridgeMetrics,
    ) -> None:
        self.admission = admission
        self.addresses = addresses
        self.report = report
        self.metrics = metrics
        self.connections: set[AdmittedConnection] = set()  # at most max_sessions + refused
        self.lingering = 0  # refused connections waiting for their client to read the answer

    def abort_all(self) -> None:
        """Drop every connection still open (the end of a shutdown)."""
        for connection in list(self.connections):
            connection.transport.abort()

    def opened(self, address: str) -> AdmissionTicket | Overload:
        """Admit a TCP connection whose address is ``address``, or say why not."""
        trusted = self.addresses.is_trusted(address)
        result = self.admission.admit(source_key(address), count_source=not trusted)
        if isinstance(result, Overload):
            self.report.refused(result, source_key(address))
        self.metrics.connections_open.set(self.admission.open_connections)
        return result

    def closed(self, ticket: AdmissionTicket) -> None:
        """A TCP connection ended."""
        ticket.release()
        self.metrics.connections_open.set(self.admission.open_connections)

    def check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        """Per-source checks at the WebSocket upgrade; a 429 response, or None to go on."""
        if not isinstance(connection, AdmittedConnection) or connection.ticket is None:
            raise RuntimeError("a connection reached the upgrade without passing the gate")
        ticket = connection.ticket
        client = self.addresses.forwarded_client(
            connection.client_address, request.headers.get_all(FORWARDED_FOR_HEADER)
        )
        source = source_key(client)
        refusal = ticket.assign_source(source)
        if refusal is None:
            refusal = self.admission.take_handshake(source)
        if refusal is None:
            return None
        self.report.refused(refusal, source)
        return _refusal_response(connection, refusal)


def _refusal_response(connection: ServerConnection, overload: Overload) -> Response:
    answer = errors.overloaded(overload)
    response = connection.respond(answer.status, "")
    headers = Headers()
    for name, value in answer.headers:
        headers[name] = value
    response.headers = headers
    response.body = answer.body
    return response


class AdmittedConnection(ServerConnection):
    """A ``ServerConnection`` that passes :class:`Gate` before websockets sees any byte."""

    gate: ClassVar[Gate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ticket: AdmissionTicket | None = None
        self.client_address = ""
        self._proxy_header: bytearray | None = None
        self._refused = False
        self._lingering = False
        self._upgrade_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.gate.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client_address = str(peer[0]) if isinstance(peer, tuple) else str(peer or "")
        if self.gate.addresses.expects_proxy_header(self.client_address):
            self._proxy_header = bytearray()  # nothing is admitted or parsed before it
        else:
            self._admit()

    def _admit(self) -> None:
        result = self.gate.opened(self.client_address)
        if isinstance(result, Overload):
            self._refuse(result)
        else:
            self.ticket = result

    def _refuse(self, overload: Overload) -> None:
        self._refused = True
        transport = self.transport
        transport.write(refusal_bytes(overload))
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # the client is gone already (it reset the connection)
                transport.abort()
                return
        if self.gate.lingering >= MAX_LINGERING_REFUSALS:
            transport.close()  # after the answer, which the kernel took already
            return
        self.gate.lingering += 1
        self._lingering = True
        self.loop.call_later(REFUSAL_LINGER, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # never parsed: the answer is already on its way
        if self.protocol.state is State.CONNECTING:
            # websockets would accept an upgrade request of up to 128 headers of 8 KiB each;
            # held by up to max_sessions connections, that is not a bound worth the name.
            self._upgrade_bytes += len(data)
            if self._upgrade_bytes > MAX_UPGRADE_REQUEST:
                self.transport.abort()
                return
        if self._proxy_header is not None:
            self._proxy_header += data
            try:
                header = parse(bytes(self._proxy_header[:MAX_HEADER_LEN]))
            except ProxyHeaderError:
                self.transport.abort()
                return
            if header is None:
                return
            data = bytes(self._proxy_header[header.length :])
            self._proxy_header = None
            if header.source is not None:
                self.client_address = header.source
            self._admit()
            if self._refused or not data:
                return
        super().data_received(data)

    def eof_received(self) -> None:
        if self._refused or self._proxy_header is not None:
            return  # returning None lets the transport close
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.connections.discard(self)
        if self._lingering:
            self._lingering = False
            self.gate.lingering -= 1
        if self.ticket is not None:
            self.gate.closed(self.ticket)
            self.ticket = None
        super().connection_lost(exc)


def connection_class(gate: Gate) -> type[AdmittedConnection]:
    """An :class:`AdmittedConnection` subclass bound to ``gate`` (for ``create_connection``)."""
    return type("GatedConnection", (AdmittedConnection,), {"gate": gate})
