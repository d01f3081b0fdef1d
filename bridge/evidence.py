"""The bridge's evidence: a quote over a handshake's REPORTDATA, or over a fresh attested key.

:class:`BridgeEvidence` is the only object in the bridge that holds the quote provider, and it
asks for quotes over exactly two kinds of REPORTDATA, each computed by channel code under its
own domain label (docs/protocol.md section 4):

- fresh mode: the channel core (``BridgeConnection``) calls it with the REPORTDATA the core
  itself computed from the ClientHello, the suite and the bridge's keys;
- attested-key mode: :meth:`BridgeEvidence.mint_attested_key` generates a key pair here, reads
  the clock for its window and quotes the key binding; the private key goes only into the
  returned :class:`~bridge.attested_key.AttestedKeySigner`.

Nothing else in the bridge can reach the provider, so no input from the network chooses the
bytes a quote is made over (the "no oracle" rule of DESIGN.md section 5). The evidence carries:

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

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.collateral_cache import CollateralCache
from attestation.errors import AttestationError
from attestation.eventlog import EventLogFormat
from attestation.pcs import CollateralFetcher
from attestation.quote_parser import parse_quote
from bridge.attested_key import AttestedKeySigner
from bridge.config import BridgeConfig, CollateralSource
from bridge.log_throttle import PEER_EVENTS, LogKind
from bridge.metrics import QuotePurpose
from bridge.providers.base import QuoteProvider, QuoteProviderError
from bridge.providers.simulated import SimulatedQuoteProvider
from shroud_sdk.channel.evidence import AttestedKey, EventLog, Evidence, KeyEvidence
from shroud_sdk.channel.handshake import compute_key_report_data

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
    """The fresh-mode ``EvidenceProvider`` handed to ``BridgeConfig``, and the minter of
    attested keys; see the module docstring.

    Blocking: the session calls the channel core, and so this, in a worker thread; rotation
    calls :meth:`mint_attested_key` in one too. ``on_quote`` is told each quote's purpose and
    how long the provider took (for metrics).
    """

    def __init__(
        self,
        provider: QuoteProvider,
        runtime_log: bytes,
        *,
        collateral: CollateralSupplier | None = None,
        clock: Callable[[], float] = time.time,
        on_quote: Callable[[QuotePurpose, float], None] | None = None,
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
        self._on_quote = on_quote

    def __repr__(self) -> str:
        return f"BridgeEvidence(logs={[log.format for log in self._logs]})"

    def __call__(self, report_data: bytes, /) -> Evidence:
        """Evidence whose quote is over exactly ``report_data`` (from the channel core)."""
        quote = self._quote(report_data, QuotePurpose.FRESH)
        return Evidence(EVIDENCE_TYPE_TDX, quote, self._logs, self._fetch_collateral(quote))

    def mint_attested_key(self, lifetime: int) -> KeyEvidence:
        """A new attested key valid for ``lifetime`` seconds from now, with its evidence.

        The key pair is generated here, in TD memory; its private half goes only into the
        returned signer. The window starts when the key is made, before the quote.
        """
        if lifetime <= 0:
            raise ValueError("an attested key needs a positive lifetime")
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        not_before = int(self._clock())
        attested = AttestedKey(public, not_before, not_before + lifetime)
        quote = self._quote(compute_key_report_data(attested), QuotePurpose.ATTESTED_KEY)
        evidence = Evidence(
            EVIDENCE_TYPE_TDX, quote, self._logs, self._fetch_collateral(quote), attested
        )
        return KeyEvidence(evidence, AttestedKeySigner(key))

    def collateral_for(self, quote: bytes) -> bytes | None:
        """The collateral the bridge would ship with ``quote`` now (None: none, or failed)."""
        return self._fetch_collateral(quote)

    def _quote(self, report_data: bytes, purpose: QuotePurpose) -> bytes:
        started = time.perf_counter()
        quote = self.__provider.get_quote(report_data)
        if self._on_quote is not None:
            self._on_quote(purpose, time.perf_counter() - started)
        return quote

    def _fetch_collateral(self, quote: bytes) -> bytes | None:
        if self._collateral is None:
            return None
        try:
            return self._collateral(quote, int(self._clock()))
        except (AttestationError, QuoteProviderError, OSError, ValueError) as exc:
            # The quote is still good; the client can fetch collateral itself.
            PEER_EVENTS.log(
                _log,
                LogKind.NO_COLLATERAL,
                logging.WARNING,
                "no collateral attached to evidence: %s: %s",
                type(exc).__name__,
                exc,
            )
            return None
