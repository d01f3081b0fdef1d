"""The persisted RTMR3 runtime log: one file in a state directory, and a lock held while running.

RTMR3 lives as long as the TD; a bridge process does not. So that a restarted bridge can serve a
log that still replays to RTMR3, the log is kept in ``<state_dir>/runtime-log.json`` (the
serialised ``RuntimeEventLog``), written atomically (temporary file, fsync, rename) with mode
0600 in a 0700 directory. The directory belongs on a tmpfs such as ``/run``, which is emptied
exactly when RTMR3 is reset: at the TD's reboot.

The store also holds an exclusive ``flock`` on ``<state_dir>/lock`` from :meth:`open` to
:meth:`close`: a second bridge in the same TD would extend RTMR3 under the first one, whose
served log would then stop replaying, so it is refused at start instead.

This module only stores bytes; deciding whether they replay is ``bridge.providers.measure``'s
job, and the replay check, not the file's protection, is what keeps a wrong log from being
served.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Final

from bridge.providers.base import RuntimeLogStateError

LOG_FILE_NAME: Final = "runtime-log.json"
LOCK_FILE_NAME: Final = "lock"
# A runtime log holds a handful of small events; anything far larger is not ours.
_MAX_LOG_BYTES: Final = 4 * 1024 * 1024


class RuntimeLogStore:
    """The state directory of one running bridge: :meth:`open` it, :meth:`close` it at exit."""

    def __init__(self, directory: Path, lock_fd: int) -> None:
        self.directory = directory
        self._lock_fd: int | None = lock_fd

    def __repr__(self) -> str:
        return f"RuntimeLogStore({str(self.directory)!r})"

    @property
    def log_path(self) -> Path:
        """The persisted runtime log."""
        return self.directory / LOG_FILE_NAME

    @classmethod
    def open(cls, directory: str | Path) -> RuntimeLogStore:
        """Create ``directory`` (0700) if needed and take its lock.

        Raises :class:`RuntimeLogStateError` if the directory cannot be used or another bridge
        holds the lock.
        """
        path = Path(directory)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RuntimeLogStateError(
                f"cannot use the state directory {path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise RuntimeLogStateError(
                f"another shroud-bridge holds {path / LOCK_FILE_NAME}: two bridges in one TD "
                "would both extend RTMR3, and the first one's log would stop replaying"
            ) from exc
        return cls(path, fd)

    def load(self) -> bytes | None:
        """The persisted log's bytes, or None when there is none."""
        try:
            with self.log_path.open("rb") as handle:
                data = handle.read(_MAX_LOG_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RuntimeLogStateError(
                f"cannot read the runtime log {self.log_path}: {exc.strerror or exc}"
            ) from exc
        if len(data) > _MAX_LOG_BYTES:
            raise RuntimeLogStateError(f"the runtime log {self.log_path} is implausibly large")
        return data

    def save(self, data: bytes) -> None:
        """Replace the persisted log with ``data``, atomically (a reader sees old or new)."""
        try:
            fd, temporary = tempfile.mkstemp(prefix=".runtime-log.", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as handle:  # mkstemp: mode 0600, O_EXCL
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.log_path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            directory_fd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)
        except OSError as exc:
            raise RuntimeLogStateError(
                f"cannot write the runtime log {self.log_path}: {exc.strerror or exc}"
            ) from exc

    def close(self) -> None:
        """Release the lock (the log stays for the next bridge process in this TD)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
