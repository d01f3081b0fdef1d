"""TDX event logs: parse them, replay them, and compare the replay with a quote's RTMRs.

Three log formats are understood, told apart by content (``parse_event_log``):

* **CCEL**, the firmware's log of RTMR0-2 (and possibly RTMR3) in the TCG PC Client
  crypto-agile format, as Linux exposes it at ``/sys/firmware/acpi/tables/data/CCEL``; the
  ACPI table at ``/sys/firmware/acpi/tables/CCEL`` (``parse_ccel_table``) bounds its length.
* **Shroud's runtime log** of RTMR3 events (``RuntimeEventLog``), written by the bridge. Each
  event's digest is recomputed from its name and payload (``runtime_event_digest``), never read.
* **dstack's JSON log** (records ``{imr, event_type, digest, event, event_payload}``); its
  runtime events (type ``0x08000001``) are recomputed from name and payload too.

Replay computes ``RTMR = SHA-384(RTMR || digest)`` from 48 zero bytes, per register, and
``replay_against`` reports for each register whether the quote's value was reproduced and, if
not, where the log diverges. This module does not judge what the events *mean*: which
registers or events are acceptable is ``attestation.policy``'s business, and image digests are
read from the replayed log by ``attestation.image_hash``. Firmware (CCEL) event data is kept
as bytes and not interpreted: a CCEL event's digest is bound to the quote by the replay, but
its data is not bound to its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from attestation.errors import EventLogError

RTMR_COUNT = 4
SHA384_SIZE = 48
_ZERO_RTMR = bytes(SHA384_SIZE)

# --- TCG PC Client Platform Firmware Profile Specification (v1.05), section 10 "Event Logging".
# The first event is a legacy TCG_PCClientPCREvent (SHA-1 sized digest) carrying the
# TCG_EfiSpecIdEvent (10.4.5.1); every later event is a crypto-agile TCG_PCR_EVENT2 (10.2.2).
TCG_SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
TCG_LEGACY_DIGEST_SIZE = 20
EV_NO_ACTION = 0x00000003  # 10.4.1: informational, never extended into a register
TPM_ALG_SHA384 = 0x000C  # TCG Algorithm Registry, TPM_ALG_ID
# Intel TDX Guest-Hypervisor Communication Interface (GHCI), "TD event log": the CCEL MR index
# is 0 for MRTD and 1-4 for RTMR0-3 (MRTD is measured by the TDX module and never logged).
CCEL_MR_INDEX_TO_RTMR = {1: 0, 2: 1, 3: 2, 4: 3}
_CCEL_MAX_SPEC_ALGORITHMS = 32  # bounds parsing of a hostile Spec ID event

# --- ACPI 6.5, "CC Event Log ACPI Table" (CCEL): the standard 36-byte ACPI header, then
# CC Type (u8), CC Subtype (u8), Reserved (u16), LAML (u64, log area minimum length),
# LASA (u64, log area start address).
ACPI_CCEL_SIGNATURE = b"CCEL"
_ACPI_HEADER_SIZE = 36
_ACPI_CCEL_TABLE_SIZE = 56
ACPI_CC_TYPE_TDX = 2

# --- dstack (Dstack-TEE/dstack, cc-eventlog): runtime events are extended into RTMR3 with
# digest SHA-384(le32(event_type) || ":" || name || ":" || payload).
DSTACK_RUNTIME_EVENT_TYPE = 0x08000001

# --- Shroud's runtime event log (docs/eventlog.md).
RUNTIME_LOG_FORMAT = "shroud-runtime-event-log/1"
RUNTIME_EVENT_DIGEST_LABEL = b"shroud/runtime-event/v1\x00"
RUNTIME_LOG_RTMR = 3
# The events the bridge records (docs/eventlog.md): the deployment's image digest as the UTF-8
# text "ALGO:HEX" (an OCI digest such as "sha256:..."), and the 48-byte SHA-384 of its
# effective configuration document (bridge.config.effective_config_digest).
IMAGE_DIGEST_EVENT = "shroud.image-digest"
CONFIG_HASH_EVENT = "shroud.config-hash"
# dstack's runtime event holding the application's compose hash (raw bytes).
DSTACK_COMPOSE_HASH_EVENT = "compose-hash"
_RUNTIME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_RUNTIME_MAX_PAYLOAD = 64 * 1024
_MAX_JSON_LOG_BYTES = 16 * 1024 * 1024


class EventLogFormat(StrEnum):
    """Where a parsed log came from; it decides which registers the log speaks for."""

    CCEL = "ccel"
    SHROUD_RUNTIME = "shroud-runtime"
    DSTACK_JSON = "dstack-json"


@dataclass(frozen=True)
class Event:
    """One logged measurement.

    ``digest`` is the SHA-384 value replay extends into ``rtmr``. For runtime events (Shroud's
    and dstack's) it was recomputed from ``name`` and ``data``, and ``claimed_digest`` holds
    what the log itself said (``None`` in Shroud's format, which stores no digest).
    ``extended`` is false for EV_NO_ACTION events, which replay skips. Only the runtime-log
    parsers set ``name``, and always together with a recomputed ``digest``.
    """

    index: int  # position in its log, 0-based, counting every record
    rtmr: int  # 0-3
    event_type: int
    digest: bytes
    data: bytes  # TCG event data, or a runtime event's payload
    name: str | None = None  # runtime events only
    recomputed: bool = False
    claimed_digest: bytes | None = None
    extended: bool = True

    @property
    def digest_mismatch(self) -> bool:
        """True when the log claimed a digest that its own name and payload do not produce."""
        return self.claimed_digest is not None and not hmac.compare_digest(
            self.claimed_digest, self.digest
        )


@dataclass(frozen=True)
class EventLog:
    """A parsed event log of one format."""

    format: EventLogFormat
    events: tuple[Event, ...]

    @property
    def covered_rtmrs(self) -> frozenset[int]:
        """The registers this log claims to describe completely.

        CCEL is the firmware's log of RTMR0-2 (and of RTMR3 only if it holds RTMR3 events);
        Shroud's runtime log describes RTMR3; dstack's JSON log describes all four.
        """
        if self.format is EventLogFormat.SHROUD_RUNTIME:
            return frozenset({RUNTIME_LOG_RTMR})
        if self.format is EventLogFormat.DSTACK_JSON:
            return frozenset(range(RTMR_COUNT))
        with_events = {e.rtmr for e in self.events if e.extended}
        return frozenset({0, 1, 2} | with_events)


# ---------------------------------------------------------------------------------------------
# CCEL (TCG crypto-agile)


@dataclass(frozen=True)
class CcelTable:
    """The ACPI CCEL table: where the firmware put the event log, and how long it may be."""

    revision: int
    cc_type: int
    cc_subtype: int
    log_area_minimum_length: int
    log_area_start_address: int


def parse_ccel_table(table: bytes) -> CcelTable:
    """Parse the raw ACPI CCEL table (``/sys/firmware/acpi/tables/CCEL``).

    Raises ``EventLogError`` if the signature, length or checksum is wrong, or the table is not
    for TDX.
    """
    if len(table) < _ACPI_CCEL_TABLE_SIZE:
        raise EventLogError(
            f"CCEL ACPI table is {len(table)} bytes; at least {_ACPI_CCEL_TABLE_SIZE} expected"
        )
    if table[:4] != ACPI_CCEL_SIGNATURE:
        raise EventLogError(f"ACPI table signature is {table[:4]!r}, expected b'CCEL'")
    (length,) = struct.unpack_from("<I", table, 4)
    if length != len(table):
        raise EventLogError(f"CCEL ACPI table declares {length} bytes but has {len(table)}")
    if sum(table) % 256 != 0:
        raise EventLogError("CCEL ACPI table checksum is wrong (bytes do not sum to 0 mod 256)")
    revision = table[8]
    cc_type, cc_subtype = table[_ACPI_HEADER_SIZE], table[_ACPI_HEADER_SIZE + 1]
    laml, lasa = struct.unpack_from("<QQ", table, _ACPI_HEADER_SIZE + 4)
    if cc_type != ACPI_CC_TYPE_TDX:
        raise EventLogError(f"CCEL ACPI table CC type is {cc_type}, expected {ACPI_CC_TYPE_TDX}")
    return CcelTable(revision, cc_type, cc_subtype, laml, lasa)


class _Reader:
    """Bounds-checked little-endian reads that fail with the offset of the fault."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    def take(self, size: int, field: str) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise EventLogError(
                f"{self.what}: {field} at offset {self.offset} needs {size} bytes, "
                f"{len(self.data) - self.offset} left"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")


def _is_padding(chunk: bytes) -> bool:
    return chunk == b"\xff" * len(chunk) or chunk == b"\x00" * len(chunk)


def parse_ccel(data: bytes, *, table: bytes | None = None) -> EventLog:
    """Parse a CCEL event log (``/sys/firmware/acpi/tables/data/CCEL``).

    The log ends where the next event header would be all 0xFF or all 0x00 bytes (the unused
    log area); what follows is ignored. When the raw ACPI ``table`` is given, the log is first
    cut to the table's log area length. Each event must carry a SHA-384 digest; EV_NO_ACTION
    events are kept with ``extended=False``. Raises ``EventLogError`` naming the event and
    offset of any inconsistency.
    """
    if table is not None:
        laml = parse_ccel_table(table).log_area_minimum_length
        if len(data) > laml:
            data = data[:laml]
    if data[:4] == ACPI_CCEL_SIGNATURE:
        raise EventLogError(
            "this is the ACPI CCEL table, not the event log: pass "
            "/sys/firmware/acpi/tables/data/CCEL"
        )
    r = _Reader(data, "CCEL")
    digest_sizes = _parse_spec_id_event(r)
    events: list[Event] = []
    index = 1  # the Spec ID event is record 0
    while r.offset < len(data):
        if len(data) - r.offset < 8 or _is_padding(data[r.offset : r.offset + 8]):
            break
        events.append(_parse_event2(r, index, digest_sizes))
        index += 1
    return EventLog(EventLogFormat.CCEL, tuple(events))


def _parse_spec_id_event(r: _Reader) -> dict[int, int]:
    r.u32("Spec ID event MR index")
    event_type = r.u32("Spec ID event type")
    if event_type != EV_NO_ACTION:
        raise EventLogError(
            f"CCEL: first event has type {event_type:#x}; a crypto-agile log starts with the "
            "EV_NO_ACTION Spec ID event"
        )
    r.take(TCG_LEGACY_DIGEST_SIZE, "Spec ID event digest")
    size = r.u32("Spec ID event size")
    body = _Reader(r.take(size, "Spec ID event data"), "CCEL Spec ID event")
    if body.take(16, "signature") != TCG_SPEC_ID_SIGNATURE:
        raise EventLogError("CCEL: Spec ID event signature is not 'Spec ID Event03'")
    body.u32("platformClass")
    body.take(4, "spec version and uintnSize")
    count = body.u32("numberOfAlgorithms")
    if not 1 <= count <= _CCEL_MAX_SPEC_ALGORITHMS:
        raise EventLogError(f"CCEL: Spec ID event lists {count} digest algorithms")
    sizes: dict[int, int] = {}
    for _ in range(count):
        alg = body.u16("algorithmId")
        sizes[alg] = body.u16("digestSize")
    vendor_size = body.u8("vendorInfoSize")
    body.take(vendor_size, "vendorInfo")
    if body.offset != len(body.data):
        raise EventLogError("CCEL: Spec ID event has bytes after vendorInfo")
    if sizes.get(TPM_ALG_SHA384) != SHA384_SIZE:
        raise EventLogError("CCEL: Spec ID event does not declare SHA-384 with 48-byte digests")
    return sizes


def _parse_event2(r: _Reader, index: int, digest_sizes: dict[int, int]) -> Event:
    start = r.offset
    mr_index = r.u32(f"event {index} MR index")
    event_type = r.u32(f"event {index} type")
    count = r.u32(f"event {index} digest count")
    if count > len(digest_sizes):
        raise EventLogError(
            f"CCEL: event {index} at offset {start} has {count} digests; the Spec ID event "
            f"declares {len(digest_sizes)} algorithms"
        )
    sha384: bytes | None = None
    for _ in range(count):
        alg = r.u16(f"event {index} digest algorithm")
        if alg not in digest_sizes:
            raise EventLogError(
                f"CCEL: event {index} at offset {start} uses algorithm {alg:#06x} that the "
                "Spec ID event did not declare"
            )
        value = r.take(digest_sizes[alg], f"event {index} digest")
        if alg == TPM_ALG_SHA384:
            sha384 = value
    size = r.u32(f"event {index} data size")
    data = r.take(size, f"event {index} data")
    if sha384 is None:
        raise EventLogError(f"CCEL: event {index} at offset {start} has no SHA-384 digest")
    extended = event_type != EV_NO_ACTION
    if mr_index in CCEL_MR_INDEX_TO_RTMR:
        rtmr = CCEL_MR_INDEX_TO_RTMR[mr_index]
    elif not extended:
        rtmr = 0  # informational; its MR index is irrelevant because it is never extended
    else:
        raise EventLogError(
            f"CCEL: event {index} at offset {start} has MR index {mr_index}; only 1-4 "
            "(RTMR0-3) can be extended by an event"
        )
    return Event(index, rtmr, event_type, sha384, data, extended=extended)


# ---------------------------------------------------------------------------------------------
# Shroud's runtime log


def runtime_event_digest(name: str, payload: bytes) -> bytes:
    """The SHA-384 digest the bridge extends into RTMR3 for a runtime event.

    ``SHA-384("shroud/runtime-event/v1\\0" || le32(len(name)) || name || le64(len(payload)) ||
    payload)``, name in UTF-8. The lengths make the encoding unambiguous; the label keeps it
    apart from every other use of SHA-384 over these bytes.
    """
    _check_runtime_event(name, payload)
    encoded = name.encode("ascii")
    return hashlib.sha384(
        RUNTIME_EVENT_DIGEST_LABEL
        + struct.pack("<I", len(encoded))
        + encoded
        + struct.pack("<Q", len(payload))
        + payload
    ).digest()


def _check_runtime_event(name: str, payload: bytes) -> None:
    if not isinstance(name, str) or _RUNTIME_NAME_RE.fullmatch(name) is None:
        raise EventLogError(
            f"runtime event name {name!r} is not 1-64 characters of [A-Za-z0-9._:-] "
            "starting with a letter or digit"
        )
    if not isinstance(payload, bytes | bytearray):
        raise EventLogError(f"runtime event {name!r}: payload must be bytes")
    if len(payload) > _RUNTIME_MAX_PAYLOAD:
        raise EventLogError(
            f"runtime event {name!r}: payload is {len(payload)} bytes, limit {_RUNTIME_MAX_PAYLOAD}"
        )


class RuntimeEventLog:
    """Shroud's RTMR3 runtime event log: an ordered list of (name, payload) events.

    The bridge calls ``append`` as it extends RTMR3 with the returned digest and serves
    ``to_bytes()``; a verifier reads it back with ``from_bytes`` (or ``parse_event_log``). The
    serialised form stores no digests: they are always recomputed (docs/eventlog.md).
    """

    def __init__(self) -> None:
        self._events: list[tuple[str, bytes]] = []

    def append(self, name: str, payload: bytes) -> bytes:
        """Record an event and return the digest to extend into RTMR3."""
        digest = runtime_event_digest(name, payload)
        self._events.append((name, bytes(payload)))
        return digest

    @property
    def events(self) -> tuple[Event, ...]:
        """The events, with their recomputed digests, in order."""
        return tuple(
            Event(
                index=i,
                rtmr=RUNTIME_LOG_RTMR,
                event_type=0,
                digest=runtime_event_digest(name, payload),
                data=payload,
                name=name,
                recomputed=True,
            )
            for i, (name, payload) in enumerate(self._events)
        )

    def to_event_log(self) -> EventLog:
        return EventLog(EventLogFormat.SHROUD_RUNTIME, self.events)

    def to_bytes(self) -> bytes:
        """The canonical serialisation: one JSON object, sorted keys, no whitespace."""
        doc = {
            "format": RUNTIME_LOG_FORMAT,
            "events": [{"name": n, "payload": p.hex()} for n, p in self._events],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> RuntimeEventLog:
        """Parse a serialised runtime log; raises ``EventLogError`` on any deviation."""
        doc = _strict_json(data, "runtime event log")
        if not isinstance(doc, dict) or set(doc) != {"format", "events"}:
            raise EventLogError(
                "runtime event log must be a JSON object with exactly 'format' and 'events'"
            )
        if doc["format"] != RUNTIME_LOG_FORMAT:
            raise EventLogError(
                f"runtime event log format is {doc['format']!r}, expected {RUNTIME_LOG_FORMAT!r}"
            )
        if not isinstance(doc["events"], list):
            raise EventLogError("runtime event log: 'events' must be a list")
        log = cls()
        for i, record in enumerate(doc["events"]):
            if not isinstance(record, dict) or set(record) != {"name", "payload"}:
                raise EventLogError(
                    f"runtime event {i}: must be an object with exactly 'name' and 'payload'"
                )
            name, payload_hex = record["name"], record["payload"]
            if not isinstance(name, str):
                raise EventLogError(f"runtime event {i}: 'name' must be a string")
            log.append(name, _hex_field(payload_hex, f"runtime event {i} payload"))
        return log


# ---------------------------------------------------------------------------------------------
# dstack JSON log

_DSTACK_KEYS = frozenset({"imr", "event_type", "digest", "event", "event_payload"})


def dstack_event_digest(name: str, payload: bytes) -> bytes:
    """dstack's runtime event digest: SHA-384(le32(0x08000001) || ":" || name || ":" || payload)."""
    return hashlib.sha384(
        struct.pack("<I", DSTACK_RUNTIME_EVENT_TYPE) + b":" + name.encode() + b":" + payload
    ).digest()


def parse_dstack_event_log(data: bytes) -> EventLog:
    """Parse dstack's JSON event log (a list of ``{imr, event_type, digest, event,
    event_payload}`` records, ``imr`` 0-based RTMR index).

    Runtime events (type 0x08000001) get their digest recomputed from name and payload; the
    log's own digest is kept as ``claimed_digest`` so a mismatch can be reported.
    """
    doc = _strict_json(data, "dstack event log")
    if not isinstance(doc, list):
        raise EventLogError("dstack event log must be a JSON list of event records")
    events: list[Event] = []
    for i, record in enumerate(doc):
        if not isinstance(record, dict) or set(record) != _DSTACK_KEYS:
            raise EventLogError(
                f"dstack event {i}: must be an object with exactly the keys {sorted(_DSTACK_KEYS)}"
            )
        imr, event_type, name = record["imr"], record["event_type"], record["event"]
        if type(imr) is not int or not 0 <= imr < RTMR_COUNT:
            raise EventLogError(f"dstack event {i}: 'imr' must be an integer 0-3, got {imr!r}")
        if type(event_type) is not int or not 0 <= event_type <= 0xFFFFFFFF:
            raise EventLogError(f"dstack event {i}: 'event_type' must be a u32")
        if not isinstance(name, str):
            raise EventLogError(f"dstack event {i}: 'event' must be a string")
        claimed = _hex_field(record["digest"], f"dstack event {i} digest")
        if len(claimed) != SHA384_SIZE:
            raise EventLogError(f"dstack event {i}: digest is {len(claimed)} bytes, expected 48")
        payload = _hex_field(record["event_payload"], f"dstack event {i} payload")
        if event_type == DSTACK_RUNTIME_EVENT_TYPE:
            events.append(
                Event(
                    i,
                    imr,
                    event_type,
                    dstack_event_digest(name, payload),
                    payload,
                    name=name,
                    recomputed=True,
                    claimed_digest=claimed,
                )
            )
        else:
            events.append(Event(i, imr, event_type, claimed, payload))
    return EventLog(EventLogFormat.DSTACK_JSON, tuple(events))


# ---------------------------------------------------------------------------------------------
# Format detection


def parse_event_log(data: bytes) -> EventLog:
    """Parse any supported log, recognising its format from its content.

    A JSON object with Shroud's format marker is Shroud's runtime log; a JSON list is dstack's
    log; anything else must be a CCEL data file.
    """
    stripped = data.lstrip(b" \t\r\n")
    if stripped[:1] == b"{":
        return RuntimeEventLog.from_bytes(data).to_event_log()
    if stripped[:1] == b"[":
        return parse_dstack_event_log(data)
    return parse_ccel(data)


def _strict_json(data: bytes, what: str) -> Any:
    if len(data) > _MAX_JSON_LOG_BYTES:
        raise EventLogError(f"{what} is {len(data)} bytes; limit {_MAX_JSON_LOG_BYTES}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise EventLogError(f"{what}: duplicate key in a JSON object")
        return dict(pairs)

    def no_constant(token: str) -> Any:
        raise EventLogError(f"{what}: {token} is not allowed")

    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EventLogError(f"{what} is not valid UTF-8 JSON: {exc}") from None


def _hex_field(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EventLogError(f"{what} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise EventLogError(f"{what} is not valid hex") from None


# ---------------------------------------------------------------------------------------------
# Replay


def extend(register: bytes, digest: bytes) -> bytes:
    """One RTMR extension: SHA-384(register || digest)."""
    return hashlib.sha384(register + digest).digest()


def replay(events: Iterable[Event]) -> tuple[bytes, bytes, bytes, bytes]:
    """Replay events from zeroed registers; returns RTMR0-3."""
    rtmrs = [_ZERO_RTMR] * RTMR_COUNT
    for event in events:
        if event.extended:
            rtmrs[event.rtmr] = extend(rtmrs[event.rtmr], event.digest)
    return (rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3])


@dataclass(frozen=True)
class RegisterReplay:
    """The replay of one RTMR compared with the quote's value.

    ``covered`` says whether any given log describes this register; an uncovered register is
    replayed from no events and its comparison means nothing. When the values differ,
    ``diverges_at`` is the position (in ``events``) of the first event shown to be wrong, if
    one can be identified, and ``detail`` says what is known.
    """

    rtmr: int
    covered: bool
    replayed: bytes
    expected: bytes
    events: tuple[Event, ...]
    diverges_at: int | None
    detail: str

    @property
    def matches(self) -> bool:
        return hmac.compare_digest(self.replayed, self.expected)


@dataclass(frozen=True)
class ReplayResult:
    """The replay of every RTMR from the given logs, compared with a quote."""

    registers: tuple[RegisterReplay, RegisterReplay, RegisterReplay, RegisterReplay]

    @property
    def ok(self) -> bool:
        """True when every register some log covers replays to the quote's value."""
        return all(r.matches for r in self.registers if r.covered)

    def register(self, rtmr: int) -> RegisterReplay:
        return self.registers[rtmr]

    def verified_events(self, rtmr: int) -> tuple[Event, ...] | None:
        """The events of ``rtmr`` if a log covers it and its replay matched; else ``None``.

        Only these events may be believed: anything read from a log that does not reproduce
        the quote's register is the log's word, not the TD's.
        """
        reg = self.registers[rtmr]
        if reg.covered and reg.matches:
            return reg.events
        return None


def replay_against(logs: Sequence[EventLog], rtmrs: Sequence[bytes]) -> ReplayResult:
    """Replay ``logs`` (events of each register in the order the logs are given) and compare
    each register with the quote's ``rtmrs`` (RTMR0-3)."""
    if len(rtmrs) != RTMR_COUNT or any(len(v) != SHA384_SIZE for v in rtmrs):
        raise EventLogError("replay needs the quote's four 48-byte RTMR values")
    results = []
    for rtmr in range(RTMR_COUNT):
        covered = any(rtmr in log.covered_rtmrs for log in logs)
        events = tuple(e for log in logs for e in log.events if e.rtmr == rtmr and e.extended)
        results.append(_compare_register(rtmr, covered, events, rtmrs[rtmr]))
    return ReplayResult((results[0], results[1], results[2], results[3]))


def _compare_register(
    rtmr: int, covered: bool, events: tuple[Event, ...], expected: bytes
) -> RegisterReplay:
    value = _ZERO_RTMR
    prefix_match: int | None = 0 if hmac.compare_digest(value, expected) else None
    for position, event in enumerate(events):
        value = extend(value, event.digest)
        if hmac.compare_digest(value, expected):
            prefix_match = position + 1
    if hmac.compare_digest(value, expected):
        detail = f"RTMR{rtmr}: {len(events)} events replay to the quote's value"
        return RegisterReplay(rtmr, covered, value, expected, events, None, detail)
    if not covered:
        detail = f"RTMR{rtmr}: no log given for this register"
        return RegisterReplay(rtmr, covered, value, expected, events, None, detail)
    for position, event in enumerate(events):
        if event.digest_mismatch:
            detail = (
                f"RTMR{rtmr}: event {event.index} ({event.name!r}) carries a digest its name "
                "and payload do not produce"
            )
            return RegisterReplay(rtmr, covered, value, expected, events, position, detail)
    if prefix_match is not None:
        detail = (
            f"RTMR{rtmr}: the quote's value is reached after {prefix_match} of {len(events)} "
            "events; the log has events the quote does not"
        )
        return RegisterReplay(rtmr, covered, value, expected, events, prefix_match, detail)
    detail = (
        f"RTMR{rtmr}: no prefix of the {len(events)} logged events reproduces the quote's "
        "value (an event is missing or altered)"
    )
    return RegisterReplay(rtmr, covered, value, expected, events, None, detail)
