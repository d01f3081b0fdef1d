"""Reporting overload refusals: one metric per refusal, and an INFO log that cannot flood.

Every bound that refuses work (admission, handshake slots, stream caps, the buffered-bytes
budget, shutdown) calls :meth:`OverloadReport.refused`. The counter
``shroud_bridge_overload_refusals_total{limit}`` counts each refusal. The log says at INFO that
a limit was met, with the client address (the operator sees it anyway) but never a path, body
or key; under a flood it logs the first refusal of each limit per ``interval`` and counts the
rest into one summary line (``bridge.log_throttle``, keyed by the limit), so an attacker cannot
turn refusals into a disk or CPU flood.

The refusal itself (which status, which close code) is ``shroud_sdk.refusals``; this module
only reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from bridge.log_throttle import LogThrottle
from bridge.metrics import BridgeMetrics
from shroud_sdk.refusals import Overload

_log = logging.getLogger("bridge.overload")

LOG_INTERVAL: Final = 10.0


class OverloadReport:
    """Counts and logs refusals; see the module docstring."""

    def __init__(
        self,
        metrics: BridgeMetrics,
        *,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._lines = LogThrottle(lines=1, interval=interval, clock=clock)

    def refused(self, overload: Overload, source: str) -> None:
        """Count one refusal and log it unless this limit was logged within ``interval``."""
        limit = overload.limit
        self._metrics.overload_refused(limit)
        self._lines.log(
            _log,
            limit,
            logging.INFO,
            "overload: refused %s from %s (%d): %s",
            limit.value,
            source,
            overload.status,
            limit.explanation,
        )

    def flush(self) -> None:
        """Log the count of refusals not yet reported (at shutdown)."""
        self._lines.flush()
