"""Quote providers: where the bridge's TDX quotes and RTMR extensions come from.

- ``configfs-tsm``: Linux configfs-tsm reports (``configfs_tsm``), RTMRs through sysfs or ioctl;
- ``tdx-guest``: the legacy ``/dev/tdx_guest`` ioctls (``tdx_guest``);
- ``simulated``: ``attestation.simulated`` for development (``simulated``).

``base`` defines the :class:`QuoteProvider` protocol and the error types; ``measure`` the
measured-configuration step run at start. See ``base`` for the "no oracle" rule.
"""

from __future__ import annotations

from bridge.config import BridgeConfig, QuoteProviderKind
from bridge.providers.base import (
    ConcurrentReportError,
    FirmwareEventLog,
    ProviderUnavailableError,
    QuoteGenerationError,
    QuoteProvider,
    QuoteProviderError,
    ReportDataError,
    RtmrExtendError,
    RuntimeLogStateError,
)

__all__ = [
    "ConcurrentReportError",
    "FirmwareEventLog",
    "ProviderUnavailableError",
    "QuoteGenerationError",
    "QuoteProvider",
    "QuoteProviderError",
    "ReportDataError",
    "RtmrExtendError",
    "RuntimeLogStateError",
    "create_provider",
]


def create_provider(config: BridgeConfig) -> QuoteProvider:
    """The provider ``config.quote_provider`` names, with the kernel's default paths."""
    if config.quote_provider is QuoteProviderKind.CONFIGFS_TSM:
        from bridge.providers.configfs_tsm import ConfigfsTsmProvider

        return ConfigfsTsmProvider()
    if config.quote_provider is QuoteProviderKind.TDX_GUEST:
        from bridge.providers.tdx_guest import TdxGuestProvider

        return TdxGuestProvider()
    from bridge.providers.simulated import SimulatedQuoteProvider

    return SimulatedQuoteProvider.from_config(config)
