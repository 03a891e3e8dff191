"""Fixtures for the security tests: the deployment behind the session server, raw HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import Clock
from tests.support.server import DevServer

API = "api-version=7.5"

# Variables that would make the SDK's credentials pick another source.
CREDENTIAL_ENV = (
    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
    "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
)


def open_deployment(server: DevServer, clock: Clock | None = None,
                    port: int | None = None) -> Deployment:
    """Open the server's data directory in-process: same signing key, same identities.

    The issuer names the port, so `port` defaults to the server's.
    """
    return Deployment.open(server.settings(port=port or server.port),
                           clock=clock)


def resource(server: DevServer) -> str:
    """The token audience the server expects on `localhost:PORT`."""
    return f"https://vault.localhost:{server.port}"


_TENANTS: dict[str, str] = {}


def tenant_of(server: DevServer) -> str:
    """The deployment's tenant, as its tokens name it (`tid`)."""
    key = str(server.data_dir)
    if key not in _TENANTS:
        claims = Rest(server).msi_token()["access_token"].split(".")[1]
        _TENANTS[key] = json.loads(b64url_decode(claims))["tid"]
    return _TENANTS[key]


def challenge(server: DevServer) -> str:
    """Azure's form: the token service with the tenant, then the resource (whatever the host)."""
    tenant = tenant_of(server)
    return (f'Bearer authorization="https://localhost:{server.port}/{tenant}", '
            f'resource="{resource(server)}"')


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Rest:
    """Plain HTTPS calls to one server, with the dev identity's token unless told otherwise."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, no REQUESTS_CA_BUNDLE from the environment
        self.session.verify = server.ca
        self._token: str | None = None

    def msi_token(self, resource_: str | None = None) -> dict[str, Any]:
        r = self.session.get(
            f"{self.server.url}/msi/token",
            params={"api-version": "2019-08-01", "resource": resource_ or resource(self.server)},
            headers={"X-IDENTITY-HEADER": self.server.env["IDENTITY_HEADER"]},
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.msi_token()["access_token"]
        return self._token

    def call(self, method: str, path: str, *, token: str | None = "dev",
             query: str = API, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token == "dev":
            token = self.token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        sep = "&" if "?" in path else "?"
        url = f"{self.server.url}{path}{sep + query if query else ''}"
        return self.session.request(method, url, headers=headers, **kw)


@pytest.fixture(scope="session")
def deployment(server: DevServer) -> Iterator[Deployment]:
    d = open_deployment(server)
    yield d
    d.close()


@pytest.fixture(scope="session")
def rest(server: DevServer) -> Rest:
    return Rest(server)


@pytest.fixture
def use_server_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the SDK's environment (credential, CA bundle) at a given server."""

    def apply(server: DevServer) -> None:
        for k in CREDENTIAL_ENV:
            monkeypatch.delenv(k, raising=False)
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)

    return apply
