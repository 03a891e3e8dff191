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
