"""``shroud-bridge``: parse the configuration, run :class:`bridge.server.BridgeServer` until
SIGTERM or SIGINT, then shut down gracefully.

Exit status: 0 after a clean shutdown, 2 for an invalid configuration (the message names every
bad setting and where it came from), 1 when the bridge cannot start (quote provider missing,
RTMR extension failed, RTMR3 holding measurements that no saved runtime log replays, another
bridge running in the same TD, address in use). Logs go to stderr; they never contain keys,
prompts, completions, request paths or query strings (``bridge.logs``; ``--log-request-paths``
opts in to paths and queries). Only argument handling and process life-cycle live here: with
``--workers`` above 1 the life-cycle is ``bridge.workers``'s (the server modules are imported
only once the mode is chosen: prometheus_client picks its multiprocess mode at import).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from bridge import logs
from bridge.config import BridgeConfig, ConfigError, parse_args

_log = logging.getLogger("bridge")


async def run(config: BridgeConfig) -> int:
    """Start the bridge, wait for SIGTERM/SIGINT, shut down within ``shutdown_grace``."""
    from bridge.providers import QuoteProviderError
    from bridge.server import BridgeServer, ListenError

    server = BridgeServer(config)
    try:
        await server.start()
    except ListenError as exc:  # already names the address and the flag to change
        _log.error("shroud-bridge cannot start: %s", exc.strerror)
        await server.shutdown(grace=0)
        return 1
    except (QuoteProviderError, OSError, ValueError) as exc:
        _log.error("shroud-bridge cannot start: %s: %s", type(exc).__name__, exc)
        await server.shutdown(grace=0)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    _log.info("signal received: shutting down (grace %.1fs)", config.shutdown_grace)
    await server.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shroud-bridge`` console script and ``python -m bridge``."""
    logging.basicConfig(
        level=os.environ.get("SHROUD_BRIDGE_LOG_LEVEL", "INFO").upper()
        if os.environ.get("SHROUD_BRIDGE_LOG_LEVEL", "").upper()
        in {"DEBUG", "INFO", "WARNING", "ERROR"}
        else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    environ = {k: v for k, v in os.environ.items() if k != "SHROUD_BRIDGE_LOG_LEVEL"}
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv, environ)
    except ConfigError as exc:
        print(f"shroud-bridge: {exc}", file=sys.stderr)
        return 2
    logs.configure(log_request_paths=config.log_request_paths)
    _log.info("%s", config.redacted_summary())
    if config.effective_workers > 1:
        from bridge import workers

        return workers.run(config)
    return asyncio.run(run(config))
