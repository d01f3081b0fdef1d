"""Upstream streaming: one admitted request sent to the upstream, its answer relayed as records.

:func:`relay` sends the (already checked) request through ``bridge.upstream`` and turns the
answer into the stream's records: HEADERS with the upstream's status and filtered headers, then
one DATA record per upstream read (``Upstream`` hands over everything one socket read brought,
and ``UsageMeter`` keeps those bytes in one piece), then END carrying the metered usage, which
the channel core signs. Records are sealed by the core and sent at once (``Outbox.flush``):
nothing is held back waiting for more data, so a token is never delayed behind a later read.
A chunk larger than one record's content is split by the core (``send_data``), so the record
size bounds the merging.

Failures: before the upstream's headers, the client gets the bridge's own 502/504; after them,
RESET (never a silent truncation). Cancellation (the client reset the stream or left) leaves
the upstream context, which closes the upstream connection.

Deliberately not here: whether the request may be forwarded (``bridge.dispatch``), the
WebSocket and the order of sends (``bridge.session``), HTTP (``bridge.upstream``).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from bridge import errors
from bridge.metrics import BridgeMetrics, ErrorKind, StreamOutcome
from bridge.upstream import Upstream, UpstreamError, UpstreamRequest, UpstreamTimeoutError
from bridge.usage_meter import UsageMeter
from shroud_sdk.channel.connection import BridgeConnection
from shroud_sdk.channel.constants import RESET_INTERNAL_ERROR
from shroud_sdk.channel.events import RequestReceived
from shroud_sdk.errors import ChannelError

_log = logging.getLogger(__name__)


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
            metrics.upstream_responded(request.path, time.perf_counter() - started, response.status)
            conn.send_response(sid, response.status, response.headers)
            headers_sent = True
            content_type = next((v for k, v in response.headers if k == "content-type"), "")
            meter = UsageMeter(
                sse=content_type.startswith("text/event-stream"),
                strip_usage_chunk=usage_injected,
            )
            await outbox.flush()
            async for chunk in response.chunks():
                out = meter.feed(chunk)
                if out:
                    conn.send_data(sid, out)
                    await outbox.flush()
            tail = meter.finish()
            if tail:
                conn.send_data(sid, tail)
            conn.end_stream(sid, meter.usage)
            await outbox.flush()
            return StreamOutcome.COMPLETED
    except UpstreamError as exc:
        timeout = isinstance(exc, UpstreamTimeoutError)
        metrics.error(ErrorKind.UPSTREAM_TIMEOUT if timeout else ErrorKind.UPSTREAM_CONNECT)
        _log.warning("upstream request failed: %s", exc)
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
