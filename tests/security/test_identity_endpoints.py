"""The managed identity token endpoints: App Service style (/msi/token) and IMDS style."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, resource
from tests.support.server import DevServer

MSI = "/msi/token"
IMDS = "/metadata/identity/oauth2/token"


def msi(rest: Rest, header: str | None, **params: str) -> requests.Response:
    headers = {} if header is None else {"X-IDENTITY-HEADER": header}
    return rest.session.get(f"{rest.server.url}{MSI}",
                            params={"api-version": "2019-08-01", **params}, headers=headers)


def imds(rest: Rest, path: str = IMDS, metadata: str | None = "true",
         **params: str) -> requests.Response:
    headers = {} if metadata is None else {"Metadata": metadata}
    return rest.session.get(f"{rest.server.url}{path}",
                            params={"api-version": "2018-02-01", **params}, headers=headers)


def check_token_response(body: dict[str, object], res: str, d: Deployment) -> dict[str, object]:
    """The fields both Python (expires_in) and JS (expires_on) need; returns the JWT claims."""
    assert body["token_type"] == "Bearer"
    assert body["resource"] == res
    expires_in, expires_on = body["expires_in"], body["expires_on"]
    assert isinstance(expires_in, str) and expires_in.isdigit()
    assert isinstance(expires_on, str) and expires_on.isdigit()
    now = d.clock.now()
    assert int(expires_in) >= 3600  # the SDKs refresh tokens with < 5 min left
    assert now < int(expires_on) <= now + int(expires_in) + 60
    token = body["access_token"]
    assert isinstance(token, str)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == d.tokens.jwk["kid"]
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    assert {"iss", "aud", "exp", "nbf", "iat", "oid", "tid"} <= set(claims)
    assert claims["iss"] == d.tokens.issuer
    assert claims["aud"] == res
    assert claims["exp"] == int(expires_on)
    assert claims["nbf"] <= claims["iat"] <= now + 1  # type: ignore[operator]
    assert claims["oid"] == d.dev_principal.object_id
    assert claims["tid"] == d.tenant_id
    return claims


# ---- App Service style --------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "", "wrong", "x" * 43])
def test_msi_needs_the_identity_header(rest: Rest, server: DevServer, header: str | None) -> None:
    r = msi(rest, header, resource=resource(server))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "Unauthorized"
    assert "access_token" not in r.text


def test_msi_header_with_a_suffix_is_refused(rest: Rest, server: DevServer) -> None:
    r = msi(rest, server.env["IDENTITY_HEADER"] + "x", resource=resource(server))
    assert r.status_code == 401


def test_msi_needs_a_resource(rest: Rest, server: DevServer) -> None:
    for params in ({}, {"resource": ""}, {"resource": "not a url"}, {"resource": "ftp://x"}):
        r = msi(rest, server.env["IDENTITY_HEADER"], **params)
        assert r.status_code == 400, params
        assert "access_token" not in r.text


def test_msi_issues_a_token(rest: Rest, server: DevServer, deployment: Deployment) -> None:
    res = resource(server)
    r = msi(rest, server.env["IDENTITY_HEADER"], resource=res)
    assert r.status_code == 200, r.text
    check_token_response(r.json(), res, deployment)


def test_msi_scope_form_and_trailing_slash_name_the_same_resource(
    rest: Rest, server: DevServer, deployment: Deployment
) -> None:
    res = resource(server)
    for asked in (res + "/", res + "/.default"):
        r = msi(rest, server.env["IDENTITY_HEADER"], resource=asked)
        assert r.status_code == 200, r.text
        token = check_token_response(r.json(), res, deployment)
        assert token["aud"] == res


def test_msi_token_works_on_the_data_plane(rest: Rest, server: DevServer) -> None:
    token = msi(rest, server.env["IDENTITY_HEADER"],
                resource=resource(server)).json()["access_token"]
    assert rest.call("GET", "/secrets", token=token).status_code == 200


@pytest.mark.parametrize("param", ["client_id", "object_id", "principal_id", "mi_res_id",
                                   "msi_res_id"])
def test_msi_refuses_another_identity(rest: Rest, server: DevServer, param: str) -> None:
    r = msi(rest, server.env["IDENTITY_HEADER"], resource=resource(server),
            **{param: str(uuid.uuid4())})
    assert r.status_code == 400
    assert "access_token" not in r.text


def test_msi_accepts_the_dev_identity_by_client_id(rest: Rest, server: DevServer,
                                                   deployment: Deployment) -> None:
    assert deployment.dev_principal.app_id
    r = msi(rest, server.env["IDENTITY_HEADER"], resource=resource(server),
            client_id=deployment.dev_principal.app_id)
    assert r.status_code == 200
    assert r.json()["client_id"] == deployment.dev_principal.app_id


# ---- IMDS style ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", [IMDS, IMDS + "/"])
def test_imds_issues_a_token(rest: Rest, server: DevServer, deployment: Deployment,
                             path: str) -> None:
    res = resource(server)
    r = imds(rest, path, resource=res)
    assert r.status_code == 200, r.text
    check_token_response(r.json(), res, deployment)


@pytest.mark.parametrize("path", [IMDS, IMDS + "/"])
@pytest.mark.parametrize("metadata", [None, "false", "1", ""])
def test_imds_needs_the_metadata_header(rest: Rest, server: DevServer, path: str,
                                        metadata: str | None) -> None:
    r = imds(rest, path, metadata=metadata, resource=resource(server))
    assert r.status_code == 400
    assert "access_token" not in r.text


def test_imds_needs_a_resource(rest: Rest) -> None:
    r = imds(rest)
    assert r.status_code == 400


def test_imds_refuses_another_client_id(rest: Rest, server: DevServer) -> None:
    r = imds(rest, resource=resource(server), client_id=str(uuid.uuid4()))
    assert r.status_code == 400
    assert "access_token" not in r.text


def test_imds_end_to_end_with_the_sdk(server: DevServer,
                                      use_server_env: Callable[[DevServer], None],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    use_server_env(server)
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"https://localhost:{server.port}")
    served = f"GET {IMDS} 200"
    before = server.log().count(served)

    client = SecretClient(server.url, ManagedIdentityCredential(), verify_challenge_resource=False)
    name = f"imds-{uuid.uuid4().hex[:10]}"
    client.set_secret(name, "through-imds")
    assert client.get_secret(name).value == "through-imds"
    # The credential really went through IMDS (each request is logged once it is answered).
    assert server.log().count(served) > before


def test_sdk_with_another_client_id_fails(server: DevServer,
                                          use_server_env: Callable[[DevServer], None]) -> None:
    use_server_env(server)
    client = SecretClient(server.url, ManagedIdentityCredential(client_id=str(uuid.uuid4())),
                          verify_challenge_resource=False)
    with pytest.raises(ClientAuthenticationError):
        client.get_secret("anything")
