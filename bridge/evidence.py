"""The bridge's ``EvidenceProvider``: a quote over the handshake's REPORTDATA, and its helpers.

:class:`BridgeEvidence` is the only object in the bridge that holds the quote provider. The
channel core (``BridgeConnection``) calls it with the REPORTDATA the core itself computed from the
ClientHello, the suite and the bridge's keys; nothing else in the bridge can reach the provider,
so no input from the network chooses the bytes a quote is made over (the "no oracle" rule of
DESIGN.md section 5). The evidence carries:

- the quote, type ``"tdx"`` (the simulated platform's quotes are byte-compatible TDX v4 quotes;
  the channel's simulated suite, not the evidence type, marks them as simulated);
- the event logs: the firmware CCEL (format ``"ccel"``) when the provider has one, and the RTMR3
  runtime log the bridge wrote while measuring itself (format ``"shroud-runtime"``);
- optionally the collateral for the quote's platform (QuoteCollateralV3 JSON), so clients without
  network access to Intel can verify. Collateral is Intel-signed (or simulated-root-signed), so
  shipping it over the untrusted channel is fine. When it cannot be obtained the evidence goes
  out without it and the client falls back to its own collateral source.

It deliberately does not verify anything and does not choose what the client must accept.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from attestation.collateral_cache import CollateralCache
from attestation.errors import AttestationError
from attestation.eventlog import EventLogFormat
from attestation.pcs import CollateralFetcher
from attestation.quote_parser import parse_quote
from bridge.config import BridgeConfig, CollateralSource
from bridge.providers.base import QuoteProvider, QuoteProviderError
from bridge.providers.simulated import SimulatedQuoteProvider
from shroud_sdk.channel.evidence import EventLog, Evidence

_log = logging.getLogger(__name__)

EVIDENCE_TYPE_TDX: Final = "tdx"
# Event log format names inside Evidence (protocol.md §3.3 leaves them to the evidence type);
# they are attestation.eventlog's format names so a verifier can dispatch on them directly.
LOG_FORMAT_CCEL: Final = EventLogFormat.CCEL.value
LOG_FORMAT_RUNTIME: Final = EventLogFormat.SHROUD_RUNTIME.value
# Simulated collateral is regenerated this long before it would expire (it lives 30 days).
_SIMULATED_COLLATERAL_REFRESH: Final = 3600


class CollateralSupplier(Protocol):
    """Collateral (QuoteCollateralV3 JSON bytes) for the platform of ``quote`` at ``now``."""

    def __call__(self, quote: bytes, now: int, /) -> bytes: ...


class SimulatedCollateral:
    """Collateral signed by the simulated platform's own CA, regenerated hourly."""

    def __init__(self, provider: SimulatedQuoteProvider) -> None:
        self._provider = provider
        self._lock = threading.Lock()
        self._cached: tuple[int, bytes] | None = None

    def __call__(self, quote: bytes, now: int, /) -> bytes:
        with self._lock:
            if self._cached is None or not 0 <= now - self._cached[0] < (
                _SIMULATED_COLLATERAL_REFRESH
            ):
                document = self._provider.collateral(now)
                self._cached = (now, json.dumps(document, separators=(",", ":")).encode())
            return self._cached[1]


class CachedPcsCollateral:
    """Collateral from Intel PCS or a PCCS through the re-verifying on-disk cache."""

    def __init__(self, cache: CollateralCache) -> None:
        self._cache = cache

    def __call__(self, quote: bytes, now: int, /) -> bytes:
        collateral = self._cache.get_for_quote(parse_quote(quote), now)
        return json.dumps(collateral.to_json(), separators=(",", ":")).encode()


def default_collateral_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/shroud-bridge/collateral`` (``~/.cache`` when unset).

    The directory is not trusted: every entry is re-verified against Intel's root on use.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shroud-bridge" / "collateral"


def collateral_supplier_for(
    config: BridgeConfig, provider: QuoteProvider
) -> CollateralSupplier | None:
    """The collateral source ``config.collateral`` names, or None to ship no collateral."""
    source = config.collateral
    if source is CollateralSource.SIMULATED:
        if not isinstance(provider, SimulatedQuoteProvider):
            raise ValueError("simulated collateral needs the simulated quote provider")
        return SimulatedCollateral(provider)
    if source is CollateralSource.PCS:
        return CachedPcsCollateral(
            CollateralCache(default_collateral_cache_dir(), CollateralFetcher())
        )
    if source is CollateralSource.PCCS:
        assert config.pccs_url is not None  # the configuration requires it with "pccs"
        return CachedPcsCollateral(
            CollateralCache(default_collateral_cache_dir(), CollateralFetcher(config.pccs_url))
        )
    return None


class BridgeEvidence:
    """The ``EvidenceProvider`` handed to ``BridgeConfig``; see the module docstring.

    Blocking: the session calls the channel core, and so this, in a worker thread.
    """

    def __init__(
        self,
        provider: QuoteProvider,
        runtime_log: bytes,
        *,
        collateral: CollateralSupplier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.__provider = provider  # name-mangled: reachable only through __call__
        logs = []
        firmware = provider.firmware_event_log()
        if firmware is not None:
            logs.append(EventLog(LOG_FORMAT_CCEL, firmware.data))
        logs.append(EventLog(LOG_FORMAT_RUNTIME, runtime_log))
        self._logs = tuple(logs)
        self._collateral = collateral
        self._clock = clock

    def __repr__(self) -> str:
        return f"BridgeEvidence(logs={[log.format for log in self._logs]})"

    def __call__(self, report_data: bytes, /) -> Evidence:
        """Evidence whose quote is over exactly ``report_data`` (from the channel core)."""
        quote = self.__provider.get_quote(report_data)
        return Evidence(EVIDENCE_TYPE_TDX, quote, self._logs, self._fetch_collateral(quote))

    def _fetch_collateral(self, quote: bytes) -> bytes | None:
        if self._collateral is None:
            return None
        try:
            return self._collateral(quote, int(self._clock()))
        except (AttestationError, QuoteProviderError, OSError, ValueError) as exc:
            # The quote is still good; the client can fetch collateral itself.
            _log.warning("no collateral attached to evidence: %s: %s", type(exc).__name__, exc)
            return None
