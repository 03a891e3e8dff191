"""ARM's basics on the management endpoint: subscriptions, tenants, resource groups, generic
resource listings, the provider's operations and the cloud's metadata, as the Azure CLI and
azure-mgmt-keyvault call them. Every refusal: status, ARM code, nothing changed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import Sku, VaultCreateOrUpdateParameters, VaultProperties

from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest
from tests.support.server import DevServer

MANAGEMENT = "https://management.azure.com"
SUBS = "api-version=2022-12-01"
RES = "api-version=2015-11-01"
RG_API = "api-version=2021-04-01"
KV_TYPE = "Microsoft.KeyVault/vaults"


@pytest.fixture(scope="module")
def token(rest: Rest) -> str:
    return str(rest.msi_token(MANAGEMENT)["access_token"])


def unique(prefix: str = "a") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def code(r: requests.Response) -> str:
    return str(r.json()["error"]["code"])


def stranger(server: DevServer, deployment: Deployment, rest: Rest,
             role: str | None = None, scope: str = "/") -> str:
    """A management token for a new principal, with `role` at `scope` if given."""
    record, secret = deployment.directory.create(unique("arm-"))
    if role is not None:
        deployment.rbac.assign(record.object_id, role, scope)
    r = rest.session.post(
        f"{server.url}/{record.tenant_id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": record.client_id,
              "client_secret": secret.client_secret, "scope": f"{MANAGEMENT}/.default"})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def vault_body(deployment: Deployment, location: str = "westeurope") -> dict[str, Any]:
    return {"location": location, "properties": {
        "tenantId": deployment.tenant_id, "sku": {"family": "A", "name": "standard"}}}


def put_vault(rest: Rest, token: str, deployment: Deployment, sub: str, rg: str,
              name: str) -> None:
    r = rest.call("PUT", f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                  f"Microsoft.KeyVault/vaults/{name}", token=token, query="api-version=2026-05-15",
                  json=vault_body(deployment))
    assert r.status_code == 201, r.text


def group(sub: str, rg: str) -> str:
    return f"/subscriptions/{sub}/resourcegroups/{rg}"


# ---- subscriptions and tenants ------------------------------------------------------------

@pytest.mark.parametrize("audience", [MANAGEMENT, "https://management.core.windows.net/"])
def test_subscriptions_list_the_deployments_subscription(rest: Rest, deployment: Deployment,
                                                         audience: str) -> None:
    tok = rest.msi_token(audience)["access_token"]
    r = rest.call("GET", "/subscriptions", token=tok, query=SUBS)
    assert r.status_code == 200, r.text
    subs = r.json()["value"]
    sub = deployment.vaults.default_subscription()
    assert [s["subscriptionId"] for s in subs] == [sub]
    assert subs[0]["id"] == f"/subscriptions/{sub}"
    assert subs[0]["tenantId"] == deployment.tenant_id
    assert subs[0]["state"] == "Enabled" and subs[0]["displayName"]
    one = rest.call("GET", f"/subscriptions/{sub}", token=tok, query="api-version=2016-06-01")
    assert one.status_code == 200 and one.json() == subs[0]


def test_tenants_list_the_deployments_tenant(rest: Rest, token: str,
                                             deployment: Deployment) -> None:
    r = rest.call("GET", "/tenants", token=token, query=SUBS)
    assert r.status_code == 200, r.text
    assert [t["tenantId"] for t in r.json()["value"]] == [deployment.tenant_id]


def test_another_subscription_is_not_found(rest: Rest, token: str) -> None:
    r = rest.call("GET", f"/subscriptions/{uuid.uuid4()}", token=token, query=SUBS)
    assert r.status_code == 404 and code(r) == "SubscriptionNotFound"
    r = rest.call("GET", "/subscriptions/not-a-guid", token=token, query=SUBS)
    assert r.status_code == 404 and code(r) == "InvalidSubscriptionId"


def test_a_principal_without_roles_sees_no_subscription(rest: Rest, server: DevServer,
                                                       deployment: Deployment) -> None:
    theirs = stranger(server, deployment, rest)
    r = rest.call("GET", "/subscriptions", token=theirs, query=SUBS)
    assert r.status_code == 200 and r.json() == {"value": []}
    sub = deployment.vaults.default_subscription()
    r = rest.call("GET", f"/subscriptions/{sub}", token=theirs, query=SUBS)
    assert r.status_code == 404 and code(r) == "SubscriptionNotFound"
    reader = stranger(server, deployment, rest, "Reader", f"/subscriptions/{sub}")
    r = rest.call("GET", "/subscriptions", token=reader, query=SUBS)
    assert [s["subscriptionId"] for s in r.json()["value"]] == [sub]


@pytest.mark.parametrize("query,expected", [
    ("", "MissingApiVersionParameter"),
    ("api-version=2015-11-01", "InvalidApiVersionParameter"),
    ("api-version=2026-05-15", "InvalidApiVersionParameter"),
])
def test_subscriptions_check_the_api_version(rest: Rest, token: str, query: str,
                                             expected: str) -> None:
    r = rest.call("GET", "/subscriptions", token=token, query=query)
    assert r.status_code == 400 and code(r) == expected


def test_subscriptions_need_a_management_token(rest: Rest) -> None:
    r = rest.call("GET", "/subscriptions", token=None, query=SUBS)
    assert r.status_code == 401 and code(r) == "AuthenticationFailed"
    r = rest.call("GET", "/subscriptions", query=SUBS)  # the data plane's audience
    assert r.status_code == 401 and code(r) == "InvalidAuthenticationToken"


# ---- resource groups --------------------------------------------------------------------

def test_a_resource_group_round_trip(rest: Rest, token: str) -> None:
    sub, rg = str(uuid.uuid4()), unique("RG-")
    r = rest.call("HEAD", group(sub, rg), token=token, query=RG_API)
    assert r.status_code == 404
    r = rest.call("PUT", group(sub, rg), token=token, query=RG_API,
                  json={"location": "West Europe", "tags": {"env": "test"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body == {"id": f"/subscriptions/{sub}/resourceGroups/{rg}", "name": rg,
                    "type": "Microsoft.Resources/resourceGroups", "location": "westeurope",
                    "properties": {"provisioningState": "Succeeded"}, "tags": {"env": "test"}}
    r = rest.call("PUT", group(sub, rg.lower()), token=token, query=RG_API,
                  json={"location": "westeurope"})
    assert r.status_code == 200 and r.json()["name"] == rg
    assert rest.call("HEAD", group(sub, rg), token=token, query=RG_API).status_code == 204
    r = rest.call("GET", group(sub, rg.upper()), token=token, query=RG_API)
    assert r.status_code == 200 and r.json()["name"] == rg
    r = rest.call("GET", f"/subscriptions/{sub}/resourcegroups", token=token, query=RG_API)
    assert [g["name"] for g in r.json()["value"]] == [rg]
    r = rest.call("DELETE", group(sub, rg), token=token, query=RG_API)
    assert r.status_code == 200, r.text
    r = rest.call("GET", group(sub, rg), token=token, query=RG_API)
    assert r.status_code == 404 and code(r) == "ResourceGroupNotFound"
    r = rest.call("DELETE", group(sub, rg), token=token, query=RG_API)
    assert r.status_code == 404 and code(r) == "ResourceGroupNotFound"


def test_a_group_holding_vaults_exists_and_is_not_deleted(rest: Rest, token: str,
                                                         deployment: Deployment) -> None:
    sub, rg, name = str(uuid.uuid4()), unique("rg-"), unique("v")
    put_vault(rest, token, deployment, sub, rg, name)
    r = rest.call("GET", group(sub, rg), token=token, query=RG_API)
    assert r.status_code == 200, r.text
    assert r.json()["location"] == "westeurope" and r.json()["name"] == rg
    r = rest.call("DELETE", group(sub, rg), token=token, query=RG_API)
    assert r.status_code == 409 and code(r) == "ResourceGroupDeletionBlocked"
    assert name in r.json()["error"]["message"]
    assert deployment.vaults.placement_of(name) == (sub, rg)
    assert rest.call("GET", group(sub, rg), token=token, query=RG_API).status_code == 200


@pytest.mark.parametrize("body,expected", [
    ({}, "LocationRequired"),
    ({"location": 7}, "LocationRequired"),
    ({"location": "west/europe"}, "LocationRequired"),
    ({"location": "westeurope", "tags": {"a": 1}}, "InvalidTag"),
    ({"location": "westeurope", "tags": ["a"]}, "InvalidTag"),
])
def test_bad_resource_group_bodies_create_nothing(rest: Rest, token: str,
                                                  body: dict[str, Any], expected: str) -> None:
    sub, rg = str(uuid.uuid4()), unique("rg-")
    r = rest.call("PUT", group(sub, rg), token=token, query=RG_API, json=body)
    assert r.status_code == 400 and code(r) == expected, r.text
    assert rest.call("HEAD", group(sub, rg), token=token, query=RG_API).status_code == 404


def test_bad_resource_group_names_and_requests(rest: Rest, token: str) -> None:
    sub = str(uuid.uuid4())
    r = rest.call("PUT", group(sub, "bad.name."), token=token, query=RG_API,
                  json={"location": "westeurope"})
    assert r.status_code == 400 and code(r) == "InvalidResourceGroup"
    r = rest.call("PUT", group(sub, "rg1"), token=token, query=RG_API, data=b"[1]",
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and code(r) == "BadRequest"
    r = rest.call("PATCH", group(sub, "rg1"), token=token, query=RG_API, json={})
    assert r.status_code == 405 and code(r) == "MethodNotAllowed"
    r = rest.call("GET", group(sub, "rg1"), token=token, query="")
    assert r.status_code == 400 and code(r) == "MissingApiVersionParameter"
    assert rest.call("HEAD", group(sub, "rg1"), token=token, query=RG_API).status_code == 404


def test_resource_group_refusals_change_nothing(rest: Rest, token: str, server: DevServer,
                                                deployment: Deployment) -> None:
    sub, rg = str(uuid.uuid4()), unique("rg-")
    assert rest.call("PUT", group(sub, rg), token=token, query=RG_API,
                     json={"location": "westeurope"}).status_code == 201
    before = rest.call("GET", group(sub, rg), token=token, query=RG_API).json()
    nobody = stranger(server, deployment, rest)
    reader = stranger(server, deployment, rest, "Reader", f"/subscriptions/{sub}")
    for tok, method, path, body in (
            (nobody, "GET", group(sub, rg), None),
            (nobody, "PUT", group(sub, rg), {"location": "northeurope"}),
            (nobody, "DELETE", group(sub, rg), None),
            (nobody, "PUT", group(sub, unique("rg-")), {"location": "westeurope"}),
            (reader, "PUT", group(sub, rg), {"location": "northeurope"}),
            (reader, "DELETE", group(sub, rg), None)):
        r = rest.call(method, path, token=tok, query=RG_API, json=body)
        assert r.status_code == 403, (method, r.text)
        assert code(r) == "AuthorizationFailed"
    r = rest.call("GET", f"/subscriptions/{sub}/resourcegroups", token=nobody, query=RG_API)
    assert r.status_code == 200 and r.json() == {"value": []}
    assert rest.call("GET", group(sub, rg), token=reader, query=RG_API).json() == before
    r = rest.call("GET", f"/subscriptions/{sub}/resourcegroups", token=token, query=RG_API)
    assert [g["name"] for g in r.json()["value"]] == [rg]
    assert rest.call("GET", group(sub, rg), token=token, query=RG_API).json() == before


# ---- generic resources ------------------------------------------------------------------

def test_resources_filtered_as_the_cli_asks(rest: Rest, token: str,
                                            deployment: Deployment) -> None:
    sub, rg1, rg2 = str(uuid.uuid4()), unique("rg-"), unique("rg-")
    a, b = sorted([unique("v"), unique("v")])
    put_vault(rest, token, deployment, sub, rg1, a)
    put_vault(rest, token, deployment, sub, rg2, b)
    base = f"/subscriptions/{sub}/resources"
    r = rest.call("GET", base, token=token,
                  query=f"$filter=resourceType eq '{KV_TYPE}'&{RES}")
    assert r.status_code == 200, r.text
    assert [(v["name"], v["type"]) for v in r.json()["value"]] == [(a, KV_TYPE), (b, KV_TYPE)]
    assert r.json()["value"][0]["id"] == (f"/subscriptions/{sub}/resourceGroups/{rg1}/"
                                          f"providers/{KV_TYPE}/{a}")
    r = rest.call("GET", base, token=token, query=f"$filter=resourceType eq '{KV_TYPE}' and "
                  f"name eq '{b.upper()}'&api-version=2025-04-01")
    assert [v["id"].split("/")[4] for v in r.json()["value"]] == [rg2]
    r = rest.call("GET", base, token=token,
                  query=f"$filter=resourceType eq 'Microsoft.KeyVault/managedHSMs'&{RES}")
    assert r.status_code == 200 and r.json() == {"value": []}
    r = rest.call("GET", f"/subscriptions/{sub}/resourceGroups/{rg1}/resources", token=token,
                  query=RES)
    assert [v["name"] for v in r.json()["value"]] == [a]
    r = rest.call("GET", f"/subscriptions/{sub}/resourceGroups/{unique('rg-')}/resources",
                  token=token, query=RES)
    assert r.status_code == 404 and code(r) == "ResourceGroupNotFound"


def test_resources_come_in_keyset_pages(rest: Rest, token: str,
                                        deployment: Deployment) -> None:
    sub, rg = str(uuid.uuid4()), unique("rg-")
    names = sorted(unique("p") for _ in range(5))
    for name in names:
        put_vault(rest, token, deployment, sub, rg, name)
    seen, url = [], f"/subscriptions/{sub}/resources"
    query: str | None = f"$top=2&{RES}"
    while query is not None:
        r = rest.call("GET", url, token=token, query=query)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["value"]) <= 2
        seen += [v["name"] for v in page["value"]]
        link = page.get("nextLink")
        query = None if link is None else link.split("?", 1)[1]
        if link is not None:  # the next page starts after the last name shown
            assert f"skiptoken={page['value'][-1]['name']}" in link
    assert seen == names
    r = rest.call("DELETE", f"/subscriptions/{sub}/resourceGroups/{rg}", token=token,
                  query=RG_API)
    assert r.status_code == 409 and code(r) == "ResourceGroupDeletionBlocked"
    assert names[0] in r.json()["error"]["message"]


@pytest.mark.parametrize("query,status,expected", [
    ("$filter=substringof('a', name)&" + RES, 400, "InvalidFilterInQueryString"),
    ("$filter=resourceType eq 'x' or name eq 'y'&" + RES, 400, "InvalidFilterInQueryString"),
    ("$filter=name eq 'a' and name eq 'b'&" + RES, 400, "InvalidFilterInQueryString"),
    ("$top=0&" + RES, 400, "InvalidQueryParameterValue"),
    ("$filter=resourceType eq 'Microsoft.KeyVault/vaults'", 400, "MissingApiVersionParameter"),
    ("api-version=2026-05-15", 400, "InvalidApiVersionParameter"),
])
def test_unknown_filters_are_refused(rest: Rest, token: str, query: str, status: int,
                                     expected: str) -> None:
    r = rest.call("GET", f"/subscriptions/{uuid.uuid4()}/resources", token=token, query=query)
    assert r.status_code == status and code(r) == expected, r.text


def test_a_listing_shows_only_what_the_principal_may_read(rest: Rest, token: str,
                                                          server: DevServer,
                                                          deployment: Deployment) -> None:
    sub, rg = str(uuid.uuid4()), unique("rg-")
    a, b = unique("v"), unique("v")
    put_vault(rest, token, deployment, sub, rg, a)
    put_vault(rest, token, deployment, sub, rg, b)
    theirs = stranger(server, deployment, rest, "Reader", f"/vaults/{a}")
    r = rest.call("GET", f"/subscriptions/{sub}/resources", token=theirs,
                  query=f"$filter=resourceType eq '{KV_TYPE}'&{RES}")
    assert r.status_code == 200 and [v["name"] for v in r.json()["value"]] == [a]


# ---- the provider's operations, the cloud's metadata, unknown paths -----------------------

def test_the_providers_operations(rest: Rest, token: str) -> None:
    r = rest.call("GET", "/providers/Microsoft.KeyVault/operations", token=token,
                  query="api-version=2026-05-15")
    assert r.status_code == 200, r.text
    names = {o["name"]: o["isDataAction"] for o in r.json()["value"]}
    assert names["Microsoft.KeyVault/vaults/read"] is False
    assert names["Microsoft.KeyVault/vaults/secrets/getSecret/action"] is True


def test_metadata_endpoints_describe_the_deployment(rest: Rest, server: DevServer,
                                                    deployment: Deployment) -> None:
    url = f"{server.url}/metadata/endpoints"
    r = rest.session.get(url, params={"api-version": "2022-09-01"})
    assert r.status_code == 200, r.text
    cloud = r.json()
    assert cloud["resourceManager"] == f"{server.url}/"
    auth = cloud["authentication"]
    assert auth["loginEndpoint"] == f"{server.url}/" and auth["tenant"] == deployment.tenant_id
    assert "https://management.core.windows.net/" in auth["audiences"]
    assert cloud["suffixes"]["keyVaultDns"] == f"vault.localhost:{server.port}"
    assert cloud["suffixes"]["mhsmDns"] == f"managedhsm.localhost:{server.port}"
    r = rest.session.get(url, params={"api-version": "2019-05-01"})
    assert r.status_code == 200 and r.json() == [cloud]
    r = rest.session.get(url)
    assert r.status_code == 400 and code(r) == "MissingApiVersionParameter"
    r = rest.session.post(url, params={"api-version": "2022-09-01"})
    assert r.status_code == 405 and code(r) == "MethodNotAllowed"


@pytest.mark.parametrize("path", [
    "/tenants/x/y", "/providers/Microsoft.Compute/virtualMachines", "/metadata/other",
    "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines",
])
def test_unknown_management_paths_answer_arms_404(rest: Rest, token: str, path: str) -> None:
    r = rest.call("GET", path.format(sub=uuid.uuid4()), token=token, query=RES)
    assert r.status_code in (400, 404), r.text
    assert r.status_code == 404 or code(r) == "InvalidApiVersionParameter"
    r = rest.call("GET", path.format(sub=uuid.uuid4()), token=token,
                  query="api-version=2026-05-15")
    assert r.status_code == 404 and code(r) == "NotFound", r.text


# ---- azure-mgmt-keyvault ------------------------------------------------------------------

@pytest.mark.usefixtures("sdk_env", "resolve_localhost")
def test_the_sdks_vault_listings(server: DevServer, deployment: Deployment) -> None:
    sub, rg = str(uuid.uuid4()), unique("rg-")
    client = KeyVaultManagementClient(ManagedIdentityCredential(), sub, base_url=server.url,
                                      credential_scopes=[f"{MANAGEMENT}/.default"],
                                      polling_interval=0)
    names = sorted(unique("v") for _ in range(3))
    for n in names:
        client.vaults.begin_create_or_update(rg, n, VaultCreateOrUpdateParameters(
            location="westeurope", properties=VaultProperties(
                tenant_id=deployment.tenant_id, sku=Sku(family="A", name="standard")))
        ).result()
    assert sorted(str(v.name) for v in client.vaults.list()) == names
    assert sorted(str(v.name) for v in client.vaults.list(top=2)) == names  # across nextLink
    assert sorted(str(v.name) for v in client.vaults.list_by_resource_group(rg)) == names
    assert all(v.type == KV_TYPE for v in client.vaults.list())


@pytest.mark.usefixtures("sdk_env", "resolve_localhost")
def test_the_sdks_listing_for_a_principal_without_roles(server: DevServer,
                                                        deployment: Deployment) -> None:
    sub = str(uuid.uuid4())
    record, secret = deployment.directory.create(unique("arm-"))
    cred = ClientSecretCredential(record.tenant_id, record.client_id, secret.client_secret,
                                  authority=f"https://localhost:{server.port}",
                                  disable_instance_discovery=True)
    client = KeyVaultManagementClient(cred, sub, base_url=server.url,
                                      credential_scopes=[f"{MANAGEMENT}/.default"])
    assert list(client.vaults.list()) == []


def test_the_default_vaults_role_management_stays_on_the_bare_host(rest: Rest) -> None:
    r = rest.call("GET", "/providers/Microsoft.Authorization/roleDefinitions",
                  query="api-version=7.5")  # the data plane's token and version
    assert r.status_code == 200, r.text
    assert r.json()["value"]
