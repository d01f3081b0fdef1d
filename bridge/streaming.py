"""Upstream streaming: one admitted request sent to the upstream, its answer relayed as records.

:func:`relay` sends the (already checked) request through ``bridge.upstream`` and turns the
answer into the stream's records: HEADERS with the upstream's status and filtered headers, then
one DATA record per upstream read (``Upstream`` hands over everything one socket read brought,
and ``UsageMeter`` keeps those bytes in one piece), then END carrying the metered usage, which
the channel core signs. Records are sealed by the core and sent at once: nothing is held back
waiting for more data, so a token is never delayed behind a later read. A chunk larger than one
record's content is split by the core (``send_data``), so the record size bounds the merging.

The token path runs in the upstream connection's read callback (``UpstreamResponse.relay_body``):
the read's body goes through ``UsageMeter``, is sealed by the core and written by
``Outbox.send_now`` before the callback returns, with no task woken. When the WebSocket cannot
take more without waiting, the upstream is no longer read until ``Outbox.drain`` (with the send
deadline) let it: what the bridge holds for a slow client stays bounded, and the records keep
their order (the core's ``data_to_send`` is the one queue, and each write sends all of it).

Failures: before the upstream's headers, the client gets the bridge's own 502/504 (502 too
for headers the channel cannot carry: too many, too long); after them,
RESET (never a silent truncation). Cancellation (the client reset the stream or left) leaves
the upstream context, which closes the upstream connection.

Deliberately not here: whether the request may be forwarded (``bridge.dispatch``), the
WebSocket and the order of sends (``bridge.session``), HTTP (``bridge.upstream``).
"""

from __future__ import annotations

import logging
import time
from typing import Final, Protocol

from bridge import errors
from bridge.log_throttle import PEER_EVENTS, LogKind
from bridge.metrics import BridgeMetrics, ErrorKind, StreamOutcome
from bridge.upstream import (
    Upstream,
    UpstreamConnectError,
    UpstreamError,
    UpstreamRequest,
    UpstreamTimeoutError,
)
from bridge.usage_meter import UsageMeter
from shroud_sdk.channel.connection import BridgeConnection
from shroud_sdk.channel.constants import RESET_INTERNAL_ERROR
from shroud_sdk.channel.events import RequestReceived
from shroud_sdk.errors import ChannelError, LocalProtocolError

_log = logging.getLogger(__name__)

# The core's refusals of response headers it cannot carry (``fields.check_headers``, and a
# HEADERS record past the largest record).
_UNCARRIABLE_HEADERS: Final = frozenset({"headers", "record-size"})


class Outbox(Protocol):
    """What the streaming layer needs of the channel shell: the core to seal records with,
    and a way to send what it sealed, in order."""

    @property
    def conn(self) -> BridgeConnection:
        """The session's channel core."""
        ...

    async def flush(self) -> None:
        """Send every record the core sealed, in order (raises when the connection ended)."""
        ...

    def send_now(self) -> bool:
        """Write every record the core sealed, in order, without waiting, if the connection is
        open; True when the connection can take more at once, False when ``drain`` must run
        before the next write (the socket is full, or the connection is ending)."""
        ...

    async def drain(self) -> None:
        """Wait until the connection can take more: what ``send_now`` could not write is
        sent; raises when the connection ended or the send deadline passed."""
        ...

    def abandon(self, error: ChannelError) -> None:
        """The core cannot send on this connection any more (``error``): end the connection,
        so that the client sees it end instead of waiting for answers."""
        ...


async def relay(
    outbox: Outbox,
    upstream: Upstream,
    metrics: BridgeMetrics,
    request: RequestReceived,
    body: bytes,
    *,
    usage_injected: bool,
) -> StreamOutcome:
    """Forward ``request`` with ``body``; stream the answer back on the request's stream.

    ``usage_injected``: the bridge asked the upstream for a usage chunk, which is read and
    dropped. Returns how the stream ended; raises what the connection raises when it ends.
    """
    sid = request.stream_id
    conn = outbox.conn
    upstream_request = UpstreamRequest(request.method, request.path, request.headers, body)
    del body
    started = time.perf_counter()
    headers_sent = False
    try:
        async with upstream.send(upstream_request) as response:
            try:
                conn.send_response(sid, response.status, response.headers)
            except LocalProtocolError as exc:
                # Too many headers, one too long, or all of them past one record: nothing was
                # sealed, and an upstream the channel cannot carry is a broken upstream.
                if exc.check not in _UNCARRIABLE_HEADERS:
                    raise
                raise UpstreamConnectError(
                    "headers the channel cannot carry", after_headers=False
                ) from None
            metrics.upstream_responded(request.path, time.perf_counter() - started, response.status)
            headers_sent = True
            content_type = next((v for k, v in response.headers if k == "content-type"), "")
            meter = UsageMeter(
                sse=content_type.startswith("text/event-stream"),
                strip_usage_chunk=usage_injected,
            )
            await outbox.flush()
            feed = meter.feed
            send_data = conn.send_data
            send_now = outbox.send_now

            def on_chunk(chunk: bytes) -> bool:
                # In the upstream connection's read callback: metered, sealed and written
                # before it returns (the token's whole path, no task in between).
                out = feed(chunk)
                if out:
                    send_data(sid, out)
                    return send_now()
                return True

            await response.relay_body(on_chunk, outbox.drain)
            tail = meter.finish()
            if tail:
                conn.send_data(sid, tail)
            conn.end_stream(sid, meter.usage)
            await outbox.flush()
            return StreamOutcome.COMPLETED
    except UpstreamError as exc:
        timeout = isinstance(exc, UpstreamTimeoutError)
        metrics.error(ErrorKind.UPSTREAM_TIMEOUT if timeout else ErrorKind.UPSTREAM_CONNECT)
        PEER_EVENTS.log(
            _log, LogKind.UPSTREAM_FAILED, logging.WARNING, "upstream request failed: %s", exc
        )
        if headers_sent:
            # Never a silent truncation: the client sees RESET instead of END.
            conn.reset_stream(sid, RESET_INTERNAL_ERROR, "upstream failed mid-response")
        else:
            answer = errors.upstream_timeout() if timeout else errors.upstream_unavailable()
            conn.send_response(sid, answer.status, answer.headers)
            conn.send_data(sid, answer.body)
            conn.end_stream(sid)
            metrics.response_sent(request.path, answer.status)
        await outbox.flush()
        return StreamOutcome.UPSTREAM_ERROR
