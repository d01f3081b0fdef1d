"""Quotes through Linux configfs-tsm (``/sys/kernel/config/tsm/report``, Linux 6.7+).

One private report object per quote: ``mkdir report/<unique>``; check ``provider`` is
``tdx_guest``; read ``generation``; write the 64-byte REPORTDATA to ``inblob``; re-read
``generation`` and require exactly one more write than before; read ``outblob``; read
``generation`` again and require it unchanged; ``rmdir``. configfs lets any process with access
write to the same object, and the kernel regenerates ``outblob`` from whatever ``inblob`` holds
when it is read, so without the generation check a concurrent writer could make us serve a quote
over its REPORTDATA ([TSM] in ``linux_abi``: "Userspace can detect conflicts by checking
generation before writing to any attribute and making sure the number of writes matches
expectations after reading outblob"). As a second line, the quote's own REPORTDATA is compared
with ours.

Tested against a fake configfs tree in a temporary directory that implements the kernel's side;
never run against real TDX hardware here.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Final

from bridge.config import QuoteProviderKind
from bridge.providers import linux_abi
from bridge.providers.base import (
    DEFAULT_CCEL_DATA_PATH,
    DEFAULT_CCEL_TABLE_PATH,
    ConcurrentReportError,
    FirmwareEventLog,
    ProviderUnavailableError,
    QuoteGenerationError,
    check_quote_binds,
    check_report_data,
    read_firmware_event_log,
)
from bridge.providers.device import FileIo, OsFiles
from bridge.providers.rtmr import RtmrExtender, default_extender

_log = logging.getLogger(__name__)

_MAX_GENERATION_TEXT: Final = 20  # a u64 in decimal plus newline fits
_REPORT_DIR_PREFIX: Final = "shroud-"


class ConfigfsTsmProvider:
    """:class:`~bridge.providers.base.QuoteProvider` over configfs-tsm."""

    def __init__(
        self,
        root: str | Path = linux_abi.DEFAULT_CONFIGFS_TSM_ROOT,
        *,
        rtmr_extender: RtmrExtender | None = None,
        ccel_path: str = DEFAULT_CCEL_DATA_PATH,
        ccel_table_path: str | None = DEFAULT_CCEL_TABLE_PATH,
        files: FileIo | None = None,
    ) -> None:
        self._reports = Path(root) / "report"
        self._files = files if files is not None else OsFiles()
        self._extender = rtmr_extender if rtmr_extender is not None else default_extender()
        self._ccel_path = ccel_path
        self._ccel_table_path = ccel_table_path

    @property
    def kind(self) -> QuoteProviderKind:
        return QuoteProviderKind.CONFIGFS_TSM

    @property
    def simulated(self) -> bool:
        return False

    def get_quote(self, report_data: bytes) -> bytes:
        """A TDX quote over ``report_data`` (see the module docstring for the protocol)."""
        report_data = check_report_data(report_data)
        if not self._reports.is_dir():
            raise ProviderUnavailableError(f"{self._reports} does not exist: no configfs-tsm")
        directory = self._reports / f"{_REPORT_DIR_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        try:
            self._files.mkdir(directory)
        except OSError as exc:
            raise ProviderUnavailableError(f"cannot create {directory}: {exc}") from exc
        try:
            return self._quote_in(directory, report_data)
        finally:
            try:
                self._files.rmdir(directory)
            except OSError as exc:
                # The quote (or the error) stands; a leaked report object only costs memory.
                _log.warning("could not remove configfs report %s: %s", directory, exc)

    def _quote_in(self, directory: Path, report_data: bytes) -> bytes:
        try:
            provider = self._files.read(directory / "provider").decode("ascii", "replace").strip()
        except OSError as exc:
            raise ProviderUnavailableError(f"cannot read {directory}/provider: {exc}") from exc
        if provider != linux_abi.CONFIGFS_TDX_PROVIDER:
            raise ProviderUnavailableError(
                f"configfs-tsm provider is {provider!r}, not {linux_abi.CONFIGFS_TDX_PROVIDER!r}"
            )
        initial = self._generation(directory)
        try:
            self._files.write(directory / "inblob", report_data)
        except OSError as exc:
            raise QuoteGenerationError(f"writing {directory}/inblob: {exc}") from exc
        self._expect_generation(directory, initial + 1, "after writing inblob")
        try:
            quote = self._files.read(directory / "outblob")
        except OSError as exc:
            raise QuoteGenerationError(f"reading {directory}/outblob: {exc}") from exc
        self._expect_generation(directory, initial + 1, "after reading outblob")
        if not quote:
            raise QuoteGenerationError(f"{directory}/outblob is empty")
        return check_quote_binds(quote, report_data)

    def _generation(self, directory: Path) -> int:
        try:
            text = self._files.read(directory / "generation")
        except OSError as exc:
            raise QuoteGenerationError(f"reading {directory}/generation: {exc}") from exc
        value = text.strip()
        if not value.isdigit() or len(text) > _MAX_GENERATION_TEXT:
            raise QuoteGenerationError(f"{directory}/generation is not a counter: {text[:32]!r}")
        return int(value)

    def _expect_generation(self, directory: Path, expected: int, when: str) -> None:
        actual = self._generation(directory)
        if actual != expected:
            raise ConcurrentReportError(
                f"configfs-tsm generation is {actual} {when}, expected {expected}: another "
                "writer changed the report, so its quote may not be over our REPORTDATA"
            )

    def extend_rtmr(self, index: int, digest: bytes) -> None:
        """Extend through the kernel's RTMR interface (sysfs, or the ioctl on older kernels)."""
        self._extender.extend(index, digest)

    def read_rtmr(self, index: int) -> bytes:
        """Read through the same kernel interface the extensions go through."""
        return self._extender.read(index)

    def firmware_event_log(self) -> FirmwareEventLog | None:
        return read_firmware_event_log(self._ccel_path, self._ccel_table_path)
