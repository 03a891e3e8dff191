"""Fixtures for the Wycheproof vector tests, and the per-file summary at session end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.server import DevServer
from tests.vectors import tally
from tests.vectors.api import KeyApi


@pytest.fixture(scope="session")
def key_api(server: DevServer) -> Iterator[KeyApi]:
    """One keep-alive session to the real server, shared by every vector module, so a key
    imported for one file is not imported again for another."""
    with requests.Session() as session:
        api = KeyApi(server, session)
        yield api
        tally.NOTES.append(f"API: {api.imports} keys imported, {api.requests} requests "
                           "on one keep-alive session")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the per-file table; with OKV_VECTOR_REPORT=path, also write it there as JSON."""
    lines = tally.summary_lines()
    if not lines:
        return
    terminalreporter.write_sep("=", "Wycheproof vectors per file")
    for line in lines + tally.NOTES:
        terminalreporter.write_line(line)
    report = os.environ.get("OKV_VECTOR_REPORT")
    if report:
        Path(report).write_text(json.dumps(tally.as_json(), indent=1) + "\n")
