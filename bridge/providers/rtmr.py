"""Reading and extending a TD's runtime measurement registers from Linux, with a read-back check.

Two kernel interfaces exist ([SYSFS] and [DCAP] in ``linux_abi``):
- Linux 6.16+: write 48 bytes to ``/sys/class/misc/tdx_guest/measurements/rtmrN:sha384``.
- Older Intel-patched kernels: the ``TDX_CMD_EXTEND_RTMR`` ioctl on ``/dev/tdx_guest``.

Both extenders read the register before and after and require
``after == SHA-384(before || digest)``, so an extension that silently did nothing, went to
another register or raced with another writer stops the bridge from starting with an event
log that would not replay. Both can also just read a register (the bridge reads RTMR3 at start
to find what earlier processes in the same TD measured). Neither has been run on TDX hardware
here; they are tested against fakes of the kernel side.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from bridge.providers import linux_abi
from bridge.providers.base import (
    ProviderUnavailableError,
    QuoteGenerationError,
    RtmrExtendError,
    check_rtmr_extension,
    check_rtmr_index,
)
from bridge.providers.device import DeviceIo, FileIo, LinuxDevice, OsFiles


class RtmrExtender(Protocol):
    """Reads and extends the RTMRs of the running TD."""

    def extend(self, index: int, digest: bytes) -> None:
        """RTMR[index] = SHA-384(RTMR[index] || digest), verified; RtmrExtendError otherwise."""

    def read(self, index: int) -> bytes:
        """The current 48-byte value of RTMR[index]; RtmrExtendError if it cannot be read."""


def _check_extended(index: int, before: bytes, digest: bytes, after: bytes) -> None:
    if after != hashlib.sha384(before + digest).digest():
        raise RtmrExtendError(
            f"RTMR{index} after extension is not SHA-384(before || digest): the extension was "
            "lost or another writer extended the register concurrently"
        )


class SysfsRtmrExtender:
    """Extends through ``measurements/rtmrN:sha384`` (Linux 6.16+)."""

    def __init__(
        self,
        measurements_dir: str | Path = linux_abi.DEFAULT_MEASUREMENTS_DIR,
        *,
        files: FileIo | None = None,
    ) -> None:
        self._dir = Path(measurements_dir)
        self._files = files if files is not None else OsFiles()

    def attribute(self, index: int) -> Path:
        """The sysfs attribute of RTMR ``index``."""
        return self._dir / f"rtmr{index}:sha384"

    def read(self, index: int) -> bytes:
        path = self.attribute(check_rtmr_index(index))
        try:
            value = self._files.read(path)
        except FileNotFoundError as exc:
            raise ProviderUnavailableError(f"{path} does not exist") from exc
        except OSError as exc:
            raise RtmrExtendError(f"reading RTMR{index} through {path}: {exc}") from exc
        if len(value) != linux_abi.TDREPORT_RTMR_SIZE:
            raise RtmrExtendError(f"{path} returned {len(value)} bytes, not 48")
        return value

    def extend(self, index: int, digest: bytes) -> None:
        digest = check_rtmr_extension(index, digest)
        path = self.attribute(index)
        try:
            before = self._files.read(path)
            self._files.write(path, digest)
            after = self._files.read(path)
        except FileNotFoundError as exc:
            raise ProviderUnavailableError(f"{path} does not exist") from exc
        except OSError as exc:
            raise RtmrExtendError(f"extending RTMR{index} through {path}: {exc}") from exc
        for value in (before, after):
            if len(value) != linux_abi.TDREPORT_RTMR_SIZE:
                raise RtmrExtendError(f"{path} returned {len(value)} bytes, not 48")
        _check_extended(index, before, digest, after)


class IoctlRtmrExtender:
    """Extends through the ``TDX_CMD_EXTEND_RTMR`` ioctl; reads RTMRs back from a TDREPORT."""

    def __init__(
        self,
        device_path: str = linux_abi.DEFAULT_DEVICE_PATH,
        *,
        device: DeviceIo | None = None,
    ) -> None:
        self._path = device_path
        self._device = device if device is not None else LinuxDevice()

    def read(self, index: int) -> bytes:
        index = check_rtmr_index(index)
        fd = open_device(self._device, self._path)
        try:
            return read_rtmr(self._device, fd, index)
        finally:
            self._device.close(fd)

    def extend(self, index: int, digest: bytes) -> None:
        digest = check_rtmr_extension(index, digest)
        fd = open_device(self._device, self._path)
        try:
            before = read_rtmr(self._device, fd, index)
            request = bytearray(digest + bytes([index]))
            try:
                self._device.ioctl(fd, linux_abi.TDX_CMD_EXTEND_RTMR, request)
            except OSError as exc:
                raise RtmrExtendError(
                    f"TDX_CMD_EXTEND_RTMR on {self._path} failed: {os.strerror(exc.errno or 0)}"
                ) from exc
            after = read_rtmr(self._device, fd, index)
        finally:
            self._device.close(fd)
        _check_extended(index, before, digest, after)


def open_device(device: DeviceIo, path: str) -> int:
    """Open the TDX guest device; ProviderUnavailableError if it is missing or refused."""
    try:
        return device.open(path)
    except FileNotFoundError as exc:
        raise ProviderUnavailableError(f"{path} does not exist: not a TDX guest?") from exc
    except OSError as exc:
        raise ProviderUnavailableError(f"cannot open {path}: {exc.strerror}") from exc


def get_tdreport(device: DeviceIo, fd: int, report_data: bytes) -> bytes:
    """TDX_CMD_GET_REPORT0: the 1024-byte TDREPORT over ``report_data``.

    Raises :class:`QuoteGenerationError` if the ioctl fails or the report does not carry
    ``report_data``.
    """
    buffer = bytearray(report_data + bytes(linux_abi.TDX_REPORT_LEN))
    try:
        device.ioctl(fd, linux_abi.TDX_CMD_GET_REPORT0, buffer)
    except OSError as exc:
        raise QuoteGenerationError(
            f"TDX_CMD_GET_REPORT0 failed: {os.strerror(exc.errno or 0)}"
        ) from exc
    if len(buffer) != linux_abi.TDX_REPORTDATA_LEN + linux_abi.TDX_REPORT_LEN:
        raise QuoteGenerationError("TDX_CMD_GET_REPORT0 changed the request size")
    report = bytes(buffer[linux_abi.TDX_REPORTDATA_LEN :])
    offset, size = linux_abi.TDREPORT_REPORTDATA
    if report[offset : offset + size] != report_data:
        raise QuoteGenerationError("the TDREPORT from the kernel is over different REPORTDATA")
    return report


def read_rtmr(device: DeviceIo, fd: int, index: int) -> bytes:
    """The current value of RTMR ``index``, from a fresh TDREPORT."""
    try:
        report = get_tdreport(device, fd, bytes(linux_abi.TDX_REPORTDATA_LEN))
    except QuoteGenerationError as exc:
        raise RtmrExtendError(f"reading RTMR{index} back: {exc}") from exc
    start = linux_abi.TDREPORT_RTMR_OFFSET + index * linux_abi.TDREPORT_RTMR_SIZE
    return report[start : start + linux_abi.TDREPORT_RTMR_SIZE]


def default_extender(
    device_path: str = linux_abi.DEFAULT_DEVICE_PATH,
    measurements_dir: str | Path = linux_abi.DEFAULT_MEASUREMENTS_DIR,
) -> RtmrExtender:
    """The sysfs extender when the kernel has it, else the ioctl one."""
    sysfs = SysfsRtmrExtender(measurements_dir)
    if sysfs.attribute(3).exists():
        return sysfs
    return IoctlRtmrExtender(device_path)
