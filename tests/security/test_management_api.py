"""The management API over raw HTTP: authentication (management audiences only),
api-version, unknown paths, malformed bodies and authorization — every refusal with its
status and ARM error code, and nothing changed by it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, resource
from tests.support.server import DevServer

MGMT_API = "api-version=2026-05-15"
MANAGEMENT = "https://management.azure.com"


@pytest.fixture(scope="module")
def mgmt_token(rest: Rest) -> str:
    return str(rest.msi_token(MANAGEMENT)["access_token"])


def vault_path(sub: str, name: str, rg: str = "rg1") -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"


def new_name() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


def put_body(deployment: Deployment, **props: Any) -> dict[str, Any]:
    return {"location": "local", "properties": {
        "tenantId": deployment.tenant_id, "sku": {"family": "A", "name": "standard"}, **props}}


def call(rest: Rest, token: str | None, method: str, path: str, query: str = MGMT_API,
         **kw: Any) -> requests.Response:
    return rest.call(method, path, token=token, query=query, **kw)


def error_code(r: requests.Response) -> str:
    return str(r.json()["error"]["code"])


def absent(rest: Rest, token: str, sub: str, name: str) -> None:
    r = call(rest, token, "GET", vault_path(sub, name))
    assert r.status_code == 404, r.text
    assert error_code(r) == "ResourceNotFound"


def test_a_vault_round_trip_over_raw_http(rest: Rest, mgmt_token: str,
                                          deployment: Deployment) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name), json=put_body(deployment))
    assert r.status_code == 201, r.text
    assert r.json()["properties"]["provisioningState"] == "Succeeded"
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name), json=put_body(deployment))
    assert r.status_code == 200, r.text
    r = call(rest, mgmt_token, "DELETE", vault_path(sub, name))
    assert r.status_code == 200
    r = call(rest, mgmt_token, "DELETE", vault_path(sub, name))
    assert r.status_code == 204


def test_missing_token_is_challenged(rest: Rest, deployment: Deployment) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    r = call(rest, None, "PUT", vault_path(sub, name), json=put_body(deployment))
    assert r.status_code == 401
    assert error_code(r) == "AuthenticationFailed"
    assert r.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    assert deployment.vaults.placement_of(name) is None


def test_data_plane_audience_is_refused_for_management(rest: Rest, deployment: Deployment,
                                                       server: DevServer) -> None:
    data_token = rest.token  # audience https://vault.localhost:PORT
    sub, name = str(uuid.uuid4()), new_name()
    r = call(rest, data_token, "PUT", vault_path(sub, name), json=put_body(deployment))
    assert r.status_code == 401
    assert error_code(r) == "InvalidAuthenticationToken"
    assert deployment.vaults.placement_of(name) is None
    r = call(rest, "not-a-token", "GET", f"/subscriptions/{sub}/providers/Microsoft.KeyVault/"
             "vaults")
    assert r.status_code == 401
    assert error_code(r) == "InvalidAuthenticationToken"


def test_management_audience_is_refused_by_the_data_plane(rest: Rest, mgmt_token: str,
                                                          server: DevServer) -> None:
    r = rest.call("GET", "/secrets", token=mgmt_token)
    assert r.status_code == 401
    assert resource(server) in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("audience", ["https://management.core.windows.net/", "BASE"])
def test_other_management_audiences_are_accepted(rest: Rest, server: DevServer,
                                                 audience: str) -> None:
    aud = f"https://localhost:{server.port}" if audience == "BASE" else audience
    token = rest.msi_token(aud)["access_token"]
    r = call(rest, token, "GET", f"/subscriptions/{uuid.uuid4()}/providers/Microsoft.KeyVault/"
             "vaults")
    assert r.status_code == 200, r.text
    assert r.json() == {"value": []}


@pytest.mark.parametrize("query,code", [
    ("", "MissingApiVersionParameter"),
    ("api-version=7.5", "InvalidApiVersionParameter"),
    ("api-version=2099-01-01", "InvalidApiVersionParameter"),
])
def test_api_version_is_checked(rest: Rest, mgmt_token: str, deployment: Deployment,
                                query: str, code: str) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name), query=query,
             json=put_body(deployment))
    assert r.status_code == 400, r.text
    assert error_code(r) == code
    absent(rest, mgmt_token, sub, name)


@pytest.mark.parametrize("path", [
    "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.KeyVault/managedHSMs/x/y/z",
    "/subscriptions/{sub}/providers/Microsoft.KeyVault/nothing",
    "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/{name}/x/y",
    "/providers/Microsoft.KeyVault/unknown",
])
def test_unknown_paths_are_not_found(rest: Rest, mgmt_token: str, path: str) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    r = call(rest, mgmt_token, "PUT", path.format(sub=sub, name=name), json={})
    assert r.status_code == 404, r.text
    assert error_code(r) == "NotFound"
    absent(rest, mgmt_token, sub, name)


def test_wrong_method_is_refused(rest: Rest, mgmt_token: str) -> None:
    sub = str(uuid.uuid4())
    r = call(rest, mgmt_token, "POST", f"/subscriptions/{sub}/providers/Microsoft.KeyVault/"
             "vaults")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET"


@pytest.mark.parametrize("raw,code", [
    (b"", "InvalidRequestContent"),
    (b"{not json", "InvalidRequestContent"),
    (b"[]", "InvalidRequestContent"),
    (b'{"location": "local"}', "BadRequest"),
    (b'{"properties": {}}', "LocationRequired"),
    (b'{"location": "local", "properties": {"tenantId": "TENANT", "sku": {"name": "gold", '
     b'"family": "A"}}}', "BadRequest"),
    (b'{"location": "local", "properties": {"tenantId": "TENANT"}}', "BadRequest"),
    (b'{"location": "local", "properties": {"tenantId": "TENANT", "sku": {"name": '
     b'"standard", "family": "A"}, "accessPolicies": [{"tenantId": "x"}]}}', "BadRequest"),
    (b'{"location": "local", "properties": {"tenantId": "TENANT", "sku": {"name": '
     b'"standard", "family": "A"}, "networkAcls": {"defaultAction": "Maybe"}}}', "BadRequest"),
    (b'{"location": "local", "properties": {"tenantId": "TENANT", "sku": {"name": '
     b'"standard", "family": "A"}, "createMode": "restore"}}', "BadRequest"),
    (b'{"location": "local", "tags": {"a": 1}, "properties": {"tenantId": "TENANT", "sku": '
     b'{"name": "standard", "family": "A"}}}', "InvalidTag"),
])
def test_malformed_bodies_are_refused(rest: Rest, mgmt_token: str, deployment: Deployment,
                                      raw: bytes, code: str) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name),
             data=raw.replace(b"TENANT", deployment.tenant_id.encode()),
             headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert error_code(r) == code
    absent(rest, mgmt_token, sub, name)


def test_oversized_body_is_refused(rest: Rest, mgmt_token: str, deployment: Deployment) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    body = put_body(deployment)
    body["tags"] = {"pad": "x" * (2 * 1024 * 1024)}
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name), json=body)
    assert r.status_code == 413
    absent(rest, mgmt_token, sub, name)


def test_invalid_subscription_and_resource_group(rest: Rest, mgmt_token: str,
                                                 deployment: Deployment) -> None:
    name = new_name()
    r = call(rest, mgmt_token, "PUT", vault_path("not-a-guid", name), json=put_body(deployment))
    assert r.status_code == 404
    assert error_code(r) == "InvalidSubscriptionId"
    sub = str(uuid.uuid4())
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name, rg="bad%23rg"),
             json=put_body(deployment))
    assert r.status_code == 400
    assert error_code(r) == "InvalidResourceGroup"
    assert deployment.vaults.placement_of(name) is None


def test_a_failed_update_changes_nothing(rest: Rest, mgmt_token: str,
                                         deployment: Deployment) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name),
             json=put_body(deployment, softDeleteRetentionInDays=10) | {"tags": {"a": "1"}})
    assert r.status_code == 201, r.text
    before = call(rest, mgmt_token, "GET", vault_path(sub, name)).json()
    for patch in ({"properties": {"softDeleteRetentionInDays": 11}, "tags": {"a": "2"}},
                  {"properties": {"enableSoftDelete": False}, "tags": {"a": "2"}},
                  {"properties": {"sku": {"family": "A", "name": "gold"}}, "tags": {"a": "2"}},
                  {"properties": {"tenantId": str(uuid.uuid4())}, "tags": {"a": "2"}}):
        r = call(rest, mgmt_token, "PATCH", vault_path(sub, name), json=patch)
        assert r.status_code == 400, (patch, r.text)
        assert call(rest, mgmt_token, "GET", vault_path(sub, name)).json() == before
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name) + "/accessPolicies/merge",
             json={"properties": {"accessPolicies": []}})
    assert r.status_code == 404
    assert call(rest, mgmt_token, "GET", vault_path(sub, name)).json() == before


def test_a_deleted_vaults_host_answers_like_a_missing_vault(
        rest: Rest, mgmt_token: str, deployment: Deployment, server: DevServer) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    assert call(rest, mgmt_token, "PUT", vault_path(sub, name),
                json=put_body(deployment)).status_code == 201
    url = f"https://127.0.0.1:{server.port}/secrets?api-version=7.5"
    host = {"Host": f"{name}.vault.localhost:{server.port}",
            "Authorization": f"Bearer {rest.token}"}
    assert rest.session.get(url, headers=host).status_code == 200
    assert call(rest, mgmt_token, "DELETE", vault_path(sub, name)).status_code == 200
    r = rest.session.get(url, headers=host)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "VaultNotFound"


def test_a_principal_without_control_roles_is_refused(rest: Rest, mgmt_token: str,
                                                      deployment: Deployment,
                                                      server: DevServer) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    assert call(rest, mgmt_token, "PUT", vault_path(sub, name),
                json=put_body(deployment)).status_code == 201
    done = server.okv("principal", "create", f"mgmt-raw-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    r = rest.session.post(
        f"{server.url}/{p['tenant_id']}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": p["client_id"],
              "client_secret": p["client_secret"], "scope": f"{MANAGEMENT}/.default"})
    assert r.status_code == 200, r.text
    theirs = r.json()["access_token"]
    before = call(rest, mgmt_token, "GET", vault_path(sub, name)).json()
    for method, path, body in (
            ("GET", vault_path(sub, name), None),
            ("PATCH", vault_path(sub, name), {"tags": {"x": "y"}}),
            ("DELETE", vault_path(sub, name), None),
            ("PUT", vault_path(sub, new_name()), put_body(deployment))):
        r = call(rest, theirs, method, path, json=body)
        assert r.status_code == 403, (method, r.text)
        assert error_code(r) == "AuthorizationFailed"
    r = call(rest, theirs, "GET", f"/subscriptions/{sub}/providers/Microsoft.KeyVault/vaults")
    assert r.status_code == 200 and r.json() == {"value": []}
    assert call(rest, mgmt_token, "GET", vault_path(sub, name)).json() == before


def hsm_path(sub: str, name: str, rg: str = "rg1") -> str:
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/"
            f"managedHSMs/{name}")


def hsm_body(deployment: Deployment, **props: Any) -> dict[str, Any]:
    return {"location": "local", "sku": {"family": "B", "name": "Standard_B1"},
            "properties": {"tenantId": deployment.tenant_id,
                           "initialAdminObjectIds": [deployment.dev_principal.object_id],
                           **props}}


def test_a_managed_hsm_round_trip_over_raw_http(rest: Rest, mgmt_token: str,
                                                deployment: Deployment) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    # The SDK's long-running create accepts 200 or 202 (not 201), purge 202 only.
    r = call(rest, mgmt_token, "PUT", hsm_path(sub, name), json=hsm_body(deployment))
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["provisioningState"] == "Succeeded"
    assert "Location" not in r.headers and "Azure-AsyncOperation" not in r.headers
    assert call(rest, mgmt_token, "DELETE", hsm_path(sub, name)).status_code == 200
    assert call(rest, mgmt_token, "DELETE", hsm_path(sub, name)).status_code == 204
    purge = f"/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/local/" \
            f"deletedManagedHSMs/{name}/purge"
    r = call(rest, mgmt_token, "POST", purge)
    assert r.status_code == 202, r.text
    r = call(rest, mgmt_token, "POST", purge)
    assert r.status_code == 404
    assert deployment.vaults.placement_of(name) is None


@pytest.mark.parametrize("change", [
    {"initialAdminObjectIds": None},
    {"initialAdminObjectIds": []},
    {"initialAdminObjectIds": ["00000000-0000-0000-0000-00000000000z"]},
    {"initialAdminObjectIds": "00000000-0000-0000-0000-000000000000"},
    {"softDeleteRetentionInDays": 91},
    {"enableSoftDelete": False},
    {"tenantId": "00000000-0000-0000-0000-000000000000"},
])
def test_invalid_managed_hsm_bodies_are_refused(rest: Rest, mgmt_token: str,
                                                deployment: Deployment,
                                                change: dict[str, Any]) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    body = hsm_body(deployment)
    body["properties"].update(change)
    body["properties"] = {k: v for k, v in body["properties"].items() if v is not None}
    r = call(rest, mgmt_token, "PUT", hsm_path(sub, name), json=body)
    assert r.status_code == 400, r.text
    assert error_code(r) in ("BadRequest", "InvalidTenantId")
    assert deployment.vaults.placement_of(name) is None


@pytest.mark.parametrize("sku", [None, {"family": "A", "name": "Standard_B1"},
                                 {"family": "B", "name": "premium"}])
def test_managed_hsm_sku_is_checked(rest: Rest, mgmt_token: str, deployment: Deployment,
                                    sku: dict[str, str] | None) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    body = hsm_body(deployment)
    body["sku"] = sku
    r = call(rest, mgmt_token, "PUT", hsm_path(sub, name), json=body)
    assert r.status_code == 400, r.text
    assert error_code(r) == "BadRequest"
    assert deployment.vaults.placement_of(name) is None


def test_a_managed_hsm_answers_no_data_plane(rest: Rest, mgmt_token: str,
                                            deployment: Deployment,
                                            server: DevServer) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    assert call(rest, mgmt_token, "PUT", hsm_path(sub, name),
                json=hsm_body(deployment)).status_code == 200
    url = f"https://127.0.0.1:{server.port}/secrets?api-version=7.5"

    def answer(host: str) -> tuple[int, str | None]:
        r = rest.session.get(url, headers={"Host": f"{host}:{server.port}",
                                           "Authorization": f"Bearer {rest.token}"})
        try:
            code = r.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        return r.status_code, code
    # Its vault-style and managedhsm hosts answer exactly like a name nobody holds.
    missing = new_name()
    assert answer(f"{name}.vault.localhost") == answer(f"{missing}.vault.localhost") \
        == (404, "VaultNotFound")
    assert answer(f"{name}.managedhsm.localhost") == answer(f"{missing}.managedhsm.localhost")
    assert answer(f"{name}.managedhsm.localhost")[0] >= 400


def test_managed_hsm_refusals_change_nothing(rest: Rest, mgmt_token: str,
                                            deployment: Deployment, server: DevServer) -> None:
    sub, name = str(uuid.uuid4()), new_name()
    assert call(rest, mgmt_token, "PUT", hsm_path(sub, name),
                json=hsm_body(deployment)).status_code == 200
    before = call(rest, mgmt_token, "GET", hsm_path(sub, name)).json()
    # The vault paths do not reach a pool, and the pool's paths do not reach a vault.
    r = call(rest, mgmt_token, "GET", vault_path(sub, name))
    assert r.status_code == 404 and error_code(r) == "ResourceNotFound"
    r = call(rest, mgmt_token, "PUT", vault_path(sub, name), json=put_body(deployment))
    assert r.status_code == 409 and error_code(r) == "VaultAlreadyExists"
    r = call(rest, mgmt_token, "DELETE", vault_path(sub, name))
    assert r.status_code == 204
    # Immutable settings and one-way switches.
    for props in ({"softDeleteRetentionInDays": 7},
                  {"initialAdminObjectIds": [str(uuid.uuid4())]}):
        r = call(rest, mgmt_token, "PATCH", hsm_path(sub, name), json={"properties": props})
        assert r.status_code == 400 and error_code(r) == "BadRequest", r.text
    # A principal without control-plane roles.
    done = server.okv("principal", "create", f"mgmt-hsm-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    r = rest.session.post(
        f"{server.url}/{p['tenant_id']}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": p["client_id"],
              "client_secret": p["client_secret"], "scope": f"{MANAGEMENT}/.default"})
    theirs = r.json()["access_token"]
    for method, path, body in (
            ("GET", hsm_path(sub, name), None),
            ("PATCH", hsm_path(sub, name), {"tags": {"x": "y"}}),
            ("DELETE", hsm_path(sub, name), None),
            ("PUT", hsm_path(sub, new_name()), hsm_body(deployment)),
            ("POST", f"/subscriptions/{sub}/providers/Microsoft.KeyVault/"
                     "checkMhsmNameAvailability", {"name": name})):
        r = call(rest, theirs, method, path, json=body)
        assert r.status_code == 403, (method, r.text)
        assert error_code(r) == "AuthorizationFailed"
    r = call(rest, theirs, "GET",
             f"/subscriptions/{sub}/providers/Microsoft.KeyVault/managedHSMs")
    assert r.status_code == 200 and r.json() == {"value": []}
    assert call(rest, mgmt_token, "GET", hsm_path(sub, name)).json() == before
