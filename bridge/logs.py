"""What the bridge logs, and what it never logs.

The bridge decrypts requests, so its log must not become the leak the channel prevents: no
request path or query string, no body, no key, at any level (DEBUG included), unless the
operator asks for an access log with ``--log-request-paths`` (paths and queries only; bodies
never). Two things would otherwise break that:

- the HTTP client libraries that see decrypted request URLs: ``aiohttp`` (the upstream client
  before ``bridge.upstream``'s own, which logs nothing; still capped, should a library bring
  it in) and the ``httpx`` family that the SDK and the collateral
  fetcher bring into the process (``httpx2`` logs ``HTTP Request: POST http://.../v1/...?...``
  at INFO, ``httpcore`` traces requests at DEBUG). :func:`configure` caps them all at WARNING
  unless ``log_request_paths`` is set;
- exception messages, which may quote what failed to parse (a ``KeyError`` names the key, a
  decode error quotes bytes). :func:`log_unexpected` logs the exception's type and where it
  happened, never its message.

The bridge's own log lines are written to name only fixed text, counts, stream ids, check
names and client addresses; the ones a peer can trigger at will are rate-limited per kind
(``bridge.log_throttle``).
"""

from __future__ import annotations

import logging
import traceback
from typing import Final

from bridge.log_throttle import PEER_EVENTS, LogKind

# Loggers of libraries that see decrypted request URLs.
HTTP_CLIENT_LOGGERS: Final = ("aiohttp.client", "httpx2", "httpx", "httpcore", "httpcore2", "hpack")


# websockets logs "connection open/rejected/closed" at INFO for every connection: under a
# connection flood that is a flood of log lines (the bridge reports refusals itself, throttled).
PER_CONNECTION_LOGGERS: Final = ("websockets.server",)


def configure(*, log_request_paths: bool) -> None:
    """Cap the HTTP client libraries' and per-connection loggers (see module docstring)."""
    level = logging.NOTSET if log_request_paths else logging.WARNING
    for name in HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for name in PER_CONNECTION_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def log_unexpected(
    logger: logging.Logger, what: str, exc: BaseException, kind: LogKind | None = None
) -> None:
    """Log an unexpected exception at ERROR by type and code location only (no message).

    With ``kind`` (a failure a peer may be able to repeat at will), through
    :data:`bridge.log_throttle.PEER_EVENTS`.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(
        f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in frames[::-1][:8]
    )
    args = (what, type(exc).__name__, where or "unknown location")
    if kind is None:
        logger.error("%s: %s at %s", *args)
    else:
        PEER_EVENTS.log(logger, kind, logging.ERROR, "%s: %s at %s", *args)
