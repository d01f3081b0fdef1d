"""Shroud SDK: attested, end-to-end encrypted LLM inference behind the OpenAI client API.

Change one import (``from shroud_sdk import OpenAI``), give the client a bridge URL and an
attestation policy, and every request travels only to a bridge whose TDX evidence satisfied
that policy. See docs/migrating-from-openai.md.

Exports load lazily (PEP 562), so the bridge, which shares the channel core in
``shroud_sdk.channel``, does not import ``openai`` or the verifier.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shroud_sdk.channel.evidence import EvidenceMode
    from shroud_sdk.channel.usage import Usage
    from shroud_sdk.client import AsyncOpenAI, ConfigurationError, OpenAI, resolve_policy
    from shroud_sdk.errors import AttestationFailedError, ShroudError
    from shroud_sdk.frameworks import ShroudClients
    from shroud_sdk.overload import BridgeBusyError, BridgeRateLimitError, OverloadError
    from shroud_sdk.transport import (
        AsyncLegacyShroudTransport,
        AsyncShroudTransport,
        AttestationError,
        DisclosureRefusedError,
        FreshQuoteRateLimitedError,
        InvalidRequestBodyError,
        LegacyShroudTransport,
        RefusedDestinationError,
        RequestInterruptedError,
        ShroudTransport,
        StreamIntegrityError,
        StreamResetError,
    )
    from shroud_sdk.verifier import AttestationReport, AttestationVerifier

_EXPORTS = {
    "AsyncLegacyShroudTransport": "shroud_sdk.transport",
    "AsyncOpenAI": "shroud_sdk.client",
    "AsyncShroudTransport": "shroud_sdk.transport",
    "AttestationError": "shroud_sdk.transport",
    "AttestationFailedError": "shroud_sdk.errors",
    "AttestationReport": "shroud_sdk.verifier",
    "AttestationVerifier": "shroud_sdk.verifier",
    "BridgeBusyError": "shroud_sdk.overload",
    "BridgeRateLimitError": "shroud_sdk.overload",
    "ConfigurationError": "shroud_sdk.client",
    "DisclosureRefusedError": "shroud_sdk.transport",
    "EvidenceMode": "shroud_sdk.channel.evidence",
    "FreshQuoteRateLimitedError": "shroud_sdk.transport",
    "InvalidRequestBodyError": "shroud_sdk.transport",
    "LegacyShroudTransport": "shroud_sdk.transport",
    "OpenAI": "shroud_sdk.client",
    "OverloadError": "shroud_sdk.overload",
    "RefusedDestinationError": "shroud_sdk.transport",
    "RequestInterruptedError": "shroud_sdk.transport",
    "ShroudClients": "shroud_sdk.frameworks",
    "ShroudError": "shroud_sdk.errors",
    "ShroudTransport": "shroud_sdk.transport",
    "StreamIntegrityError": "shroud_sdk.transport",
    "StreamResetError": "shroud_sdk.transport",
    "Usage": "shroud_sdk.channel.usage",
    "resolve_policy": "shroud_sdk.client",
}

__all__ = [
    "AsyncLegacyShroudTransport",
    "AsyncOpenAI",
    "AsyncShroudTransport",
    "AttestationError",
    "AttestationFailedError",
    "AttestationReport",
    "AttestationVerifier",
    "BridgeBusyError",
    "BridgeRateLimitError",
    "ConfigurationError",
    "DisclosureRefusedError",
    "EvidenceMode",
    "FreshQuoteRateLimitedError",
    "InvalidRequestBodyError",
    "LegacyShroudTransport",
    "OpenAI",
    "OverloadError",
    "RefusedDestinationError",
    "RequestInterruptedError",
    "ShroudClients",
    "ShroudError",
    "ShroudTransport",
    "StreamIntegrityError",
    "StreamResetError",
    "Usage",
    "resolve_policy",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shroud_sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
