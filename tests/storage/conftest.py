"""The storage backends every contract test runs on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from openkeyvault.ops import requestscope
from tests.support.postgres import PostgresCluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "okv.db")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()


@pytest.fixture(autouse=True)
def _outside_a_request() -> Iterator[None]:
    """Tests that play requests (requestscope.begin) leave the process outside one."""
    token = requestscope.current.set(0)
    yield
    requestscope.current.reset(token)
