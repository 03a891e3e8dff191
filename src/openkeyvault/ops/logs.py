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

import asyncio
import io
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from openkeyvault.ops.outcome import Outcome

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


STDERR_FLUSH_SECONDS = 0.2


async def buffered_stderr(interval: float = STDERR_FLUSH_SECONDS) -> None:
    """While it runs (a task on a server worker's event loop, from start-up to shutdown),
    stderr is block-buffered and flushed every `interval` seconds.

    A line-buffered stderr costs one write(2) per request line, a fair share of a cheap
    request's time. Buffered, a busy worker writes its request lines a buffer at a time,
    and a quiet one within `interval`. Order is kept: the logging module's handler writes
    to the same stream and flushes it after each record, so a warning or an error goes out
    at once, after the request lines before it. What a killed worker can lose is its last
    `interval` of request lines, never an audit record (ops/audit.py writes those itself,
    before each response)."""
    stream = sys.stderr
    if not isinstance(stream, io.TextIOWrapper) or not stream.line_buffering:
        return
    stream.reconfigure(line_buffering=False)
    try:
        while True:
            await asyncio.sleep(interval)
            stream.flush()
    finally:
        stream.flush()
        stream.reconfigure(line_buffering=True)


class AccessLog:
    """One line per request, in the same layout as the logging module's lines; the first
    observer of every answered request (ops/outcome.py).

    Formatted by hand and written straight to the stream: the logging machinery
    (record, handler lock, formatter, strftime) cost more than the rest of a
    cached read together. Written: request id, method, path, status and duration, then
    the operation (Azure's name, `-` when no route matched), the vault or pool, the
    caller's object id and the client address: never a query string, header, body,
    value or token. Every field is escaped (spaces too): the method and the path come
    from the client, and a line must always have the same fields and be exactly one line.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._second = -1
        self._stamp = ""
        self.enabled = logging.getLogger("openkeyvault.request").isEnabledFor(logging.INFO)
        self._parts: dict[tuple[str, str, str | None, str | None, str | None, str | None],
                          tuple[str, str]] = {}

    def observe(self, outcome: Outcome) -> None:
        """The line of one answered request (its method and path when the pipeline gave
        them: api/exchange.RequestOutcome). The escaped request line and the escaped
        fields after it repeat from one request to the next: they are made once."""
        if not self.enabled:
            return
        caller = outcome.caller
        key = (getattr(outcome, "method", "-"),
               getattr(outcome, "path", "") or outcome.request_uri.partition("?")[0],
               outcome.operation, outcome.resource_name,
               caller.object_id if caller else None, outcome.client_ip)
        parts = self._parts.get(key)
        if parts is None:
            if len(self._parts) >= _PARTS_LIMIT:
                self._parts.clear()
            method, path, operation, vault, oid, client = key
            parts = self._parts[key] = (_request_line(method, path),
                                        _tail(operation, vault, oid, client))
        self._write(outcome.request_id, parts[0], outcome.status, outcome.duration_ms,
                    parts[1])

    def write(self, request_id: str, method: str, path: str, status: int, ms: float, *,
              operation: str | None = None, vault: str | None = None,
              caller: str | None = None, client: str | None = None) -> None:
        if self.enabled:
            self._write(request_id, _request_line(method, path), status, ms,
                        _tail(operation, vault, caller, client))

    def _write(self, request_id: str, request_line: str, status: int, ms: float,
               tail: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        millis = int((now - second) * 1000)
        self._stream.write(
            f"{self._stamp},{millis:03d} INFO openkeyvault.request rid={request_id} "
            f"{request_line} {status} {ms:.1f}ms {tail}\n"
        )


_PARTS_LIMIT = 4096  # request lines and tails an AccessLog keeps made


def _request_line(method: str, path: str) -> str:
    """`METHOD PATH`, both escaped (they come from the client)."""
    return f"{method if method in _METHODS else escape_field(method)} {escape_field(path)}"


def _tail(operation: str | None, vault: str | None, caller: str | None,
          client: str | None) -> str:
    """`op=... vault=... oid=... ip=...`, each value escaped (`-` when there is none).
    The usual case (printable values without spaces or backslashes) is checked once."""
    tail = f"op={operation or '-'} vault={vault or '-'} oid={caller or '-'} ip={client or '-'}"
    if tail.isprintable() and "\\" not in tail and tail.count(" ") == 3:
        return tail
    return (f"op={_field(operation)} vault={_field(vault)} oid={_field(caller)} "
            f"ip={_field(client)}")


def _field(value: str | None) -> str:
    return escape_field(value) if value else "-"
