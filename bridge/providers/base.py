"""What every quote provider promises, the errors they raise, and the checks they share.

A quote provider turns 64 bytes of REPORTDATA into a TDX quote and extends runtime measurement
registers. It is deliberately dumb about *which* REPORTDATA: the "no oracle" rule (DESIGN.md
section 5) is enforced by its only caller, the bridge's handshake, which computes REPORTDATA
itself from the ClientHello and its own key shares (``docs/protocol.md``, "REPORTDATA").
Nothing in the bridge may pass caller-chosen bytes to :meth:`QuoteProvider.get_quote`, and no
provider is reachable from the network except through that handshake.

Providers block (file I/O, ioctls, and on real hardware a round trip to the quoting enclave that
can take seconds); the asyncio server calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from attestation import _spec
from bridge.config import QuoteProviderKind

REPORT_DATA_SIZE: Final = 64  # Intel TDX Module ABI, TDG.MR.REPORT: REPORTDATA is 64 bytes
RTMR_DIGEST_SIZE: Final = 48  # SHA-384; TDG.MR.RTMR.EXTEND takes a 48-byte extension
# Linux lets a guest extend RTMR2 and RTMR3 (RTMR0/1 belong to firmware and boot loader).
EXTENDABLE_RTMRS: Final = (2, 3)
RTMR_COUNT: Final = 4  # Intel TDX Module ABI, TDINFO_STRUCT: RTMR0..RTMR3
# Where Linux exposes the firmware's CC event log (ACPI CCEL table and its data).
DEFAULT_CCEL_DATA_PATH: Final = "/sys/firmware/acpi/tables/data/CCEL"
DEFAULT_CCEL_TABLE_PATH: Final = "/sys/firmware/acpi/tables/CCEL"

_REPORT_DATA_FIELD = next(f for f in _spec.TD_REPORT10_FIELDS if f[0] == "report_data")
_V5_DESCRIPTOR_SIZE = _spec.V5_BODY_TYPE_SIZE + _spec.V5_BODY_SIZE_SIZE


class QuoteProviderError(Exception):
    """Base of every error a quote provider raises; the message says which step failed."""


class ReportDataError(QuoteProviderError, ValueError):
    """REPORTDATA (or an RTMR extension) has the wrong type or size."""


class ProviderUnavailableError(QuoteProviderError):
    """The provider's kernel interface is missing, or is not TDX (e.g. provider is sev_guest)."""


class QuoteGenerationError(QuoteProviderError):
    """The kernel, the VMM or the quoting service failed, or returned something inconsistent."""


class ConcurrentReportError(QuoteGenerationError):
    """Another writer touched the configfs-tsm report while ours was in flight.

    The quote read back may have been produced over someone else's REPORTDATA, so it is
    discarded.
    """


class RtmrExtendError(QuoteProviderError):
    """Reading or extending an RTMR failed, or the register did not end up as expected."""


class RuntimeLogStateError(QuoteProviderError):
    """RTMR3 and the persisted runtime log disagree, so no log this bridge could serve replays.

    Raised at start; the message names the state file and the fix (restart the TD).
    """


@dataclass(frozen=True)
class FirmwareEventLog:
    """The CCEL event log as the kernel exposes it: the log area, and the ACPI table if read."""

    data: bytes
    table: bytes | None


@runtime_checkable
class QuoteProvider(Protocol):
    """A source of TDX quotes and the RTMR extensions that go with them."""

    @property
    def kind(self) -> QuoteProviderKind:
        """Which provider this is (as configured)."""

    @property
    def simulated(self) -> bool:
        """True for development quotes that no production policy accepts."""

    def get_quote(self, report_data: bytes) -> bytes:
        """A quote whose REPORTDATA is exactly ``report_data`` (64 bytes, else ReportDataError).

        The caller must have computed ``report_data`` from the handshake; see the module
        docstring. Raises a :class:`QuoteProviderError` subclass on any failure.
        """

    def extend_rtmr(self, index: int, digest: bytes) -> None:
        """Extend RTMR ``index`` (2 or 3) with a 48-byte digest: RTMR = SHA-384(RTMR || digest)."""

    def read_rtmr(self, index: int) -> bytes:
        """The current 48-byte value of RTMR ``index`` (0-3); RtmrExtendError if unreadable.

        The bridge reads RTMR3 at start: it persists for the TD's lifetime, across restarts
        of the bridge process (``bridge.providers.measure``).
        """

    def firmware_event_log(self) -> FirmwareEventLog | None:
        """The CCEL log to ship with the evidence (RTMR0-2 replay), or None if there is none."""


