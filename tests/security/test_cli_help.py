"""Every `okv` command's --help answers: exit 0, no traceback.

Help texts are rendered as Rich markup, where square brackets are tags: an unescaped
`[/NAME]` in an option's help made `--help` crash. The whole command tree is walked, so
a command added later is covered without being listed here."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from openkeyvault.cli.main import app
from tests.support.okvcli import run_process


def _paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    subcommands = getattr(command, "commands", None) or {}  # a group
    for name, sub in sorted(subcommands.items()):
        out += _paths(sub, (*prefix, name))
    return out


PATHS = _paths(typer.main.get_command(app))


def test_the_walk_reaches_the_nested_commands() -> None:
    assert ("role", "assign") in PATHS
    assert ("vault", "network", "add-rule") in PATHS
    assert ("principal", "secret", "add") in PATHS
    assert len(PATHS) > 40


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "okv")
def test_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "Usage" in result.output


# ---- real `okv` processes (smoke): what only a process shows ----------------------------
# The tests above render help in this process; these two start the installed entry point.

# What `okv --help` must not import: each command imports its own when it runs, so that
# the command line starts quickly (cli/main.py).
HEAVY = ("openkeyvault.deployment", "openkeyvault.api", "openkeyvault.vault",
         "openkeyvault.access", "openkeyvault.keystore", "openkeyvault.crypto", "sqlite3",
         "cryptography", "sqlalchemy", "starlette", "granian", "jwt")


def test_process_help_starts_and_exits_0() -> None:
    done = run_process("--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: okv " in done.stdout and "vault" in done.stdout
    assert done.stderr == ""


def test_process_help_imports_no_command_modules() -> None:
    done = run_process("--help", python_flags=("-X", "importtime"))
    assert done.returncode == 0, done.stderr
    # -X importtime writes one line per module: "import time: SELF | CUMULATIVE | NAME"
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert "openkeyvault.cli.main" in imported  # the list is the one we think it is
    heavy = sorted(m for m in imported if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], heavy
