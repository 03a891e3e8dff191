"""A small client for the key API over one keep-alive HTTPS session.

Imports each distinct (JWK, key_ops) once per test session and hands back the
versioned key path; operations return the raw `requests.Response` so tests can
compare statuses and bodies byte for byte.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import requests

from tests.support.server import DevServer
from tests.vectors.loader import b64u_decode, prepare_jwk

API = "api-version=7.5"


def bearer_token(server: DevServer, service: str = "vault") -> str:
    """The dev identity's token for `service` ("vault", "managedhsm", or a full resource
    URI such as the management API's)."""
    resource = service if "://" in service else f"https://{service}.localhost:{server.port}"
    r = requests.get(
        f"https://localhost:{server.port}/msi/token",
        params={"api-version": "2019-08-01", "resource": resource},
        headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
        verify=server.ca, timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def new_pool(server: DevServer, prefix: str) -> tuple[str, str]:
    """(name, the dev identity's object id): a managed HSM pool made through the management
    API with plain HTTPS, the dev identity its initial administrator (not yet activated)."""
    token = bearer_token(server, "https://management.azure.com/")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    r = requests.put(
        f"https://127.0.0.1:{server.port}/subscriptions/{uuid.uuid4()}/resourceGroups/rg1/"
        f"providers/Microsoft.KeyVault/managedHSMs/{name}",
        params={"api-version": "2023-07-01"},
        json={"location": "westeurope", "sku": {"family": "B", "name": "Standard_B1"},
              "properties": {"tenantId": claims["tid"],
                             "initialAdminObjectIds": [claims["oid"]]}},
        headers={"Host": f"localhost:{server.port}", "Authorization": f"Bearer {token}"},
        verify=server.ca, timeout=60)
    assert r.status_code in (200, 201), r.text
    return name, str(claims["oid"])


class KeyApi:
    """`vault`: a vault other than the default, named by the Host header (the connection
    still goes to 127.0.0.1); `hsm`: keys are imported into the HSM ("Hsm": true), so
    every operation runs in the dev server's PKCS#11 token."""

    def __init__(self, server: DevServer, session: requests.Session, *,
                 vault: str | None = None, hsm: bool = False, pool: str | None = None) -> None:
        """`pool`: a managed HSM pool's name instead of a vault's."""
        self.server = server
        self.base = f"https://127.0.0.1:{server.port}"
        self.session = session
        self.hsm = hsm
        self.label = ", managed HSM" if pool else ", HSM" if hsm else ""
        session.headers["Authorization"] = \
            f"Bearer {bearer_token(server, 'managedhsm' if pool else 'vault')}"
        if vault is not None:
            session.headers["Host"] = f"{vault}.vault.localhost:{server.port}"
        if pool is not None:
            session.headers["Host"] = f"{pool}.managedhsm.localhost:{server.port}"
        self._keys: dict[str, str] = {}
        self.imports = 0
        self.requests = 0

    def call(self, method: str, path: str, body: dict[str, Any] | None = None
             ) -> requests.Response:
        self.requests += 1
        return self.session.request(method, f"{self.base}{path}?{API}", json=body,
                                    verify=self.server.ca, timeout=60)

    def import_key(self, jwk: dict[str, Any], key_ops: list[str]) -> str:
        """Import a vector JWK (once per session) and return '/keys/{name}/{version}'."""
        prepared = prepare_jwk(jwk, key_ops)
        cache_key = json.dumps(prepared, sort_keys=True)
        path = self._keys.get(cache_key)
        if path is None:
            name = f"wycheproof-{uuid.uuid4().hex[:16]}"
            body: dict[str, Any] = {"key": prepared, **({"Hsm": True} if self.hsm else {})}
            r = self.call("PUT", f"/keys/{name}", body)
            assert r.status_code == 200, r.text
            key = r.json()["key"]
            assert key["kty"] == prepared["kty"] + ("-HSM" if self.hsm else ""), key["kty"]
            # The bundle shows exactly the public half we sent, never the private members.
            kty = prepared["kty"]
            public = ("n", "e") if kty.startswith("RSA") else () if kty.startswith("oct") \
                else ("crv", "x", "y")
            assert {k: key[k] for k in public} == {k: prepared[k] for k in public}
            assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)
            path = f"/keys/{name}/{key['kid'].rsplit('/', 1)[1]}"
            self._keys[cache_key] = path
            self.imports += 1
        return path

    def op(self, key: str, operation: str, body: dict[str, Any]) -> requests.Response:
        return self.call("POST", f"{key}/{operation}", body)

    def value(self, key: str, operation: str, body: dict[str, Any]) -> bytes:
        """The bytes an operation returns; fails the test on any error."""
        r = self.op(key, operation, body)
        assert r.status_code == 200, f"{operation}: {r.status_code} {r.text}"
        out = r.json()
        assert out["kid"].endswith(key), out
        return b64u_decode(out["value"])

    def verify(self, key: str, body: dict[str, Any]) -> bool:
        r = self.op(key, "verify", body)
        assert r.status_code == 200, f"verify: {r.status_code} {r.text}"
        result = r.json()["value"]
        assert isinstance(result, bool)
        return result


def error(r: requests.Response) -> tuple[int, bytes]:
    """How a failure looks from outside: the status and the exact body bytes."""
    return r.status_code, r.content
