"""The storage backends every contract test runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.postgres import PostgresCluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "okv.db")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()
