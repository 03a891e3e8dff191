"""The fixed issuer and contacts paths win over the /certificates/{name}/... patterns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openkeyvault.api.router import Router
from openkeyvault.api.routes import data_plane_routes
from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    d = Deployment.open(Settings(data_dir=tmp_path_factory.mktemp("routes") / "data"))
    try:
        yield Router(data_plane_routes(d))
    finally:
        d.close()


@pytest.mark.parametrize(("method", "path", "handler", "params"), [
    ("GET", "/certificates/issuers", "IssuerRoutes.list", {}),
    ("GET", "/certificates/issuers/a", "IssuerRoutes.get", {"name": "a"}),
    ("PUT", "/certificates/issuers/a", "IssuerRoutes.set", {"name": "a"}),
    ("PATCH", "/certificates/issuers/a", "IssuerRoutes.update", {"name": "a"}),
    ("DELETE", "/certificates/issuers/a", "IssuerRoutes.delete", {"name": "a"}),
    ("GET", "/certificates/contacts", "ContactRoutes.get", {}),
    ("PUT", "/certificates/contacts", "ContactRoutes.set", {}),
    ("DELETE", "/certificates/contacts", "ContactRoutes.delete", {}),
    ("GET", "/Certificates/Issuers", "IssuerRoutes.list", {}),
])
def test_fixed_paths_win(router: Router, method: str, path: str, handler: str,
                         params: dict[str, str]) -> None:
    found = router.resolve(method, path)
    assert isinstance(found, tuple), found
    route, got = found
    assert route.handler.__qualname__ == handler
    assert got == params


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/certificates/contacts"), ("PUT", "/certificates/issuers"),
    ("POST", "/certificates/issuers"),
])
def test_other_methods_are_405(router: Router, method: str, path: str) -> None:
    assert router.resolve(method, path) is False
