"""One audit stream's file: appended by one process, its space reserved ahead.

A process writes its own file (no lock between writers: see ops/audit.py). The file is
grown in chunks with `posix_fallocate` before the space is needed, so an append lands in
blocks the file system has already given it and cannot fail for lack of space: a disk
that fills up is noticed when the NEXT chunk cannot be reserved, while the current one
still has room for the records of the requests refused meanwhile. `healthy` is what the
gate reads before an operation acts; any failure to reserve or write turns it off until
a retry (`recover`, on the flusher's timer) succeeds.

Reserved space reads as NUL bytes after the last line; `close` cuts it off, and readers
ignore NUL bytes at the end (a file of a process that crashed keeps its reserved tail).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

CHUNK_BYTES = 4 << 20  # reserved at a time
RESERVE_BYTES = 256 << 10  # a new chunk is reserved when less than this is left
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class SinkFailed(Exception):
    """The stream cannot take records; the message says why (never a record's content)."""


def _describe(e: OSError) -> str:
    if e.errno in FULL_ERRNOS:
        return "its disk is full"
    if e.errno == errno.EROFS:
        return "its file system is read-only"
    return e.strerror or type(e).__name__


def read_only_fs(path: Path) -> bool:
    """Whether `path` is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class StreamFile:
    """Append-only lines at the file's own offset (one writer; callers hold a lock)."""

    def __init__(self, path: Path, chunk: int = CHUNK_BYTES, reserve: int = RESERVE_BYTES
                 ) -> None:
        self.path = path
        self._chunk = max(chunk, 4096)
        self._reserve = min(reserve, self._chunk // 2)
        self._fd = -1
        self._offset = 0  # where the next line goes
        self._allocated = 0  # bytes reserved (the file's size while open)
        self.error: str | None = None  # why it is not healthy, None while it is
        self._closed = False

    @property
    def healthy(self) -> bool:
        return self.error is None

    @property
    def offset(self) -> int:
        return self._offset

    def open(self) -> None:
        """Create the file (never an existing one) and reserve its first chunk; on
        failure the stream is unhealthy and `error` says why."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if read_only_fs(self.path.parent):
                raise OSError(errno.EROFS, "read-only file system")
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                               os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            self._grow()
        except OSError as e:
            self.error = f"cannot write {self.path}: {_describe(e)}"

    def _grow(self) -> None:
        os.posix_fallocate(self._fd, self._allocated, self._chunk)
        self._allocated += self._chunk

    def append(self, line: bytes) -> None:
        """Write one line at the end; SinkFailed if it was not written. A line written
        when the next chunk cannot be reserved stays written, and the stream turns
        unhealthy (the caller's gate refuses the next operation)."""
        if self._fd < 0:
            raise SinkFailed(self.error or "the audit stream is closed")
        try:
            written = os.pwrite(self._fd, line, self._offset)
            if written != len(line):  # only past the reserved space
                os.pwrite(self._fd, b"\0" * written, self._offset)
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            self.error = f"cannot write {self.path}: {_describe(e)}"
            raise SinkFailed(self.error) from None
        self._offset += written
        if self._allocated - self._offset < self._reserve:
            try:
                self._grow()
            except OSError as e:
                self.error = f"cannot reserve space in {self.path}: {_describe(e)}"

    def sync(self) -> None:
        """Flush written lines to the disk (the flusher's timer, not every request), and
        notice a file system remounted read-only."""
        if self._fd < 0:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            self.error = f"cannot write {self.path}: {_describe(e)}"
            return
        if read_only_fs(self.path.parent):
            self.error = f"cannot write {self.path}: its file system is read-only"

    def recover(self) -> bool:
        """Try again: to create the file if it could not be (a directory since made
        writable), else to reserve the space ahead (a disk that had filled up); whether
        the stream is healthy now."""
        if self.error is None:
            return True
        if self._closed or read_only_fs(self.path.parent):
            return False
        if self._fd < 0:
            self.error = None
            self.open()
            return self.error is None
        try:
            while self._allocated - self._offset < self._reserve:
                self._grow()
            os.fdatasync(self._fd)
        except OSError:
            return False
        self.error = None
        return True

    def close(self) -> None:
        """Cut the reserved tail off and close."""
        self._closed = True
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._offset)
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._allocated = self._offset


def read_lines(path: Path) -> list[bytes]:
    """The lines of a stream file, without the reserved tail (NUL bytes) of a file whose
    process did not close it. A last line without its newline is returned as it is."""
    data = path.read_bytes().rstrip(b"\0")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines
