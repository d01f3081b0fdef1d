"""Quotes through the legacy ``/dev/tdx_guest`` ioctls (Intel-patched kernels before configfs-tsm).

Two steps, as Intel's ``libtdx_attest`` does them ([DCAP] in ``linux_abi``):
1. ``TDX_CMD_GET_REPORT0`` turns REPORTDATA into a 1024-byte TDREPORT (checked to carry it).
2. ``TDX_CMD_GET_QUOTE`` sends the TDREPORT, wrapped in a QGS GET_QUOTE_REQ message with a
   4-byte big-endian length prefix, through the GetQuote TDVMCALL in a shared buffer that starts
   with ``struct tdx_quote_hdr``; the VMM writes back a status, the output length and a QGS
   GET_QUOTE_RESP holding the quote. Every length in the answer is checked against the buffer
   before it is used.

Caveat, stated plainly: this ioctl never reached mainline Linux and its numbering differs between
out-of-tree drivers (Intel's default ``_IOR('T', 4)``, its "V3" ``_IOWR('T', 4)``, google's
go-tdx-guest ``_IOWR('T', 2)`` with a raw TDREPORT instead of a QGS message). This module follows
Intel's default; ``get_quote_request`` can be overridden. It is tested only against a fake device
that implements the kernel and VMM side; it has not been run on TDX hardware here. Prefer
configfs-tsm wherever the kernel has it.
"""

from __future__ import annotations

import ctypes
import os
import struct

from bridge.config import QuoteProviderKind
from bridge.providers import linux_abi as abi
from bridge.providers.base import (
    DEFAULT_CCEL_DATA_PATH,
    DEFAULT_CCEL_TABLE_PATH,
    FirmwareEventLog,
    QuoteGenerationError,
    check_quote_binds,
    check_report_data,
    read_firmware_event_log,
)
from bridge.providers.device import DeviceIo, LinuxDevice
from bridge.providers.rtmr import IoctlRtmrExtender, RtmrExtender, get_tdreport, open_device

_STATUS_NAMES = {
    abi.GET_QUOTE_IN_FLIGHT: "still in flight",
    abi.GET_QUOTE_ERROR: "error",
    abi.GET_QUOTE_SERVICE_UNAVAILABLE: "quoting service unavailable",
}


def build_get_quote_request(tdreport: bytes) -> bytes:
    """The ``data`` of the GetQuote buffer: be32(length) || QGS GET_QUOTE_REQ(tdreport)."""
    size = abi.QGS_MSG_HEADER_SIZE + abi.QGS_BODY_SIZES_SIZE + len(tdreport)
    message = (
        struct.pack(
            abi.QGS_MSG_HEADER_FORMAT,
            abi.QGS_MSG_MAJOR_VERSION,
            abi.QGS_MSG_MINOR_VERSION,
            abi.QGS_MSG_GET_QUOTE_REQ,
            size,
            0,
        )
        + struct.pack(abi.QGS_BODY_SIZES_FORMAT, len(tdreport), 0)
        + tdreport
    )
    return struct.pack(">I", len(message)) + message


def parse_get_quote_response(data: bytes) -> bytes:
    """The quote in ``be32(length) || QGS GET_QUOTE_RESP``; QuoteGenerationError if malformed."""
    prefix = abi.QGS_LENGTH_PREFIX_SIZE
    if len(data) < prefix + abi.QGS_MSG_HEADER_SIZE + abi.QGS_BODY_SIZES_SIZE:
        raise QuoteGenerationError(f"GetQuote response is {len(data)} bytes, too short")
    (length,) = struct.unpack_from(">I", data, 0)
    if length != len(data) - prefix:
        raise QuoteGenerationError(
            f"GetQuote response length prefix says {length}, buffer holds {len(data) - prefix}"
        )
    major, _minor, kind, size, error = struct.unpack_from(abi.QGS_MSG_HEADER_FORMAT, data, prefix)
    if major != abi.QGS_MSG_MAJOR_VERSION or kind != abi.QGS_MSG_GET_QUOTE_RESP:
        raise QuoteGenerationError(f"GetQuote response is QGS v{major} type {kind}, not a quote")
    if size != length:
        raise QuoteGenerationError(f"QGS message size {size} != its length prefix {length}")
    if error != 0:
        raise QuoteGenerationError(f"quoting service returned error code {error:#x}")
    body = prefix + abi.QGS_MSG_HEADER_SIZE
    id_size, quote_size = struct.unpack_from(abi.QGS_BODY_SIZES_FORMAT, data, body)
    start = body + abi.QGS_BODY_SIZES_SIZE + id_size
    if quote_size == 0 or start + quote_size != len(data):
        raise QuoteGenerationError(
            f"QGS response sizes (id {id_size}, quote {quote_size}) do not fill the message"
        )
    return data[start : start + quote_size]


