"""Run an `okv` command inside the test process, as its own process would run it.

A `python -m openkeyvault` child costs 0.3-1.5 s of interpreter start and imports per
command; in this process a command costs only its own work. The entry point is the real
one (`openkeyvault.cli.main:main`, with its one-line fatal errors and exit statuses), and
the result has a child's shape: `subprocess.CompletedProcess` with returncode, stdout and
stderr as text.

What a child would keep to itself is kept from leaking both ways, per call:

- standard streams: click's CliRunner isolation (pipes, not a terminal; stdin empty);
- os.environ: the test process's (what a child inherits) with `env` laid over it, and
  restored whole afterwards, even if the command changed it; the working directory too;
- exits: SystemExit (sys.exit, typer.Exit, click's usage errors) becomes the return
  code as the interpreter makes it; any other exception becomes its traceback on stderr
  and code 1 (the exception is kept on the result);
- sys.excepthook: typer installs its own when the app runs; put back;
- logging: records reach stderr as in a fresh interpreter (no handlers: the last-resort
  handler writes WARNING and above, message only), not pytest's capture handlers;
- warnings: a fresh interpreter's default filters, shown on stderr;
- socket.getaddrinfo: the real resolver, even in a test that patched it for its own
  clients (tests/support/dns.py), so a vault's hosts note reads as a user's would.

Rich picks its width and colours when each Console is made, from os.environ and whether
file descriptors 0-2 are terminals: those are the ones a child inherits, so the tables
come out the same. typer reads TERMINAL_WIDTH and FORCE_COLOR once, at import: pass them
in `env` and they are ignored here (use `inprocess=False` for such a test).

One command at a time: the streams and the environment swapped are the whole process's.
What only a process shows (start-up imports, the installed script) is for `run_process`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import click.formatting
from typer.testing import CliRunner

from openkeyvault.cli.main import main
from tests.support import dns

PROG = "okv"


class OkvResult(subprocess.CompletedProcess[str]):
    """A finished in-process command; `exception` is an unexpected one it raised."""

    exception: BaseException | None = None


def run(*args: str, env: Mapping[str, str | None] | None = None) -> OkvResult:
    """`okv ARGS` in this process; `env` entries override (None: remove) variables."""
    argv = [str(a) for a in args]
    code, failure = 0, None
    forced_width = click.formatting.FORCED_WIDTH
    with _process_state(), CliRunner().isolation(env=env) as (out, err, _):
        click.formatting.FORCED_WIDTH = forced_width  # a child has no forced help width
        try:
            with _fresh_logging(), _fresh_warnings(), _real_resolver():
                main(argv, prog_name=PROG)
        except SystemExit as exc:
            code = _exit_status(exc.code, sys.stderr)
        except Exception as exc:  # what the interpreter would print before exiting 1
            failure = exc
            sys.stderr.write("".join(traceback.format_exception(exc)))
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            stdout, stderr = _text(out.getvalue()), _text(err.getvalue())
    result = OkvResult([PROG, *argv], code, stdout, stderr)
    result.exception = failure
    return result


def _exit_status(code: Any, stderr: TextIO) -> int:
    """The status the interpreter exits with for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=stderr)
    return 1


def _text(raw: bytes) -> str:
    """As `subprocess.run(text=True)` decodes: UTF-8, universal newlines."""
    return raw.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


@contextlib.contextmanager
def _process_state() -> Iterator[None]:
    """Put back what a command may change for the whole process."""
    environ = dict(os.environ)
    cwd = os.getcwd()
    hook = sys.excepthook
    try:
        yield
    finally:
        sys.excepthook = hook
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        for key, value in environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        if os.getcwd() != cwd:
            os.chdir(cwd)


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    """No handlers on the root and `openkeyvault` loggers, as in a fresh interpreter:
    records of WARNING and above then go to logging.lastResort, which writes to the
    current sys.stderr (the command's)."""
    loggers = (logging.getLogger(), logging.getLogger("openkeyvault"))
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    for lg, level in zip(loggers, (logging.WARNING, logging.NOTSET), strict=True):
        lg.handlers = []
        lg.setLevel(level)
        lg.propagate = True
        lg.disabled = False
    try:
        yield
    finally:
        for lg, handlers, level, propagate, disabled in saved:
            lg.handlers = handlers
            lg.setLevel(level)
            lg.propagate = propagate
            lg.disabled = disabled


def _show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          file: TextIO | None = None, line: str | None = None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _fresh_warnings() -> Iterator[None]:
    """The interpreter's default filters (python -W and PYTHONWARNINGS aside), shown on
    the command's stderr rather than recorded by pytest."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                         ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = _show
        yield


@contextlib.contextmanager
def _real_resolver() -> Iterator[None]:
    patched = socket.getaddrinfo
    socket.getaddrinfo = dns._real_getaddrinfo  # as dns.py found it
    try:
        yield
    finally:
        socket.getaddrinfo = patched


# ---- the real entry point, for the few tests about what only a process shows ------------
ENTRY_POINT = Path(sys.executable).with_name(PROG)  # the `okv` script pip installs


def run_process(*args: str, env: Mapping[str, str] | None = None,
                python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`okv ARGS` as its own process: the installed `okv` script, or with `python_flags`
    (e.g. -X importtime) `python FLAGS -m openkeyvault ARGS`."""
    if python_flags:
        argv = [sys.executable, *python_flags, "-m", "openkeyvault", *args]
    else:
        assert ENTRY_POINT.exists(), f"no {ENTRY_POINT}: install the package (pip install -e .)"
        argv = [str(ENTRY_POINT), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
