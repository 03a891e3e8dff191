"""Shared fixtures: one real dev server for the session, and its client environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dns import localhost_subdomains
from tests.support.server import DevServer, running


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running(tmp_path_factory.mktemp("okv") / "data") as s:
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