class TdxGuestProvider:
    """:class:`~bridge.providers.base.QuoteProvider` over the ``/dev/tdx_guest`` ioctls."""

    def __init__(
        self,
        device_path: str = abi.DEFAULT_DEVICE_PATH,
        *,
        device: DeviceIo | None = None,
        rtmr_extender: RtmrExtender | None = None,
        get_quote_request: int = abi.TDX_CMD_GET_QUOTE,
        ccel_path: str = DEFAULT_CCEL_DATA_PATH,
        ccel_table_path: str | None = DEFAULT_CCEL_TABLE_PATH,
    ) -> None:
        self._path = device_path
        self._device = device if device is not None else LinuxDevice()
        self._extender = (
            rtmr_extender
            if rtmr_extender is not None
            else IoctlRtmrExtender(device_path, device=self._device)
        )
        self._get_quote_request = get_quote_request
        self._ccel_path = ccel_path
        self._ccel_table_path = ccel_table_path

    @property
    def kind(self) -> QuoteProviderKind:
        return QuoteProviderKind.TDX_GUEST

    @property
    def simulated(self) -> bool:
        return False

    def get_quote(self, report_data: bytes) -> bytes:
        """A TDX quote over ``report_data`` (see the module docstring for the protocol)."""
        report_data = check_report_data(report_data)
        fd = open_device(self._device, self._path)
        try:
            tdreport = get_tdreport(self._device, fd, report_data)
            quote = self._get_quote(fd, tdreport)
        finally:
            self._device.close(fd)
        return check_quote_binds(quote, report_data)

    def _get_quote(self, fd: int, tdreport: bytes) -> bytes:
        payload = build_get_quote_request(tdreport)
        # The kernel reads the request from, and writes the answer to, this user buffer; it
        # must stay alive (referenced) until the ioctl returns.
        shared = ctypes.create_string_buffer(abi.QUOTE_REQ_BUF_SIZE)
        header = struct.pack(abi.QUOTE_HDR_FORMAT, abi.QUOTE_HDR_VERSION, 0, len(payload), 0)
        ctypes.memmove(shared, header + payload, len(header) + len(payload))
        request = bytearray(struct.pack("<QQ", ctypes.addressof(shared), abi.QUOTE_REQ_BUF_SIZE))
        try:
            self._device.ioctl(fd, self._get_quote_request, request)
        except OSError as exc:
            raise QuoteGenerationError(
                f"TDX_CMD_GET_QUOTE on {self._path} failed: {os.strerror(exc.errno or 0)}"
            ) from exc
        raw = shared.raw
        _version, status, _in_len, out_len = struct.unpack_from(abi.QUOTE_HDR_FORMAT, raw, 0)
        if status != abi.GET_QUOTE_SUCCESS:
            name = _STATUS_NAMES.get(status, "unknown status")
            raise QuoteGenerationError(f"GetQuote status {status:#x} ({name})")
        capacity = abi.QUOTE_REQ_BUF_SIZE - abi.QUOTE_HDR_SIZE
        if not abi.QGS_LENGTH_PREFIX_SIZE < out_len <= capacity:
            raise QuoteGenerationError(f"GetQuote out_len {out_len} outside 5..{capacity}")
        return parse_get_quote_response(raw[abi.QUOTE_HDR_SIZE : abi.QUOTE_HDR_SIZE + out_len])

    def extend_rtmr(self, index: int, digest: bytes) -> None:
        """Extend through the kernel's RTMR interface (the ioctl by default)."""
        self._extender.extend(index, digest)

    def read_rtmr(self, index: int) -> bytes:
        """Read through the same kernel interface the extensions go through."""
        return self._extender.read(index)

    def firmware_event_log(self) -> FirmwareEventLog | None:
        return read_firmware_event_log(self._ccel_path, self._ccel_table_path)
