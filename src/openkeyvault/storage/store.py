"""What every storage class shares: the engines, and write transactions after which this
thread's memoised reads are re-checked (so a request that writes, then reads, sees its
own write)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Connection

from openkeyvault.storage.db import Engines


class Store:
    def __init__(self, engines: Engines) -> None:
        self._r = engines.read
        self._w = engines.write
        self._fast = engines.fast

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction; afterwards this thread's memoised reads are re-checked."""
        try:
            with self._w.begin() as c:
                yield c
        finally:
            if self._fast is not None:
                self._fast.invalidate()

    def snapshot(self) -> object:
        """The same object while storage is unchanged (for this thread); see FastReader."""
        return self._fast.snapshot() if self._fast is not None else object()
