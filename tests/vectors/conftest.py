"""Fixtures for the Wycheproof vector tests, and the per-file summary at session end."""

from __future__ import annotations

import json
import os
import uuid
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


@pytest.fixture(scope="session")
def hsm_key_api(server: DevServer) -> Iterator[KeyApi]:
    """The same client on a Premium vault whose keys are imported into the HSM."""
    vault = f"wyc{uuid.uuid4().hex[:12]}"
    made = server.okv("vault", "create", vault, "--sku", "premium")
    assert made.returncode == 0, made.stderr
    with requests.Session() as session:
        api = KeyApi(server, session, vault=vault, hsm=True)
        yield api
        tally.NOTES.append(f"API, HSM: {api.imports} keys imported into the token, "
                           f"{api.requests} requests")


@pytest.fixture(params=["software", "hsm"])
def any_key_api(request: pytest.FixtureRequest) -> KeyApi:
    """Each RSA vector test twice: software keys in the default vault, HSM keys in a
    Premium vault."""
    api: KeyApi = request.getfixturevalue("key_api" if request.param == "software"
                                          else "hsm_key_api")
    return api


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
