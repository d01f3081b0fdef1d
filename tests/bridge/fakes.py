"""Fakes of the kernel side of the TDX guest interfaces, for the quote provider tests.

Each fake implements what Linux does behind the interface (configfs-tsm report objects, sysfs
RTMR attributes, /dev/tdx_guest ioctls including the GetQuote shared buffer) over real files in
a temporary directory or real process memory, and uses real quotes from the shared vectors as
the quoting enclave's output, with REPORTDATA spliced in where the quote format puts it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

from bridge.providers import linux_abi as abi

# Where REPORTDATA sits in a quote: header (48) [+ v5 body descriptor (6)] + 520 in the body.
_REPORT_DATA_AT = {4: 48 + 520, 5: 48 + 6 + 520}


def splice_report_data(quote: bytes, report_data: bytes) -> bytes:
    """``quote`` with its REPORTDATA replaced (what the QE would sign for ``report_data``)."""
    at = _REPORT_DATA_AT[struct.unpack_from("<H", quote)[0]]
    return quote[:at] + report_data + quote[at + 64 :]


class FakeConfigfs:
    """A configfs-tsm tree under ``root``, with the kernel's semantics behind :class:`FileIo`.

    ``mkdir`` under ``report/`` creates the attributes; writing ``inblob`` bumps ``generation``;
    reading ``outblob`` produces a quote over the current ``inblob``. Hooks simulate a concurrent
    writer at the two moments that matter.
    """

    def __init__(self, root: Path, template_quote: bytes, provider: str = "tdx_guest") -> None:
        self.root = root
        (root / "report").mkdir(parents=True)
        self.template = template_quote
        self.provider = provider
        self.after_inblob_write: Callable[[Path], None] | None = None
        self.after_outblob_read: Callable[[Path], None] | None = None
        self.outblob_override: bytes | None = None
        self.removed: list[Path] = []

    def intruder_write(self, directory: Path, data: bytes) -> None:
        """Another process writes ``inblob`` of the same report object."""
        (directory / "inblob").write_bytes(data)
        self._bump(directory)

    def _bump(self, directory: Path) -> None:
        path = directory / "generation"
        path.write_text(f"{int(path.read_text()) + 1}\n")

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        (path / "inblob").write_bytes(b"")
        (path / "outblob").write_bytes(b"")

    def rmdir(self, path: Path) -> None:
        self.removed.append(path)
        shutil.rmtree(path)

    def read(self, path: Path) -> bytes:
        if path.name == "outblob":
            inblob = (path.parent / "inblob").read_bytes()
            quote = splice_report_data(self.template, inblob.ljust(64, b"\0"))
            path.write_bytes(self.outblob_override if self.outblob_override is not None else quote)
            data = path.read_bytes()
            if self.after_outblob_read is not None:
                self.after_outblob_read(path.parent)
            return data
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        if path.name == "inblob":
            self._bump(path.parent)
            if self.after_inblob_write is not None:
                self.after_inblob_write(path.parent)


class FakeRtmrSysfs:
    """``measurements/rtmrN:sha384`` attributes: read gives the value, a 48-byte write extends."""

    def __init__(self, directory: Path, *, lose_writes: bool = False) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lose_writes = lose_writes
        for i in range(4):
            (self.dir / f"rtmr{i}:sha384").write_bytes(bytes(48))

    def value(self, index: int) -> bytes:
        return (self.dir / f"rtmr{index}:sha384").read_bytes()

    def mkdir(self, path: Path) -> None:
        raise AssertionError("sysfs has no mkdir")

    def rmdir(self, path: Path) -> None:
        raise AssertionError("sysfs has no rmdir")

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        if len(data) != 48:
            raise OSError(errno.EINVAL, "bad size")
        if not self.lose_writes:
            path.write_bytes(hashlib.sha384(path.read_bytes() + data).digest())


class FakeTdxDevice:
    """``/dev/tdx_guest`` answering GET_REPORT0, EXTEND_RTMR and GET_QUOTE like the kernel.

    GET_QUOTE reads the request from, and writes the answer into, the process memory the
    ``tdx_quote_req`` points at, as ``copy_from_user``/``copy_to_user`` would. Attributes
    set fault injections: ``status``, ``qgs_error``, ``tamper_*``.
    """

    def __init__(self, template_quote: bytes, path: str = "/dev/tdx_guest") -> None:
        self.template = template_quote
        self.path = path
        self.rtmrs = [bytes(48) for _ in range(4)]
        self.open_fds: set[int] = set()
        self.status = abi.GET_QUOTE_SUCCESS
        self.qgs_error = 0
        self.out_len_override: int | None = None
        self.tamper_report_data = False
        self.tamper_quote_report_data = False
        self.tamper_length_prefix = False
        self.extend_wrong_register = False
        self.requests: list[int] = []

    def open(self, path: str) -> int:
        if path != self.path:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        fd = 100 + len(self.open_fds)
        self.open_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self.open_fds.remove(fd)

    def tdreport(self, report_data: bytes) -> bytes:
        report = bytearray(1024)
        report_data = b"\xee" * 64 if self.tamper_report_data else report_data
        report[128:192] = report_data
        for i, value in enumerate(self.rtmrs):
            report[720 + 48 * i : 768 + 48 * i] = value
        return bytes(report)

    def ioctl(self, fd: int, request: int, buffer: bytearray) -> int:
        assert fd in self.open_fds
        self.requests.append(request)
        if request == abi.TDX_CMD_GET_REPORT0:
            assert len(buffer) == 64 + 1024
            buffer[64:] = self.tdreport(bytes(buffer[:64]))
            return 0
        if request == abi.TDX_CMD_EXTEND_RTMR:
            assert len(buffer) == 49
            index = buffer[48] if not self.extend_wrong_register else 2
            if buffer[48] not in (2, 3):
                raise OSError(errno.EINVAL, "Invalid argument")
            self.rtmrs[index] = hashlib.sha384(self.rtmrs[index] + bytes(buffer[:48])).digest()
            return 0
        if request == abi.TDX_CMD_GET_QUOTE:
            self._get_quote(bytes(buffer))
            return 0
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    def _get_quote(self, request: bytes) -> None:
        address, length = struct.unpack("<QQ", request)
        shared = ctypes.string_at(address, length)
        version, status, in_len, out_len = struct.unpack_from("<QQII", shared)
        assert (version, status, out_len) == (1, 0, 0)
        data = shared[24 : 24 + in_len]
        (msg_len,) = struct.unpack_from(">I", data)
        assert msg_len == in_len - 4
        major, _minor, kind, size, _err = struct.unpack_from("<HHIII", data, 4)
        report_size, id_list_size = struct.unpack_from("<II", data, 20)
        assert (major, kind, size, report_size, id_list_size) == (1, 0, msg_len, 1024, 0)
        tdreport = data[28 : 28 + 1024]
        report_data = tdreport[128:192]
        if self.tamper_quote_report_data:
            report_data = bytes(64)
        quote = splice_report_data(self.template, report_data)
        selected_id = b"\x01" * 16
        body = struct.pack("<II", len(selected_id), len(quote)) + selected_id + quote
        message = struct.pack("<HHIII", 1, 0, 1, 16 + len(body), self.qgs_error) + body
        prefix_len = len(message) + (1 if self.tamper_length_prefix else 0)
        payload = struct.pack(">I", prefix_len) + message
        out = len(payload) if self.out_len_override is None else self.out_len_override
        header = struct.pack("<QQII", 1, self.status, in_len, out)
        answer = header + payload
        assert len(answer) <= length
        ctypes.memmove(address, answer, len(answer))
