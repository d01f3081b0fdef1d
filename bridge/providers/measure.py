"""Measured configuration: what the bridge extends into RTMR3 at start, and the log to replay it.

Runtime events, in this order, each appended to a ``RuntimeEventLog`` (format and digest:
``attestation.eventlog``) and extended into RTMR3 through the quote provider; the payloads are
the ones ``attestation.image_hash.image_digests`` reads back:

- ``shroud.image-digest``: payload = the deployment's image digest as ASCII
  (``sha256:<hex>``). Omitted, with a warning, only when a simulated bridge was started
  without one (the configuration refuses that for hardware providers);
- ``shroud.config-hash``: payload = the 48-byte SHA-384 of ``effective_config_document``
  (``bridge.config``: audience, upstream, allowed paths, disclosure rules).

A client replays the log from zero, compares the result with the quote's RTMR3, and can then pin
the image digest and the configuration hash in its policy. This module does not decide what a
policy accepts, and it runs once, before the bridge accepts connections: events extended later
would make earlier quotes unreproducible from the served log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from attestation.eventlog import (
    CONFIG_HASH_EVENT,
    IMAGE_DIGEST_EVENT,
    RUNTIME_LOG_RTMR,
    RuntimeEventLog,
)
from bridge.config import BridgeConfig, effective_config_digest, effective_config_document
from bridge.providers.base import QuoteProvider

_log = logging.getLogger(__name__)

__all__ = [
    "CONFIG_HASH_EVENT",
    "IMAGE_DIGEST_EVENT",
    "MeasuredConfiguration",
    "measure_bridge",
    "measurement_events",
]


@dataclass(frozen=True)
class MeasuredConfiguration:
    """The result of :func:`measure_bridge`: what was measured, and the log that replays it."""

    image_digest: str | None
    config_document: bytes
    config_digest: bytes
    runtime_log: bytes  # RuntimeEventLog.to_bytes(): what the bridge ships with its evidence
    events: tuple[tuple[str, bytes], ...]  # the (name, payload) pairs, in extension order


def measurement_events(config: BridgeConfig) -> tuple[tuple[str, bytes], ...]:
    """The (name, payload) events :func:`measure_bridge` records, in order."""
    events: list[tuple[str, bytes]] = []
    if config.image_digest is not None:
        events.append((IMAGE_DIGEST_EVENT, config.image_digest.encode("ascii")))
    events.append((CONFIG_HASH_EVENT, effective_config_digest(config)))
    return tuple(events)


def measure_bridge(provider: QuoteProvider, config: BridgeConfig) -> MeasuredConfiguration:
    """Record and extend the image and configuration events; return the log to serve.

    Raises whatever the provider raises for a failed extension (``RtmrExtendError``,
    ``ProviderUnavailableError``): a bridge that cannot measure itself must not start.
    """
    if config.image_digest is None:
        _log.warning("no image digest configured: RTMR3 records no %s event", IMAGE_DIGEST_EVENT)
    log = RuntimeEventLog()
    events = measurement_events(config)
    for name, payload in events:
        digest = log.append(name, payload)
        provider.extend_rtmr(RUNTIME_LOG_RTMR, digest)
    return MeasuredConfiguration(
        image_digest=config.image_digest,
        config_document=effective_config_document(config),
        config_digest=effective_config_digest(config),
        runtime_log=log.to_bytes(),
        events=events,
    )
