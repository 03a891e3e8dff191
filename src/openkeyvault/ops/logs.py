"""Logging setup: one line per request, never a secret value, key material or token."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("openkeyvault")
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class AccessLog:
    """One line per request, in the same layout as the logging module's lines.

    Formatted by hand and written straight to the stream: the logging machinery
    (record, handler lock, formatter, strftime) cost more than the rest of a
    cached read together. Only request id, method, path, status and duration
    are written: never a query string, header, body, value or token.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._second = -1
        self._stamp = ""
        self.enabled = logging.getLogger("openkeyvault.request").isEnabledFor(logging.INFO)

    def write(self, request_id: str, method: str, path: str, status: int, ms: float) -> None:
        if not self.enabled:
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        millis = int((now - second) * 1000)
        self._stream.write(
            f"{self._stamp},{millis:03d} INFO openkeyvault.request rid={request_id} {method} "
            f"{path} {status} {ms:.1f}ms\n"
        )
