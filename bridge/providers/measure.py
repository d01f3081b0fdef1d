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

RTMR3 outlives the bridge process (it is reset only when the TD reboots), so the log is
persisted (``runtime_store``) and the start reads RTMR3 first:

- RTMR3 is zero (a fresh TD): any persisted log is stale; measure from scratch.
- The persisted log (or a prefix of it, when an earlier start stopped between writing the log
  and finishing its extensions) replays to RTMR3 and already ends with exactly this start's
  events: extend nothing, serve it. This is a plain restart. If it ends with only the first
  of them (an interrupted start of the same bridge), extend the rest.
- It replays but ends differently (the image or the configuration changed): append this start's
  events and extend them. Clients see both histories; ``attestation.image_hash.image_digests``
  refuses a log with two image-digest or config-hash events, so a client pinning the new values
  rejects this TD. That is intended: to change what a TD runs, restart the TD.
- RTMR3 is non-zero and no persisted log replays to it: refuse to start
  (:class:`RuntimeLogStateError`, naming the state file). Serving a log that cannot replay would
  only make every client refuse the bridge, for a reason they cannot see.

The log is saved *before* the extensions, so a crash in between leaves a log of which a prefix
replays, which the next start recognises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from attestation.errors import EventLogError
from attestation.eventlog import (
    CONFIG_HASH_EVENT,
    IMAGE_DIGEST_EVENT,
    RUNTIME_LOG_RTMR,
    RuntimeEventLog,
    extend,
    runtime_event_digest,
)
from bridge.config import BridgeConfig, effective_config_digest, effective_config_document
from bridge.providers.base import RTMR_DIGEST_SIZE, QuoteProvider, RuntimeLogStateError
from bridge.providers.runtime_store import RuntimeLogStore

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
    events: tuple[tuple[str, bytes], ...]  # this start's (name, payload) pairs, in order
    extended: bool = True  # False when a restart found its events already in RTMR3


def measurement_events(config: BridgeConfig) -> tuple[tuple[str, bytes], ...]:
    """The (name, payload) events :func:`measure_bridge` records, in order."""
    events: list[tuple[str, bytes]] = []
    if config.image_digest is not None:
        events.append((IMAGE_DIGEST_EVENT, config.image_digest.encode("ascii")))
    events.append((CONFIG_HASH_EVENT, effective_config_digest(config)))
    return tuple(events)


def measure_bridge(
    provider: QuoteProvider, config: BridgeConfig, store: RuntimeLogStore | None = None
) -> MeasuredConfiguration:
    """Record and extend the image and configuration events; return the log to serve.

    ``store`` persists the log across bridge processes (None: this process only, which is
    right only while RTMR3 starts at zero, as for the simulated provider). See the module
    docstring for the cases. Raises :class:`RuntimeLogStateError` when RTMR3 already holds
    measurements no persisted log replays, and whatever the provider raises for a failed
    read or extension: a bridge that cannot measure itself must not start.
    """
    if config.image_digest is None:
        _log.warning("no image digest configured: RTMR3 records no %s event", IMAGE_DIGEST_EVENT)
    events = measurement_events(config)
    current = provider.read_rtmr(RUNTIME_LOG_RTMR)
    history = _history(current, store)
    recorded = [(e.name or "", e.data) for e in history.events]
    # How much of this start's sequence RTMR3 already ends with: all of it after a plain
    # restart, part of it after a start that stopped between two extensions, else none.
    done = next(
        k
        for k in range(len(events), -1, -1)
        if k == 0 or (len(recorded) >= k and tuple(recorded[-k:]) == events[:k])
    )
    missing = events[done:]
    if len(recorded) > done:
        _log.warning(
            "RTMR3 already holds %d event(s) from an earlier bridge with another image or "
            "configuration; appending this one's (clients pinning either will refuse this "
            "TD: restart the TD to change what it runs)",
            len(recorded) - done,
        )
    if not missing:
        _log.info("RTMR3 already holds this bridge's measurements: not extending again")
    log = RuntimeEventLog()
    for name, payload in (*recorded, *missing):
        log.append(name, payload)
    if store is not None:
        # Saved before extending: a crash in between leaves a log whose prefix replays. Also
        # drops events of an interrupted start that never reached RTMR3.
        store.save(log.to_bytes())
    for name, payload in missing:
        provider.extend_rtmr(RUNTIME_LOG_RTMR, runtime_event_digest(name, payload))
    return MeasuredConfiguration(
        image_digest=config.image_digest,
        config_document=effective_config_document(config),
        config_digest=effective_config_digest(config),
        runtime_log=log.to_bytes(),
        events=events,
        extended=bool(missing),
    )


_ZERO_RTMR = bytes(RTMR_DIGEST_SIZE)


def _history(current: bytes, store: RuntimeLogStore | None) -> RuntimeEventLog:
    """The events already in RTMR3 (``current``), as a log that replays to it."""
    where = f"the runtime log {store.log_path}" if store is not None else "no runtime log"
    data = store.load() if store is not None else None
    if current == _ZERO_RTMR:
        if data:
            _log.info("RTMR3 is zero (a fresh TD): discarding %s from before", where)
        return RuntimeEventLog()
    fix = "restart the TD (RTMR3 is reset only then); a bridge process restart cannot repair it"
    if store is None:
        raise RuntimeLogStateError(
            "RTMR3 already holds measurements and no state_dir is configured to hold their "
            f"runtime log, so the log this bridge would serve cannot replay: {fix}"
        )
    if data is None:
        raise RuntimeLogStateError(
            f"RTMR3 already holds measurements but {store.log_path} does not exist (was the "
            f"state directory on a tmpfs that outlives the bridge, as /run does?): {fix}"
        )
    try:
        persisted = RuntimeEventLog.from_bytes(data)
    except EventLogError as exc:
        raise RuntimeLogStateError(f"{where} cannot be parsed ({exc}): {fix}") from exc
    register = _ZERO_RTMR
    prefix = RuntimeEventLog()
    entries = persisted.events
    for count in range(len(entries) + 1):
        if register == current:
            if count < len(entries):
                _log.warning(
                    "%s: only the first %d of %d event(s) reached RTMR3 (an earlier start "
                    "stopped midway); serving those",
                    where,
                    count,
                    len(entries),
                )
            return prefix
        if count < len(entries):
            event = entries[count]
            register = extend(register, event.digest)
            prefix.append(event.name or "", event.data)
    raise RuntimeLogStateError(
        f"{where} does not replay to the current RTMR3 (another process extended RTMR3, or the "
        f"file was changed or replaced): {fix}"
    )
