"""A worker's background flush of what it counted in memory (metrics, usage): every
`interval` seconds on a daemon thread, and once more when the process stops."""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.util
import threading
from typing import Self


class Flusher:
    """Subclasses define `flush()`; `start()` runs it on the timer, `close()` a last time."""

    thread_name = "okv-flush"

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> object:
        raise NotImplementedError

    def start(self) -> Self:
        """Flush every `interval` seconds on a daemon thread, and once more at exit."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.thread_name,
                                            daemon=True)
            self._thread.start()
            # A worker forked by multiprocessing (granian's) ends with os._exit, which skips
            # atexit: its finalizers run on a normal stop instead. Either may come first.
            atexit.register(self.close)
            multiprocessing.util.Finalize(self, self.close, exitpriority=10)
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # the next tick tries again
                self.flush()

    def close(self) -> None:
        """Stop the timer and flush what is left (at shutdown)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._interval + 5)
        with contextlib.suppress(Exception):
            self.flush()
