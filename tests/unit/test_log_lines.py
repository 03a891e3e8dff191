"""Log lines cannot be forged: control characters are escaped, a request is one line."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import pytest

from openkeyvault.ops.logs import CONTINUATION, AccessLog, LineFormatter, escape, escape_field

FORGED = "\r\n2026-01-01 00:00:00,000 INFO openkeyvault.request rid=x GET /admin 200 0.1ms"


@pytest.mark.parametrize(("raw", "shown"), [
    ("/secrets/plain", "/secrets/plain"),
    ("a\r\nb", "a\\r\\nb"),
    ("tab\there", "tab\\there"),
    ("esc\x1b[31mred", "esc\\x1b[31mred"),
    ("nul\x00del\x7f", "nul\\x00del\\x7f"),
    ("c1\x85\x9b", "c1\\x85\\x9b"),  # NEL, CSI
    ("sep\u2028\u2029", "sep\\u2028\\u2029"),  # line and paragraph separators
    ("bidi\u202e", "bidi\\u202e"),
    ("back\\slash", "back\\\\slash"),
    ("lone\udcff", "lone\\udcff"),
    ("caf\u00e9", "caf\u00e9"),  # printable text stays as it is
])
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert escape(raw).isprintable()


def test_escape_is_unambiguous() -> None:
    """A literal backslash sequence and a control character are logged differently."""
    assert escape("\\n") != escape("\n")


def test_escape_field_escapes_spaces() -> None:
    assert escape_field("/a b") == "/a\\x20b"
    assert escape_field("/a\nb c") == "/a\\nb\\x20c"
    assert escape_field("/plain") == "/plain"


def _access_line(method: str, path: str, **extra: str | None) -> str:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.enabled = True
    log.write("rid-1", method, path, 401, 0.25, **extra)
    return stream.getvalue()


def test_access_log_writes_one_line_with_nine_fields() -> None:
    out = _access_line("GET", "/secrets/x" + FORGED + "\x1b[2J \u2028")
    assert out.endswith("\n") and out.count("\n") == 1
    assert "\r" not in out and "\x1b" not in out and "\u2028" not in out
    fields = out.split(" ")
    assert fields[3:5] == ["openkeyvault.request", "rid=rid-1"]
    assert fields[5] == "GET"
    assert fields[6].startswith("/secrets/x\\r\\n2026-01-01\\x2000:00:00")
    assert fields[7:] == ["401", "0.2ms", "op=-", "vault=-", "oid=-", "ip=-\n"]


def test_access_log_escapes_what_it_is_told_of_the_caller() -> None:
    out = _access_line("GET", "/", operation="SecretGet", vault="dev",
                       caller="oid" + FORGED, client="::1")
    assert out.count("\n") == 1
    fields = out.split(" ")
    assert len(fields) == 13
    assert fields[9:11] == ["op=SecretGet", "vault=dev"]
    assert fields[11].startswith("oid=oid\\r\\n2026-01-01\\x20")
    assert fields[12] == "ip=::1\n"


def test_access_log_escapes_the_method() -> None:
    out = _access_line("GET\r\nX", "/")
    assert out.count("\n") == 1 and "GET\\r\\nX /" in out


def _formatted(record: logging.LogRecord) -> str:
    return LineFormatter("%(levelname)s %(name)s %(message)s").format(record)


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad value" + FORGED)
        except ValueError as e:
            exc_info = (type(e), e, e.__traceback__)
    return logging.LogRecord("openkeyvault.test", logging.WARNING, __file__, 1, msg, args,
                             exc_info)


def test_formatter_keeps_a_message_on_one_line() -> None:
    out = _formatted(_record("path %s refused", "/x" + FORGED + "\x1b]0;title\x07"))
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and "\x07" not in out
    assert out.startswith("WARNING openkeyvault.test path /x\\r\\n2026-01-01")
    assert "\\x1b]0;title\\x07" in out


def test_formatter_marks_every_traceback_line() -> None:
    out = _formatted(_record("unhandled error", exc=True))
    first, *rest = out.split("\n")
    assert first == "WARNING openkeyvault.test unhandled error"
    assert rest and all(line.startswith(CONTINUATION) for line in rest)
    # A line break inside the exception's message starts a continuation line, marked too.
    at = next(i for i, line in enumerate(rest) if "ValueError: bad value\\r" in line)
    assert rest[at + 1].startswith(CONTINUATION + "2026-01-01")
    assert not any(line.startswith("2026-01-01") for line in out.split("\n"))


def test_formatter_marks_stack_lines() -> None:
    record = _record("look")
    record.stack_info = "Stack (most recent call last):\n  File x\n2026-01-01 forged"
    rest = _formatted(record).split("\n")[1:]
    assert len(rest) == 3 and all(line.startswith(CONTINUATION) for line in rest)


def test_buffered_stderr_keeps_order_and_flushes_on_its_timer(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """While a server runs, request lines wait in stderr's buffer (no write per line); a
    logged warning goes out at once, after the lines before it; a quiet worker's lines
    go out within the interval; at shutdown everything is written and stderr is
    line-buffered again."""
    import asyncio

    from openkeyvault.ops.logs import buffered_stderr

    path = tmp_path / "stderr.log"
    raw = open(path, "wb", buffering=0)  # noqa: SIM115 (closed below)
    stream = io.TextIOWrapper(io.BufferedWriter(raw, 1 << 16), encoding="utf-8",
                              line_buffering=True)
    monkeypatch.setattr("sys.stderr", stream)
    # A logger of the test's own, set up as configure_logging sets up the server's.
    logger = logging.getLogger(f"okv-buffered-{id(stream)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter("%(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    access = AccessLog(stream)
    access.enabled = True

    async def run() -> None:
        task = asyncio.create_task(buffered_stderr(interval=0.3))
        await asyncio.sleep(0)  # it has started
        assert not stream.line_buffering
        access.write("rid-1", "GET", "/secrets/a", 200, 1.0)
        access.write("rid-2", "GET", "/secrets/b", 200, 1.0)
        assert path.read_text() == ""  # buffered: nothing written yet
        logger.warning("a warning")
        first = path.read_text().splitlines()
        assert [("rid-1" in x, "rid-2" in x, "a warning" in x) for x in first] == [
            (True, False, False), (False, True, False), (False, False, True)]
        access.write("rid-3", "GET", "/secrets/c", 200, 1.0)
        assert "rid-3" not in path.read_text()
        await asyncio.sleep(0.6)  # the timer's flush
        assert "rid-3" in path.read_text()
        access.write("rid-4", "GET", "/secrets/d", 200, 1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
        assert "rid-4" in path.read_text()  # written at shutdown
        assert stream.line_buffering
    finally:
        logger.removeHandler(handler)
        stream.close()