def check_report_data(report_data: object) -> bytes:
    """Return ``report_data`` as bytes if it is exactly 64 bytes; raise ReportDataError if not."""
    if not isinstance(report_data, bytes | bytearray | memoryview):
        raise ReportDataError(f"REPORTDATA must be bytes, not {type(report_data).__name__}")
    data = bytes(report_data)
    if len(data) != REPORT_DATA_SIZE:
        raise ReportDataError(f"REPORTDATA must be {REPORT_DATA_SIZE} bytes, not {len(data)}")
    return data


def check_rtmr_extension(index: object, digest: object) -> bytes:
    """Validate an RTMR extension request; return the digest as bytes."""
    if not isinstance(index, int) or isinstance(index, bool) or index not in EXTENDABLE_RTMRS:
        raise ReportDataError(f"only RTMR {EXTENDABLE_RTMRS} can be extended, not {index!r}")
    if not isinstance(digest, bytes | bytearray) or len(digest) != RTMR_DIGEST_SIZE:
        size = len(digest) if isinstance(digest, bytes | bytearray) else type(digest).__name__
        raise ReportDataError(f"an RTMR extension is {RTMR_DIGEST_SIZE} bytes, not {size}")
    return bytes(digest)


def check_rtmr_index(index: object) -> int:
    """Return ``index`` if it names an RTMR (0-3); raise ReportDataError if not."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < RTMR_COUNT:
        raise ReportDataError(f"there are RTMRs 0 to {RTMR_COUNT - 1}, not {index!r}")
    return index


def quote_report_data(quote: bytes) -> bytes:
    """REPORTDATA of a TDX quote v4 or v5, read by layout ([QGL] "Quote Format" tables).

    Providers use this to check that the quote the kernel handed back is over the REPORTDATA
    they asked for; full parsing and verification belong to ``attestation``.
    """
    if len(quote) < _spec.HEADER_SIZE:
        raise QuoteGenerationError(f"quote is {len(quote)} bytes, shorter than its header")
    version = struct.unpack_from("<H", quote, _spec.HEADER_VERSION[0])[0]
    if version == 4:
        body = _spec.HEADER_SIZE
    elif version == 5:
        body = _spec.HEADER_SIZE + _V5_DESCRIPTOR_SIZE
    else:
        raise QuoteGenerationError(f"quote version {version} is not 4 or 5")
    _, offset, size = _REPORT_DATA_FIELD
    start = body + offset
    if len(quote) < start + size:
        raise QuoteGenerationError(f"quote is {len(quote)} bytes, too short for REPORTDATA")
    return quote[start : start + size]


def check_quote_binds(quote: bytes, report_data: bytes) -> bytes:
    """Return ``quote`` if its REPORTDATA is ``report_data``; raise QuoteGenerationError if not."""
    if quote_report_data(quote) != report_data:
        raise QuoteGenerationError(
            "the quote returned by the kernel is over different REPORTDATA than requested"
        )
    return quote


def read_firmware_event_log(data_path: str, table_path: str | None) -> FirmwareEventLog | None:
    """Read the CCEL log (and table) if the kernel exposes them; None if there is no log."""
    try:
        with open(data_path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProviderUnavailableError(f"cannot read CCEL at {data_path}: {exc.strerror}") from exc
    table = None
    if table_path is not None:
        try:
            with open(table_path, "rb") as handle:
                table = handle.read()
        except FileNotFoundError:
            table = None
        except OSError as exc:
            raise ProviderUnavailableError(
                f"cannot read the CCEL table at {table_path}: {exc.strerror}"
            ) from exc
    return FirmwareEventLog(data=data, table=table)
