"""Image hashes: the values an operator publishes per release and a client pins.

Two kinds, both documented in docs/policy.md ("Image hashes"):

* The **aggregate image hash**, one SHA-384 value over the registers that describe the booted
  image::

      SHA-384("shroud/image-hash/v1\\0" || MRTD || RTMR0 || RTMR1 || RTMR2)

  MRTD is the TD firmware, RTMR0 its configuration (ACPI tables, so it also depends on the VM
  shape: CPU count, memory), RTMR1 the kernel and boot loader, RTMR2 the kernel command line
  and initrd. RTMR3 is excluded: it holds runtime events (and in dstack per-instance ones),
  which are pinned one by one instead. Every register is fixed-size, so the concatenation is
  unambiguous; the label keeps the value apart from any other SHA-384 over these bytes.
* **Image digests** read from the RTMR3 runtime log, and only from a log whose replay
  reproduced the quote's RTMR3: the bridge's container image digest and configuration hash
  (Shroud runtime log), and dstack's ``compose-hash``.

This module computes values; it does not decide whether they are acceptable
(``attestation.policy`` does).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attestation.errors import EventLogError
from attestation.quote import TdReport

if TYPE_CHECKING:
    from attestation.eventlog import Event, EventLog, ReplayResult

# Every policy evaluation computes the aggregate, most never see an event log: the log parser
# (attestation.eventlog) is imported by the functions that read one, not at start-up.
_REGISTER_SIZE = hashlib.sha384().digest_size  # MRTD and the RTMRs are SHA-384 values

IMAGE_HASH_LABEL = b"shroud/image-hash/v1\x00"
# The TdReport attributes hashed, in this order (see the module docstring for why these).
IMAGE_HASH_REGISTERS = ("mr_td", "rtmr0", "rtmr1", "rtmr2")
# An OCI content digest as registries print it (lower-case hex), as the bridge logs it.
OCI_DIGEST_RE = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")


def aggregate_image_hash(td_report: TdReport) -> bytes:
    """The aggregate image hash of a TD report (48 bytes)."""
    h = hashlib.sha384(IMAGE_HASH_LABEL)
    for register in IMAGE_HASH_REGISTERS:
        value: bytes = getattr(td_report, register)
        if len(value) != _REGISTER_SIZE:
            raise ValueError(f"TD report {register} is {len(value)} bytes, expected 48")
        h.update(value)
    return h.digest()


@dataclass(frozen=True)
class ImageDigests:
    """Digests found among the verified RTMR3 runtime events (``None`` when absent)."""

    image_digest: str | None  # the bridge's deployment image, "ALGO:HEX"
    config_hash: bytes | None  # the bridge's effective configuration, SHA-384
    compose_hash: bytes | None  # dstack's application compose hash
    events: tuple[Event, ...]  # every verified RTMR3 event, in order


def image_digests(replay: ReplayResult) -> ImageDigests:
    """Read image digests from RTMR3's events, which must have replayed to the quote's RTMR3.

    Raises ``EventLogError`` when no log covers RTMR3, when its replay does not match, when a
    digest event appears more than once (which one would count?) or its payload is malformed.
    """
    from attestation.eventlog import (
        CONFIG_HASH_EVENT,
        DSTACK_COMPOSE_HASH_EVENT,
        IMAGE_DIGEST_EVENT,
        SHA384_SIZE,
    )

    events = replay.verified_events(3)
    if events is None:
        raise EventLogError(
            "image digests need an RTMR3 log that replays to the quote: "
            + replay.register(3).detail
        )
    found: dict[str, bytes] = {}
    for event in events:
        if event.name is None or not event.recomputed:
            continue
        if event.name in (IMAGE_DIGEST_EVENT, CONFIG_HASH_EVENT, DSTACK_COMPOSE_HASH_EVENT):
            if event.name in found:
                raise EventLogError(f"RTMR3 log has more than one {event.name!r} event")
            found[event.name] = event.data
    image = found.get(IMAGE_DIGEST_EVENT)
    image_text: str | None = None
    if image is not None:
        image_text = image.decode("ascii", errors="replace")
        if OCI_DIGEST_RE.fullmatch(image_text) is None:
            raise EventLogError(
                f"{IMAGE_DIGEST_EVENT} payload is not ALGO:HEX (sha256/384/512, lower-case hex)"
            )
    config = found.get(CONFIG_HASH_EVENT)
    if config is not None and len(config) != SHA384_SIZE:
        raise EventLogError(f"{CONFIG_HASH_EVENT} payload is {len(config)} bytes, expected 48")
    return ImageDigests(image_text, config, found.get(DSTACK_COMPOSE_HASH_EVENT), events)


@dataclass(frozen=True)
class ImageHashes:
    """Everything to pin for one quote: the aggregate, and (given logs) the replay and digests."""

    aggregate: bytes
    replay: ReplayResult | None
    digests: ImageDigests | None


def compute_image_hashes(td_report: TdReport, logs: Sequence[EventLog] = ()) -> ImageHashes:
    """The aggregate image hash, plus the replay and RTMR3 image digests when ``logs`` are given.

    ``digests`` is ``None`` unless a log covers RTMR3 and replays to the quote's RTMR3 (the
    replay result says why not). Raises ``EventLogError`` when RTMR3's verified events hold a
    duplicate or malformed digest event.
    """
    aggregate = aggregate_image_hash(td_report)
    if not logs:
        return ImageHashes(aggregate, None, None)
    from attestation.eventlog import replay_against

    result = replay_against(logs, td_report.rtmrs)
    digests = image_digests(result) if result.verified_events(3) is not None else None
    return ImageHashes(aggregate, result, digests)
