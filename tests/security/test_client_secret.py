"""Service principals with client secrets, and the Entra-shaped token service.

Authentication works end to end with the SDK's ClientSecretCredential; the
principal holds no role yet, so data operations are refused with 403 (roles
come with the authorization work) — which proves the token was accepted.
"""

from __future__ import annotations

import json

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")


def _create(server: DevServer, name: str) -> dict[str, str]:
    done = server.okv("principal", "create", name)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _credential(server: DevServer, p: dict[str, str], secret: str | None = None
                ) -> ClientSecretCredential:
    return ClientSecretCredential(p["tenant_id"], p["client_id"], secret or p["client_secret"],
                                  authority=f"https://localhost:{server.port}",
                                  disable_instance_discovery=True)


def _scope(server: DevServer) -> str:
    return f"https://vault.localhost:{server.port}/.default"


def test_client_secret_credential_gets_a_token_the_vault_accepts(server: DevServer) -> None:
    p = _create(server, "app-secret")
    token = _credential(server, p).get_token(_scope(server)).token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["oid"] == p["object_id"]
    assert claims["tid"] == p["tenant_id"]
    assert claims["appid"] == p["client_id"]
    assert claims["aud"] == f"https://vault.localhost:{server.port}"

    client = SecretClient(server.url, _credential(server, p), verify_challenge_resource=False)
    with pytest.raises(HttpResponseError) as e:
        client.get_secret("anything")
    assert e.value.status_code == 403  # authenticated (not 401), but holds no role yet
    assert "ForbiddenByRbac" in str(e.value)
    assert p["object_id"] in e.value.message


def test_discovery_and_jwks_describe_the_tokens(server: DevServer) -> None:
    p = _create(server, "app-discovery")
    base = f"https://localhost:{server.port}/{p['tenant_id']}"
    doc = requests.get(f"{base}/v2.0/.well-known/openid-configuration", verify=server.ca,
                       timeout=10).json()
    for field in ("issuer", "token_endpoint", "authorization_endpoint", "jwks_uri",
                  "device_authorization_endpoint", "end_session_endpoint"):
        assert doc[field]
    assert doc["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    keys = requests.get(doc["jwks_uri"], verify=server.ca, timeout=10).json()["keys"]
    token = _credential(server, p).get_token(_scope(server)).token
    header = jwt.get_unverified_header(token)
    (jwk,) = [k for k in keys if k["kid"] == header["kid"]]
    assert "d" not in jwk
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"],
                        audience=f"https://vault.localhost:{server.port}", issuer=doc["issuer"])
    assert claims["oid"] == p["object_id"]


def test_wrong_or_revoked_secret_is_refused(server: DevServer) -> None:
    p = _create(server, "app-revoke")
    with pytest.raises(ClientAuthenticationError):
        _credential(server, p, secret=p["client_secret"] + "x").get_token(_scope(server))

    added = server.okv("principal", "secret", "add", p["client_id"])
    assert added.returncode == 0, added.stderr
    second = json.loads(added.stdout)
    assert _credential(server, p, second["client_secret"]).get_token(_scope(server)).token

    removed = server.okv("principal", "secret", "remove", p["client_id"], p["secret_id"])
    assert removed.returncode == 0, removed.stderr
    with pytest.raises(ClientAuthenticationError):
        _credential(server, p).get_token(_scope(server))
    assert _credential(server, p, second["client_secret"]).get_token(_scope(server)).token

    deleted = server.okv("principal", "delete", p["client_id"])
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(ClientAuthenticationError):
        _credential(server, p, second["client_secret"]).get_token(_scope(server))
    listed = json.loads(server.okv("principal", "list", "--output", "json").stdout)
    assert p["client_id"] not in {x["client_id"] for x in listed}


def _token_call(server: DevServer, tenant: str, form: dict[str, str]) -> requests.Response:
    return requests.post(f"https://localhost:{server.port}/{tenant}/oauth2/v2.0/token",
                         data=form, verify=server.ca, timeout=10)


def test_token_endpoint_refusals(server: DevServer) -> None:
    p = _create(server, "app-refusals")
    good = {"grant_type": "client_credentials", "client_id": p["client_id"],
            "client_secret": p["client_secret"], "scope": _scope(server)}
    assert _token_call(server, p["tenant_id"], good).status_code == 200
    cases = [
        ("00000000-0000-0000-0000-000000000000", good, 400, "invalid_request"),
        (p["tenant_id"], {**good, "grant_type": "password"}, 400, "unsupported_grant_type"),
        (p["tenant_id"], {**good, "scope": "https://vault.localhost"}, 400, "invalid_scope"),
        (p["tenant_id"], {k: v for k, v in good.items() if k != "client_secret"}, 400,
         "invalid_request"),
        (p["tenant_id"], {**good, "client_secret": "nope"}, 401, "invalid_client"),
        (p["tenant_id"], {**good, "client_id": "not-a-client"}, 401, "invalid_client"),
    ]
    for tenant, form, status, error in cases:
        r = _token_call(server, tenant, form)
        assert (r.status_code, r.json()["error"]) == (status, error), form
        assert "access_token" not in r.json()
        assert p["client_secret"] not in r.text


def test_client_secrets_are_not_stored_in_the_clear(server: DevServer) -> None:
    p = _create(server, "app-at-rest")
    blob = b"".join(f.read_bytes() for f in server.data_dir.glob("okv.db*"))
    assert p["client_secret"].encode() not in blob
    assert p["client_id"].encode() in blob  # the right files were read
    listed = server.okv("principal", "list", "--output", "json")
    assert p["client_secret"] not in listed.stdout
