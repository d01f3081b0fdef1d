"""The seam between the providers and the kernel: file and ioctl operations behind two protocols.

Production code uses :class:`LinuxDevice` and :class:`OsFiles`, which are thin wrappers over
``os`` and ``fcntl``. Tests substitute fakes that implement the kernel's side of each interface
(a configfs-tsm tree in a temporary directory, a ``/dev/tdx_guest`` that answers ioctls), since
neither a real configfs nor a real ioctl can be faked with plain files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Protocol


class DeviceIo(Protocol):
    """Open a character device and issue ioctls on it."""

    def open(self, path: str) -> int:
        """Open ``path`` read-write; return a file descriptor."""

    def ioctl(self, fd: int, request: int, buffer: bytearray) -> int:
        """Issue ``request`` with ``buffer`` as the argument; the kernel may rewrite ``buffer``."""

    def close(self, fd: int) -> None:
        """Close ``fd``."""


class LinuxDevice:
    """:class:`DeviceIo` over ``os.open`` and ``fcntl.ioctl`` (mutable-buffer form)."""

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, buffer: bytearray) -> int:
        return int(fcntl.ioctl(fd, request, buffer, True))

    def close(self, fd: int) -> None:
        os.close(fd)


class FileIo(Protocol):
    """The file operations a configfs or sysfs attribute needs."""

    def mkdir(self, path: Path) -> None:
        """Create directory ``path`` (on configfs: instantiate a report object)."""

    def rmdir(self, path: Path) -> None:
        """Remove directory ``path`` (on configfs: release the report object)."""

    def read(self, path: Path) -> bytes:
        """Read the whole attribute."""

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to the attribute in a single write(2); short writes are errors."""


class OsFiles:
    """:class:`FileIo` over ``os``: one open, one write or read-to-EOF, one close."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        with open(path, "rb", buffering=0) as handle:
            return handle.read()

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
