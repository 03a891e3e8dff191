"""The one source of time for domain code.

`SystemClock` is wall time. `OffsetClock` adds an offset kept in a small file,
so a development server (all of its worker processes) and the tests driving
it can move time forward without waiting. The file is re-read only when its
modification time changes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (in-process tests)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class OffsetClock:
    """Wall time plus an offset shared through a file between processes."""

    # Re-stat the file at most this often: a move made by another process is seen within
    # a millisecond, and a busy worker does not pay a stat() per request.
    RECHECK_NS = 1_000_000

    def __init__(self, offset_file: Path) -> None:
        self._file = offset_file
        self._mtime: float | None = None
        self._offset = 0.0
        self._checked = 0

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic_ns()
        if not force and now - self._checked < self.RECHECK_NS:
            return
        self._checked = now
        try:
            mtime = os.stat(self._file).st_mtime_ns
        except FileNotFoundError:
            self._mtime, self._offset = None, 0.0
            return
        if mtime != self._mtime:
            try:
                self._offset = float(self._file.read_text().strip() or 0)
            except (OSError, ValueError):
                self._offset = 0.0
            self._mtime = mtime

    def now(self) -> float:
        self._refresh()
        return time.time() + self._offset

    @property
    def offset(self) -> float:
        self._refresh(force=True)
        return self._offset

    def advance(self, seconds: float) -> float:
        self._refresh(force=True)
        new = self._offset + seconds
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(repr(new))
        os.replace(tmp, self._file)
        self._refresh(force=True)
        return new


CLOCK_FILE = "clock-offset"


def deployment_clock(data_dir: Path, dev: bool) -> Clock:
    """The clock a deployment runs on: wall time, moved by the shared offset file in a
    development deployment (every process of it reads the same file)."""
    return OffsetClock(data_dir / CLOCK_FILE) if dev else SystemClock()
