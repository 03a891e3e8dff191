"""Shared fixtures: one real dev server for the session, and its client environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.dns import localhost_subdomains
from tests.support.postgres import PostgresCluster, postgres_cluster
from tests.support.server import DevServer, running

# Modules whose tests flood a server with connections, measure its workers' memory or
# hold its workers with slow bodies: under `pytest -n N --dist loadscope` (pytest-xdist)
# they run one after another on one worker, so that they never disturb each other.
HEAVY_MODULES = frozenset({
    "tests/security/test_server_process.py",
    "tests/security/test_body_discipline.py",
    "tests/security/test_token_guessing.py",
    "tests/security/test_slow_bodies.py",
})


# The suite drives every test at one shared vault, creating keys and secrets back to back
# far faster than Azure's limits allow (20 key creates per 10 s): the shared server throttles
# at 100 times those limits, so the gate runs on every request without refusing any.
# tests/security/test_throttling.py starts servers of its own with small limits.
SUITE_THROTTLING = ("--throttling", "100")


def work_unit(nodeid: str) -> str:
    """What one xdist worker runs whole: a module (its module-scoped servers start once),
    or all the heavy modules together."""
    module = nodeid.split("::", 1)[0]
    return "heavy" if module in HEAVY_MODULES else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadscope` with work_unit as the scope. (xdist_group marks cannot do it:
    `--dist loadgroup` renames node ids, which pytest 9 no longer lets a plugin do.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
           ) -> Iterator[DevServer]:
    """One dev server; with OKV_TEST_CLUSTER=N, N nodes on PostgreSQL behind a load
    balancer, shaped as one server (tests/support/cluster.py)."""
    data = tmp_path_factory.mktemp("okv") / "data"
    nodes = int(os.environ.get("OKV_TEST_CLUSTER") or 0)
    if nodes:
        from tests.support.cluster import cluster_server

        postgres: PostgresCluster = request.getfixturevalue("postgres")
        cluster = cluster_server(data, postgres.create_database(), nodes)
        cluster.extra_args = SUITE_THROTTLING
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
        return
    with running(data, extra_args=SUITE_THROTTLING) as s:
        yield s


@pytest.fixture
def sdk_env(server: DevServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment from dev.env, as an application would load it."""
    for k in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
              "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
              "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_TOKEN_CREDENTIALS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    return dict(server.env)


@pytest.fixture
def resolve_localhost() -> Iterator[None]:
    with localhost_subdomains():
        yield


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for this test process (tests/support/postgres.py)."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """The SQLAlchemy URL of a new, empty PostgreSQL database for one test."""
    return postgres.create_database()
