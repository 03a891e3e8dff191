"""A valid token for a principal that holds no role: 403 ForbiddenByRbac, and nothing changes."""

from __future__ import annotations

import uuid

import pytest
import requests

from openkeyvault.access.principals import Principal
from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, resource
from tests.support.server import DevServer


@pytest.fixture(scope="module")
def stranger_token(server: DevServer, deployment: Deployment) -> str:
    """A genuine token (right key, issuer, audience) for a real principal of the directory
    that is not the dev one and holds no role."""
    record, _ = deployment.directory.create(f"stranger-{uuid.uuid4().hex[:8]}")
    stranger = Principal(record.object_id, record.tenant_id, record.client_id)
    return deployment.tokens.issue(stranger, resource(server)).access_token


@pytest.fixture
def existing(rest: Rest) -> tuple[str, str]:
    name = f"authz-{uuid.uuid4().hex[:10]}"
    r = rest.call("PUT", f"/secrets/{name}", json={"value": "original-value"})
    assert r.status_code == 200, r.text
    return name, r.json()["id"].rsplit("/", 1)[1]


def assert_forbidden(r: requests.Response, *leaks: str) -> None:
    assert r.status_code == 403, r.text
    assert "WWW-Authenticate" not in r.headers
    err = r.json()["error"]
    assert err["code"] == "Forbidden"
    assert err["innererror"]["code"] == "ForbiddenByRbac"
    for leak in leaks:
        assert leak not in r.text


def test_get_is_forbidden(rest: Rest, stranger_token: str, existing: tuple[str, str]) -> None:
    name, version = existing
    assert_forbidden(rest.call("GET", f"/secrets/{name}", token=stranger_token), "original-value")
    assert_forbidden(rest.call("GET", f"/secrets/{name}/{version}", token=stranger_token),
                     "original-value")


def test_list_is_forbidden(rest: Rest, stranger_token: str, existing: tuple[str, str]) -> None:
    name, _ = existing
    assert_forbidden(rest.call("GET", "/secrets", token=stranger_token), name)
    assert_forbidden(rest.call("GET", f"/secrets/{name}/versions", token=stranger_token))
    assert_forbidden(rest.call("GET", "/deletedsecrets", token=stranger_token))


def test_set_is_forbidden_and_creates_nothing(rest: Rest, stranger_token: str) -> None:
    name = f"authz-{uuid.uuid4().hex[:10]}"
    r = rest.call("PUT", f"/secrets/{name}", token=stranger_token,
                  json={"value": "stranger-value"})
    assert_forbidden(r, "stranger-value")
    r = rest.call("GET", f"/secrets/{name}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SecretNotFound"


def test_set_on_an_existing_secret_adds_no_version(rest: Rest, stranger_token: str,
                                                   existing: tuple[str, str]) -> None:
    name, version = existing
    r = rest.call("PUT", f"/secrets/{name}", token=stranger_token,
                  json={"value": "stranger-value"})
    assert_forbidden(r, "stranger-value")
    latest = rest.call("GET", f"/secrets/{name}").json()
    assert latest["value"] == "original-value"
    assert latest["id"].endswith(f"/{version}")
    versions = rest.call("GET", f"/secrets/{name}/versions").json()["value"]
    assert len(versions) == 1


def test_update_is_forbidden(rest: Rest, stranger_token: str, existing: tuple[str, str]) -> None:
    name, _ = existing
    r = rest.call("PATCH", f"/secrets/{name}", token=stranger_token,
                  json={"attributes": {"enabled": False}, "tags": {"owned": "yes"}})
    assert_forbidden(r)
    latest = rest.call("GET", f"/secrets/{name}").json()
    assert latest["attributes"]["enabled"] is True
    assert "tags" not in latest or latest["tags"] != {"owned": "yes"}


def test_delete_is_forbidden_and_deletes_nothing(rest: Rest, stranger_token: str,
                                                 existing: tuple[str, str]) -> None:
    name, _ = existing
    assert_forbidden(rest.call("DELETE", f"/secrets/{name}", token=stranger_token))
    r = rest.call("GET", f"/secrets/{name}")
    assert r.status_code == 200
    assert r.json()["value"] == "original-value"
    assert rest.call("GET", f"/deletedsecrets/{name}").status_code == 404


def test_lifecycle_operations_are_forbidden(rest: Rest, stranger_token: str,
                                            existing: tuple[str, str]) -> None:
    name, _ = existing
    assert_forbidden(rest.call("POST", f"/secrets/{name}/backup", token=stranger_token))
    assert rest.call("DELETE", f"/secrets/{name}").status_code == 200
    assert_forbidden(rest.call("GET", f"/deletedsecrets/{name}", token=stranger_token))
    assert_forbidden(rest.call("POST", f"/deletedsecrets/{name}/recover", token=stranger_token))
    assert_forbidden(rest.call("DELETE", f"/deletedsecrets/{name}", token=stranger_token))
    # Still deleted and recoverable by the dev identity: neither recover nor purge happened.
    assert rest.call("GET", f"/secrets/{name}").status_code == 404
    assert rest.call("GET", f"/deletedsecrets/{name}").status_code == 200
    assert rest.call("POST", f"/deletedsecrets/{name}/recover").status_code == 200


def test_restore_is_forbidden(rest: Rest, stranger_token: str, existing: tuple[str, str]) -> None:
    name, _ = existing
    blob = rest.call("POST", f"/secrets/{name}/backup").json()["value"]
    assert rest.call("DELETE", f"/secrets/{name}").status_code == 200
    assert rest.call("DELETE", f"/deletedsecrets/{name}").status_code == 204
    assert_forbidden(rest.call("POST", "/secrets/restore", token=stranger_token,
                               json={"value": blob}))
    assert rest.call("GET", f"/secrets/{name}").status_code == 404


def test_a_token_for_another_tenant_is_not_even_authenticated(
        server: DevServer, deployment: Deployment, rest: Rest) -> None:
    """A token signed by this deployment but naming another tenant (`tid`) is a 401
    challenge, not a 403: it never reaches the authorization decision."""
    outsider = Principal(str(uuid.uuid4()), str(uuid.uuid4()))
    token = deployment.tokens.issue(outsider, resource(server)).access_token
    r = rest.call("GET", "/secrets", token=token)
    assert r.status_code == 401
    assert "WWW-Authenticate" in r.headers
    assert "another tenant" in r.json()["error"]["message"]
