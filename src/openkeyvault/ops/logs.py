"""Logging setup: one line per request, never a secret value, key material or token.

Request data (a path, a header, an exception message quoting the body) reaches the log,
and a log line is only trustworthy if a client cannot end it or paint over it. So every
control character (C0, DEL, C1), every Unicode line or paragraph separator and every
other non-printable character is written as an escape (`\\r`, `\\n`, `\\t`, `\\xNN`,
`\\uNNNN`), and a backslash as `\\\\`, so an escape in the log is never ambiguous. A
record is one line; a traceback's lines follow it, each prefixed with `  | ` so that no
continuation line can pass for a record of its own.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
CONTINUATION = "  | "


def _escape_char(c: str) -> str:
    named = _NAMED.get(c)
    if named is not None:
        return named
    if c.isprintable():
        return c
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def escape(text: str) -> str:
    """`text` with every character that could end a line or drive a terminal escaped."""
    if text.isprintable() and "\\" not in text:  # the usual case: no work, no copy
        return text
    return "".join(map(_escape_char, text))


def escape_field(text: str) -> str:
    """Like `escape`, and a space too: for a field of a space-separated line."""
    if text.isprintable() and "\\" not in text and " " not in text:
        return text
    return escape(text).replace(" ", "\\x20")


class LineFormatter(logging.Formatter):
    """A formatter whose records are one line each, whatever their message holds; a
    traceback or stack follows on continuation lines."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        out = escape(self.formatMessage(record))
        # Not cached in record.exc_text: another formatter must not reuse the prefixed form.
        if record.exc_info:
            out += "\n" + _continuation(self.formatException(record.exc_info))
        elif record.exc_text:
            out += "\n" + _continuation(record.exc_text)
        if record.stack_info:
            out += "\n" + _continuation(self.formatStack(record.stack_info))
        return out


def _continuation(text: str) -> str:
    """Each line of a multi-line block, escaped and marked as belonging to the record above."""
    return "\n".join(CONTINUATION + escape(line) for line in text.split("\n"))


class Intervals:
    """Whether a line about `key` is due: at most one per `interval` seconds per key, so
    a fault that repeats on every request or tick is said once in a while, not each time.
    Per process; monotonic time (a log-rate limit, not domain time)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, key: str, interval: float) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < interval:
                return False
            self._last[key] = now
        return True


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("openkeyvault")
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class AccessLog:
    """One line per request, in the same layout as the logging module's lines.

    Formatted by hand and written straight to the stream: the logging machinery
    (record, handler lock, formatter, strftime) cost more than the rest of a
    cached read together. Only request id, method, path, status and duration
    are written: never a query string, header, body, value or token. The method
    and the path come from the client: they are escaped (spaces too), so a line
    always has the same five fields and a request is always exactly one line.
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
        if method not in _METHODS:
            method = escape_field(method)
        path = escape_field(path)
        self._stream.write(
            f"{self._stamp},{millis:03d} INFO openkeyvault.request rid={request_id} "
            f"{method} {path} {status} {ms:.1f}ms\n"
        )
