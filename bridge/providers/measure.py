"""Measured configuration: what the bridge extends into RTMR3 at start, and the log to replay it.

Two runtime events, in this order, each appended to a ``RuntimeEventLog`` (format and digest:
``attestation.eventlog``) and extended into RTMR3 through the quote provider:

- ``shroud.image-digest``: payload = the deployment's image digest as ASCII
  (``sha256:<hex>``), or ``none`` when a simulated bridge was started without one;
- ``shroud.config-hash``: payload = ``sha384:<hex>`` of ``effective_config_document``
  (``bridge.config``: audience, upstream, allowed paths, disclosure rules).

A client replays the log from zero, compares the result with the quote's RTMR3, and can then pin
the image digest and the configuration hash in its policy. This module does not decide what a
policy accepts, and it runs once, before the bridge accepts connections: events extended later
would make earlier quotes unreproducible from the served log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from attestation.eventlog import RUNTIME_LOG_RTMR, RuntimeEventLog
from bridge.config import BridgeConfig, effective_config_digest, effective_config_document
from bridge.providers.base import QuoteProvider

_log = logging.getLogger(__name__)

IMAGE_DIGEST_EVENT: Final = "shroud.image-digest"
CONFIG_HASH_EVENT: Final = "shroud.config-hash"
UNSET_IMAGE_DIGEST: Final = "none"


@dataclass(frozen=True)
class MeasuredConfiguration:
    """The result of :func:`measure_bridge`: what was measured, and the log that replays it."""

    image_digest: str
    config_document: bytes
    config_digest: bytes
    runtime_log: bytes  # RuntimeEventLog.to_bytes(): what the bridge ships with its evidence


def measurement_events(config: BridgeConfig) -> tuple[tuple[str, bytes], ...]:
    """The (name, payload) events :func:`measure_bridge` records, in order."""
    image = config.image_digest if config.image_digest is not None else UNSET_IMAGE_DIGEST
    config_hash = "sha384:" + effective_config_digest(config).hex()
    return (
        (IMAGE_DIGEST_EVENT, image.encode("ascii")),
        (CONFIG_HASH_EVENT, config_hash.encode("ascii")),
    )


def measure_bridge(provider: QuoteProvider, config: BridgeConfig) -> MeasuredConfiguration:
    """Record and extend the image and configuration events; return the log to serve.

    Raises whatever the provider raises for a failed extension (``RtmrExtendError``,
    ``ProviderUnavailableError``): a bridge that cannot measure itself must not start.
    """
    if config.image_digest is None:
        _log.warning("no image digest configured: RTMR3 records %r", UNSET_IMAGE_DIGEST)
    log = RuntimeEventLog()
    for name, payload in measurement_events(config):
        digest = log.append(name, payload)
        provider.extend_rtmr(RUNTIME_LOG_RTMR, digest)
    events = measurement_events(config)
    return MeasuredConfiguration(
        image_digest=events[0][1].decode("ascii"),
        config_document=effective_config_document(config),
        config_digest=effective_config_digest(config),
        runtime_log=log.to_bytes(),
    )
