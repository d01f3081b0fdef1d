"""Quotes from ``attestation.simulated``: a development TD whose quotes prove nothing.

The simulated platform's root CA is generated here, not Intel's, so its quotes verify only for
a client that explicitly trusts that root, and the bridge announces them with the channel's
simulated-mode suite, which production policies reject. Creating this provider logs a loud
warning; it must never be the provider of a deployment that handles real data.

The platform is kept in ``simulated_dir`` when configured (generated on first start, loaded
afterwards, so clients can keep trusting the same root), and is deterministic under
``simulated_seed``.

A real quote is not free: it goes through the host's Quote Generation Service, which takes
11 ms to 1 s (configfs-tsm on a stock kernel polls once per second) and serves one request at
a time per host. ``quote_latency`` models that: each quote holds a per-host lock and sleeps
that long in the calling thread (the bridge never calls a provider on its event loop). The
host is the platform directory when there is one (an ``fcntl`` lock on a file in it, so
several bridge processes on one simulated host queue like real ones), else this process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from attestation.simulated import SimulatedTd, SimulatedTdx, SimulationError
from bridge.config import BridgeConfig, QuoteProviderKind
from bridge.providers.base import (
    FirmwareEventLog,
    ProviderUnavailableError,
    QuoteGenerationError,
    RtmrExtendError,
    check_quote_binds,
    check_report_data,
    check_rtmr_extension,
    check_rtmr_index,
)

_log = logging.getLogger(__name__)

SIMULATED_WARNING = (
    "SIMULATED TDX QUOTE PROVIDER: this bridge runs on NO confidential hardware; its quotes are "
    "signed by a locally generated CA and prove nothing. For development only."
)


# The per-host quote lock inside the platform directory (the simulated QGS queue).
QUOTE_LOCK_FILE: Final = "quote.lock"


class SimulatedQuoteProvider:
    """:class:`~bridge.providers.base.QuoteProvider` over a :class:`SimulatedTd`.

    ``quote_latency`` (seconds) and ``host_dir`` model the quoting service; see the module
    docstring.
    """

    def __init__(
        self, td: SimulatedTd, *, quote_latency: float = 0.0, host_dir: Path | None = None
    ) -> None:
        if not 0 <= quote_latency <= 60:
            raise ValueError("quote_latency must be between 0 and 60 seconds")
        self._td = td
        self._latency = quote_latency
        self._host_lock_path = None if host_dir is None else Path(host_dir) / QUOTE_LOCK_FILE
        self._process_lock = threading.Lock()
        _log.warning(SIMULATED_WARNING)

    @classmethod
    def from_config(cls, config: BridgeConfig, *, now: int | None = None) -> SimulatedQuoteProvider:
        """Load the platform from ``config.simulated_dir`` or generate (and save) a new one."""
        generated_at = int(time.time()) if now is None else now
        seed = None if config.simulated_seed is None else config.simulated_seed.encode("utf-8")
        directory = config.simulated_dir
        try:
            if directory is not None and (Path(directory) / "platform.json").exists():
                platform = SimulatedTdx.load(directory)
                _log.info("loaded simulated TDX platform from %s", directory)
            else:
                platform = SimulatedTdx.generate(seed, now=generated_at)
                if directory is not None:
                    saved = platform.save(directory)
                    _log.info("generated simulated TDX platform, saved to %s", saved)
        except SimulationError as exc:
            raise ProviderUnavailableError(f"simulated platform: {exc}") from exc
        return cls(platform.td(), quote_latency=config.simulated_quote_latency, host_dir=directory)

    @property
    def kind(self) -> QuoteProviderKind:
        return QuoteProviderKind.SIMULATED

    @property
    def simulated(self) -> bool:
        return True

    @property
    def platform(self) -> SimulatedTdx:
        """The simulated platform (its ``root_pem`` is what a development client trusts)."""
        return self._td.platform

    @property
    def td(self) -> SimulatedTd:
        """The simulated TD whose registers the quotes report."""
        return self._td

    @property
    def quote_latency(self) -> float:
        """Seconds each quote takes (the modelled quoting-service time)."""
        return self._latency

    def get_quote(self, report_data: bytes) -> bytes:
        report_data = check_report_data(report_data)
        with self._host_queue():
            if self._latency:
                time.sleep(self._latency)  # a worker thread's time, never the event loop's
            try:
                quote = self._td.quote(report_data)
            except SimulationError as exc:
                raise QuoteGenerationError(f"simulated quote: {exc}") from exc
        return check_quote_binds(quote, report_data)

    @contextlib.contextmanager
    def _host_queue(self) -> Iterator[None]:
        """One quote at a time per simulated host, as a real QGS serves them."""
        with self._process_lock:
            if self._host_lock_path is None:
                yield
                return
            try:
                handle = self._host_lock_path.open("a+b")
            except OSError as exc:
                raise QuoteGenerationError(
                    f"simulated quote: cannot open the host lock {self._host_lock_path}: "
                    f"{exc.strerror}"
                ) from exc
            with handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def extend_rtmr(self, index: int, digest: bytes) -> None:
        digest = check_rtmr_extension(index, digest)
        try:
            self._td.extend_rtmr(index, digest)
        except SimulationError as exc:
            raise RtmrExtendError(f"simulated RTMR{index}: {exc}") from exc

    def read_rtmr(self, index: int) -> bytes:
        """The simulated TD's register, as its next quote will report it."""
        return self._td.measurements.rtmrs[check_rtmr_index(index)]

    def firmware_event_log(self) -> FirmwareEventLog | None:
        """None: the simulated TD has no firmware, and RTMR0-2 stay at their fixed values."""
        return None

    def collateral(self, now: int) -> dict[str, str]:
        """Collateral for this platform valid at ``now``, in the QuoteCollateralV3 JSON shape."""
        try:
            return self._td.platform.collateral(now=now)
        except SimulationError as exc:
            raise QuoteGenerationError(f"simulated collateral: {exc}") from exc
