"""`okv` run in the test process (tests/support/okvcli.py) answers what the installed
entry point answers as its own process, and leaves the test process as it found it.

Most `okv` tests run the command in-process (a process costs 0.3-1.5 s per command);
they are only worth that if the in-process run shows what a user's process shows: the
one-line fatal errors and their exit status, log lines on stderr, the hosts note that
depends on the machine's resolver. Each test here compares with a real process (smoke:
`run_process`), then checks what must not leak into the tests that follow.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.dns import localhost_subdomains
from tests.support.okvcli import run, run_process


def deployment(tmp_path: Path) -> Path:
    """A data directory with a deployment in it, made by an `okv` command."""
    data = tmp_path / "data"
    done = run("principal", "list", "-o", "json", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return data


def same(args: tuple[str, ...],
         prepare: Callable[[], object] | None = None) -> tuple[str, str]:
    """Run `okv ARGS` both ways (calling `prepare()` before each); assert the results are
    equal; the stdout and stderr."""
    results = []
    for runner in (run, run_process):
        if prepare is not None:
            prepare()
        results.append(runner(*args))
    here, real = results
    assert (here.returncode, here.stdout, here.stderr) == \
        (real.returncode, real.stdout, real.stderr), args
    return here.stdout, here.stderr


def test_a_refused_data_directory_is_one_line_and_78(tmp_path: Path) -> None:
    data = deployment(tmp_path)
    (data / "okv.db").unlink()  # the key material stays: starting afresh would orphan it
    for args in (("vault", "list"), ("role", "list"), ("principal", "list")):
        here = run(*args, "--data-dir", str(data))
        assert here.returncode == 78, here.stderr
        assert here.stdout == ""
        (line,) = here.stderr.splitlines()
        assert line.startswith("okv: cannot open the deployment: ") and "okv.db is missing" \
            in line, line
        assert here.exception is None
    _, stderr = same(("vault", "list", "--data-dir", str(data)))
    assert "okv.db is missing" in stderr
    assert not (data / "okv.db").exists()


def test_log_lines_reach_stderr_as_in_a_process(tmp_path: Path) -> None:
    data = deployment(tmp_path)
    db = data / "okv.db"
    # pytest's own handlers are on the root logger here; a process has none
    assert logging.getLogger().handlers
    stdout, stderr = same(("principal", "list", "-o", "json", "--data-dir", str(data)),
                          prepare=lambda: db.chmod(0o644))
    assert stderr.startswith("okv: restricted permissions"), stderr
    assert str(db) in stderr and "644 -> 600" in stderr
    assert "dev identity" in stdout


def test_the_hosts_note_follows_the_machines_resolver(tmp_path: Path) -> None:
    data = deployment(tmp_path)
    names = [f"r{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with localhost_subdomains():  # this process's clients resolve *.localhost; a user's may not
        here = run("vault", "create", names[0], "-o", "json", "--data-dir", str(data))
    real = run_process("vault", "create", names[1], "-o", "json", "--data-dir", str(data))
    assert here.returncode == real.returncode == 0, (here.stderr, real.stderr)
    assert here.stderr == real.stderr.replace(names[1], names[0])


def test_the_test_process_is_left_as_it_was(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OKV_DATA_DIR", raising=False)
    # a hook of the test process's own (typer's app puts its own in place when it runs)
    monkeypatch.setattr(sys, "excepthook", lambda *exc_info: sys.__excepthook__(*exc_info))
    data = tmp_path / "from-env"
    environ, cwd = dict(os.environ), os.getcwd()
    hook, resolver = sys.excepthook, socket.getaddrinfo
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    filters = warnings.filters[:]
    stdout, stderr = sys.stdout, sys.stderr

    done = run("vault", "list", "-o", "json", env={"OKV_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []  # a new deployment (the server adds "dev")
    assert (data / "okv.db").exists()  # the variable reached the command
    assert run("vault", "bogus").returncode == 2  # typer's app ran: its excepthook is gone

    assert dict(os.environ) == environ and os.getcwd() == cwd
    assert sys.excepthook is hook and socket.getaddrinfo is resolver
    assert root.handlers == handlers and root.level == level
    assert warnings.filters == filters
    assert sys.stdout is stdout and sys.stderr is stderr
