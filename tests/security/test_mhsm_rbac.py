"""A managed HSM pool's local RBAC through the official SDK (azure-keyvault-administration's
KeyVaultAccessControlClient, challenge-resource verification on) at the pool's own host
`NAME.managedhsm.localhost:PORT` on the real dev server.

The pool is made through the management API (azure-mgmt-keyvault) with the test principal
as its initial administrator. Checked: the challenge names the Managed HSM resource and the
pool accepts only its tokens; the built-in Managed HSM roles (written out from Azure's
table, not read from the implementation); assignments at `/`, `/keys` and one key; a custom
role that stays the pool's own; and the refusals (no role, a deployment-wide role, an
unknown role, a wrong audience, a path the pool does not serve), each changing nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.administration import (
    KeyVaultAccessControlClient,
    KeyVaultDataAction,
    KeyVaultPermission,
    KeyVaultRoleScope,
)
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import ManagedHsm, ManagedHsmProperties, ManagedHsmSku

from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, tenant_of
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env", "resolve_localhost")

H = "Microsoft.KeyVault/managedHsm"
DEFINITION_ID = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
RA = tuple(f"{H}/roleAssignments/{v}/action" for v in ("delete", "read", "write"))
RD = tuple(f"{H}/roleDefinitions/{v}/action" for v in ("read", "write", "delete"))
# Azure's Managed HSM built-in roles (azure-behavior.md §3.2, the service's own answer):
# GUID → (role name, dataActions).
AZURE_HSM_ROLES: dict[str, tuple[str, set[str]]] = {
    "a290e904-7015-4bba-90c8-60543313cdb4": ("Managed HSM Administrator", {
        *RA, *RD, f"{H}/securitydomain/download/action", f"{H}/securitydomain/download/read",
        f"{H}/securitydomain/upload/action", f"{H}/securitydomain/upload/read",
        f"{H}/securitydomain/transferkey/read", f"{H}/backup/start/action",
        f"{H}/backup/status/action", f"{H}/restore/start/action",
        f"{H}/restore/status/action"}),
    "515eb02d-2335-4d2d-92f2-b1cbdf9c3778": ("Managed HSM Crypto Officer", {
        *RA, *RD, f"{H}/keys/deletedKeys/read/action", f"{H}/keys/deletedKeys/delete",
        f"{H}/keys/deletedKeys/recover/action", f"{H}/keys/export/action"}),
    "4bd23610-cdcf-4971-bdee-bdc562cc28e4": ("Managed HSM Policy Administrator",
                                             {*RA, *RD}),
    "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3": ("Managed HSM Crypto Auditor", {
        f"{H}/roleAssignments/read/action", f"{H}/roleDefinitions/read/action",
        f"{H}/keys/read/action", f"{H}/keys/deletedKeys/read/action"}),
    "33413926-3206-4cdd-b39a-83574fe37a17": ("Managed HSM Crypto Service Encryption User", {
        f"{H}/keys/read/action", f"{H}/keys/wrap/action", f"{H}/keys/unwrap/action"}),
    "21dbd100-6940-42c2-9190-5d6cb909625c": ("Managed HSM Crypto Service Release User",
                                             {f"{H}/keys/release/action"}),
    "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8": ("Managed HSM Backup User", {
        f"{H}/backup/start/action", f"{H}/backup/status/action", f"{H}/keys/backup/action"}),
}
ADMINISTRATOR = "a290e904-7015-4bba-90c8-60543313cdb4"
CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
AUDITOR = "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3"
KEY_VAULT_READER = "21090545-7ca7-4776-b22c-e363652d74d2"
SUBSCRIPTION = str(uuid.uuid4())


# ---- set-up -------------------------------------------------------------------------
def new_principal(server: DevServer) -> tuple[str, ClientSecretCredential]:
    done = server.okv("principal", "create", f"mhsm-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    return p["object_id"], ClientSecretCredential(
        p["tenant_id"], p["client_id"], p["client_secret"],
        authority=f"https://localhost:{server.port}", disable_instance_discovery=True)


def management(server: DevServer) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(
        ManagedIdentityCredential(), SUBSCRIPTION, base_url=server.url,
        credential_scopes=["https://management.azure.com/.default"], polling_interval=0)


def make_pool(server: DevServer, deployment: Deployment, admin: str,
              name: str | None = None) -> str:
    """A pool made through the management API; its data-plane URL."""
    name = name or f"p{uuid.uuid4().hex[:12]}"
    pool = management(server).managed_hsms.begin_create_or_update("rg1", name, ManagedHsm(
        location="westeurope", sku=ManagedHsmSku(family="B", name="Standard_B1"),
        properties=ManagedHsmProperties(tenant_id=deployment.tenant_id,
                                        initial_admin_object_ids=[admin]))).result()
    url: str = pool.properties.hsm_uri
    assert url == f"https://{name}.managedhsm.localhost:{server.port}/"
    return url


@pytest.fixture
def pool(server: DevServer, deployment: Deployment, sdk_env: dict[str, str]) -> str:
    """A new pool whose initial administrator is the test principal (the dev identity)."""
    return make_pool(server, deployment, deployment.dev_principal.object_id)


def client(url: str, credential: Any = None) -> KeyVaultAccessControlClient:
    return KeyVaultAccessControlClient(url, credential or ManagedIdentityCredential())


def refused(call: Callable[[], Any], status: int, code: str) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as e:
        call()
    assert e.value.status_code == status, e.value
    assert e.value.error is not None and e.value.error.code == code, e.value
    return e.value


def names(assignments: Any) -> set[str]:
    return {a.name for a in assignments}


def resource(server: DevServer) -> str:
    return f"https://managedhsm.localhost:{server.port}"


def raw(rest: Rest, url: str, path: str, token: str | None, method: str = "GET",
        **kw: Any) -> requests.Response:
    """HTTPS to the pool's host by name (the CA checks the certificate for it)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return rest.session.request(method, url.rstrip("/") + path, headers=headers, **kw)


# ---- the pool's host: TLS, challenge, audience ---------------------------------------
def test_challenge_names_the_managed_hsm_resource(server: DevServer, rest: Rest,
                                                  pool: str) -> None:
    r = raw(rest, pool, "/providers/Microsoft.Authorization/roleDefinitions"
            "?api-version=7.5", None)
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://localhost:{server.port}/{tenant_of(server)}", '
        f'resource="{resource(server)}"')
    # The cloud's metadata names the same suffix for az (`--hsm-name` → URL).
    meta = rest.session.get(f"{server.url}/metadata/endpoints?api-version=2022-09-01").json()
    assert meta["suffixes"]["mhsmDns"] == f"managedhsm.localhost:{server.port}"


def test_only_managed_hsm_tokens_are_accepted(server: DevServer, rest: Rest,
                                              pool: str) -> None:
    path = "/providers/Microsoft.Authorization/roleDefinitions?api-version=7.5"
    vault_token = rest.token  # audience https://vault.localhost:PORT
    r = raw(rest, pool, path, vault_token)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "Unauthorized"
    assert "audience" in r.json()["error"]["message"]
    hsm_token = rest.msi_token(resource(server))["access_token"]
    assert raw(rest, pool, path, hsm_token).status_code == 200
    # ...and a pool's token does not open a vault.
    r = rest.session.get(f"{server.vault_url()}/secrets?api-version=7.5",
                         headers={"Authorization": f"Bearer {hsm_token}"})
    assert r.status_code == 401, r.text
    # The SDK asks for the pool's resource itself; with a credential that can only give a
    # vault token it fails with 401, not with data.
    class VaultOnly:
        def get_token(self, *scopes: str, **kw: Any) -> Any:
            from azure.core.credentials import AccessToken
            return AccessToken(vault_token, 2**31)

    with pytest.raises(ClientAuthenticationError):
        list(client(pool, VaultOnly()).list_role_definitions(KeyVaultRoleScope.GLOBAL))


# ---- role definitions ---------------------------------------------------------------
def test_built_in_definitions_are_azures(pool: str) -> None:
    c = client(pool)
    found = {d.name: d for d in c.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
    for guid, (role_name, data_actions) in AZURE_HSM_ROLES.items():
        d = found[guid]
        assert d.role_name == role_name
        assert d.id == DEFINITION_ID + guid
        assert d.role_type == "AKVBuiltInRole"
        assert d.assignable_scopes == ["/"]
        (permission,) = d.permissions
        assert set(permission.data_actions) == data_actions
    # A pool lists Managed HSM's roles, no vault or ARM role.
    assert all(d.role_name.startswith("Managed HSM") for d in found.values())
    at_keys = {d.name for d in c.list_role_definitions(KeyVaultRoleScope.KEYS)}
    assert set(AZURE_HSM_ROLES) <= at_keys
    assert c.get_role_definition("/", AUDITOR).role_name == "Managed HSM Crypto Auditor"
    refused(lambda: c.get_role_definition("/", KEY_VAULT_READER), 404,
            "RoleDefinitionNotFound")


# ---- role assignments ---------------------------------------------------------------
def test_assignments_at_root_keys_and_one_key(server: DevServer, deployment: Deployment,
                                              pool: str) -> None:
    c = client(pool)
    at_root = list(c.list_role_assignments(KeyVaultRoleScope.GLOBAL))
    # The initial administrator's assignment, made at creation, is the pool's only one.
    assert [(a.properties.principal_id, a.properties.role_definition_id, a.properties.scope)
            for a in at_root] == [(deployment.dev_principal.object_id,
                                   DEFINITION_ID + ADMINISTRATOR, "/")]

    oid, credential = new_principal(server)
    user = client(pool, credential)
    # Nothing until assigned: the new principal cannot even read.
    refused(lambda: list(user.list_role_assignments("/")), 403, "Forbidden")

    root = c.create_role_assignment("/", DEFINITION_ID + AUDITOR, oid)
    assert root.properties.scope == "/" and root.properties.principal_id == oid
    assert root.role_assignment_id == \
        f"/providers/Microsoft.Authorization/roleAssignments/{root.name}"
    keys = c.create_role_assignment(KeyVaultRoleScope.KEYS, DEFINITION_ID + CRYPTO_USER, oid)
    assert keys.properties.scope == "/keys"
    one = c.create_role_assignment("/keys/k1", CRYPTO_USER, oid)
    assert one.properties.scope == "/keys/k1"

    assert names(c.list_role_assignments("/")) >= {root.name, keys.name, one.name}
    assert names(c.list_role_assignments(KeyVaultRoleScope.KEYS)) >= {root.name, keys.name,
                                                                      one.name}
    got = c.get_role_assignment(KeyVaultRoleScope.KEYS, keys.name)
    assert got.properties.role_definition_id == DEFINITION_ID + CRYPTO_USER
    # The auditor's read applies from the next request.
    assert names(user.list_role_assignments("/")) >= {root.name, keys.name}
    # ...but not writing.
    refused(lambda: user.create_role_assignment("/", DEFINITION_ID + AUDITOR, oid), 403,
            "Forbidden")

    c.delete_role_assignment(KeyVaultRoleScope.KEYS, keys.name)
    refused(lambda: c.get_role_assignment(KeyVaultRoleScope.KEYS, keys.name), 404,
            "RoleAssignmentNotFound")
    # At `/` (what az sends for `delete --name` without `--scope`) the name finds the
    # assignment wherever it is in the pool: it is deleted, not silently left.
    c.delete_role_assignment("/", one.name)
    assert one.name not in names(c.list_role_assignments("/"))
    c.delete_role_assignment("/", root.name)
    refused(lambda: list(user.list_role_assignments("/")), 403, "Forbidden")


def test_custom_role_belongs_to_its_pool(server: DevServer, deployment: Deployment,
                                         pool: str) -> None:
    c = client(pool)
    role_name = f"Key reader {uuid.uuid4().hex[:6]}"
    made = c.set_role_definition(KeyVaultRoleScope.GLOBAL, role_name=role_name,
                                 description="Reads keys.", permissions=[KeyVaultPermission(
                                     data_actions=[KeyVaultDataAction.READ_HSM_KEY])])
    assert made.role_type == "CustomRole" and made.assignable_scopes == ["/"]
    assert made.id == DEFINITION_ID + made.name
    listed = {d.name: d for d in c.list_role_definitions("/")}
    assert listed[made.name].role_name == role_name
    # Updated under the same name.
    updated = c.set_role_definition("/", name=made.name, role_name=role_name,
                                    permissions=[KeyVaultPermission(data_actions=[
                                        KeyVaultDataAction.READ_HSM_KEY,
                                        KeyVaultDataAction.WRAP_HSM_KEY])])
    assert set(updated.permissions[0].data_actions) == {f"{H}/keys/read/action",
                                                        f"{H}/keys/wrap/action"}

    # Another pool and the vaults do not see it.
    other = make_pool(server, deployment, deployment.dev_principal.object_id)
    assert made.name not in {d.name for d in client(other).list_role_definitions("/")}
    refused(lambda: client(other).delete_role_definition("/", made.name) or
            client(other).get_role_definition("/", made.name), 404, "RoleDefinitionNotFound")
    vault = KeyVaultAccessControlClient(server.vault_url(), ManagedIdentityCredential(),
                                        verify_challenge_resource=False)
    assert made.name not in {d.name for d in vault.list_role_definitions("/")}
    oid, _ = new_principal(server)
    refused(lambda: client(other).create_role_assignment("/", made.id, oid), 400,
            "BadParameter")

    # Assigned, it cannot be deleted; unassigned, it can.
    a = c.create_role_assignment("/keys", made.id, oid)
    refused(lambda: c.delete_role_definition("/", made.name), 400, "BadParameter")
    assert c.get_role_definition("/", made.name).role_name == role_name
    c.delete_role_assignment("/keys", a.name)
    c.delete_role_definition("/", made.name)
    refused(lambda: c.get_role_definition("/", made.name), 404, "RoleDefinitionNotFound")

    # A pool's role names the pool's data actions only, at the pool's scopes.
    refused(lambda: c.set_role_definition("/", role_name="vault reader", permissions=[
        KeyVaultPermission(data_actions=["Microsoft.KeyVault/vaults/secrets/getSecret/action"])]),
        400, "BadParameter")
    refused(lambda: c.set_role_definition(KeyVaultRoleScope.KEYS, role_name="at keys"),
            400, "BadParameter")
    assert role_name not in {d.role_name for d in c.list_role_definitions("/")}


def test_a_new_pool_inherits_nothing_from_a_purged_one(server: DevServer,
                                                       deployment: Deployment) -> None:
    """A name taken again after a purge starts with its new administrators' role only."""
    name = f"p{uuid.uuid4().hex[:12]}"
    url = make_pool(server, deployment, deployment.dev_principal.object_id, name)
    c = client(url)
    oid, credential = new_principal(server)
    role = c.set_role_definition("/", role_name=f"left {name}", permissions=[
        KeyVaultPermission(data_actions=[KeyVaultDataAction.GET_ROLE_ASSIGNMENT])])
    c.create_role_assignment("/", role.id, oid)
    c.create_role_assignment("/keys", DEFINITION_ID + AUDITOR, oid)
    assert len(list(client(url, credential).list_role_assignments("/"))) == 3
    mgmt = management(server)
    mgmt.managed_hsms.begin_delete("rg1", name).result()
    mgmt.managed_hsms.begin_purge_deleted(name, "westeurope").result()

    admin_oid, admin_credential = new_principal(server)
    assert make_pool(server, deployment, admin_oid, name) == url
    refused(lambda: list(client(url, credential).list_role_assignments("/")), 403,
            "Forbidden")
    refused(lambda: list(client(url).list_role_assignments("/")), 403, "Forbidden")
    fresh = client(url, admin_credential)
    assert [a.properties.principal_id for a in fresh.list_role_assignments("/")] == \
        [admin_oid]
    assert role.name not in {d.name for d in fresh.list_role_definitions("/")}


# ---- refusals -----------------------------------------------------------------------
def test_no_role_means_no_access(server: DevServer, deployment: Deployment,
                                 pool: str) -> None:
    oid, credential = new_principal(server)
    before = names(client(pool).list_role_assignments("/"))
    stranger = client(pool, credential)
    e = refused(lambda: stranger.create_role_assignment("/", DEFINITION_ID + ADMINISTRATOR,
                                                        oid), 403, "Forbidden")
    assert "Caller is not authorized to perform action on resource" in e.message
    assert f"Action: '{H}/roleAssignments/write/action'" in e.message
    refused(lambda: list(stranger.list_role_definitions("/")), 403, "Forbidden")
    refused(lambda: stranger.set_role_definition("/", role_name="mine"), 403, "Forbidden")
    assert names(client(pool).list_role_assignments("/")) == before

    # The dev identity holds Key Vault Administrator and Owner at the deployment: neither
    # reaches a pool whose administrators are others.
    admin_oid, admin_credential = new_principal(server)
    theirs = make_pool(server, deployment, admin_oid)
    refused(lambda: list(client(theirs).list_role_assignments("/")), 403, "Forbidden")
    refused(lambda: client(theirs).create_role_assignment(
        "/", DEFINITION_ID + ADMINISTRATOR, deployment.dev_principal.object_id), 403,
        "Forbidden")
    assert [a.properties.principal_id for a in
            client(theirs, admin_credential).list_role_assignments("/")] == [admin_oid]

    # Managed HSM Administrator at the deployment `/` or at the pool's subscription (given
    # by the operator) does not reach a pool either: only the pool's own assignments do.
    wide_oid, wide_credential = new_principal(server)
    for scope in ("/", f"/subscriptions/{SUBSCRIPTION}"):
        done = server.okv("role", "assign", "--principal", wide_oid, "--role",
                          "Managed HSM Administrator", "--scope", scope)
        assert done.returncode == 0, done.stderr
    wide = client(theirs, wide_credential)
    refused(lambda: list(wide.list_role_assignments("/")), 403, "Forbidden")
    refused(lambda: wide.create_role_assignment("/", DEFINITION_ID + ADMINISTRATOR,
                                                wide_oid), 403, "Forbidden")
    assert wide_oid not in {a.properties.principal_id for a in
                            client(theirs, admin_credential).list_role_assignments("/")}


def test_unknown_role_scope_or_name(server: DevServer, pool: str) -> None:
    c = client(pool)
    oid, _ = new_principal(server)
    before = names(c.list_role_assignments("/"))
    refused(lambda: c.create_role_assignment("/", DEFINITION_ID + str(uuid.uuid4()), oid),
            400, "BadParameter")
    # A vault's role is no pool's role.
    refused(lambda: c.create_role_assignment("/", DEFINITION_ID + KEY_VAULT_READER, oid),
            400, "BadParameter")
    refused(lambda: c.create_role_assignment("/secrets", DEFINITION_ID + AUDITOR, oid),
            404, "NotFound")
    refused(lambda: c.get_role_definition("/", str(uuid.uuid4())), 404,
            "RoleDefinitionNotFound")
    refused(lambda: c.get_role_assignment("/", str(uuid.uuid4())), 404,
            "RoleAssignmentNotFound")
    assert names(c.list_role_assignments("/")) == before


def test_other_paths_are_not_served(server: DevServer, rest: Rest, pool: str) -> None:
    token = rest.msi_token(resource(server))["access_token"]
    for method, path in (("GET", "/secrets"), ("POST", "/securitydomain/transferkey"),
                         ("POST", "/backup"), ("GET", "/restore/job/pending")):
        r = raw(rest, pool, f"{path}?api-version=7.5", token, method,
                json={"kty": "RSA-HSM"} if method == "POST" else None)
        assert r.status_code == 404, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "NotFound"
        assert "serves role management (role assignments" in error["message"]
        assert "keys, settings and the security domain (download, exchange key and " \
            "upload) only" in error["message"]
    # Settings are served (tests/security/test_mhsm_settings.py).
    r = raw(rest, pool, "/settings?api-version=7.5", token)
    assert r.status_code == 200, r.text
    assert [s["name"] for s in r.json()["settings"]] == \
        ["AllowKeyManagementOperationsThroughARM"]
    # The pool's name on a vault host, and a name no pool holds on a pool host.
    name = pool.split("//")[1].split(".")[0]
    r = rest.session.get(f"https://{name}.vault.localhost:{server.port}/secrets?"
                         "api-version=7.5", headers={"Authorization": f"Bearer {rest.token}"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "VaultNotFound")
    r = raw(rest, f"https://nopool{uuid.uuid4().hex[:8]}.managedhsm.localhost:{server.port}",
            "/providers/Microsoft.Authorization/roleDefinitions?api-version=7.5", token)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "VaultNotFound")
    # A vault's name on a pool host.
    r = raw(rest, f"https://dev.managedhsm.localhost:{server.port}",
            "/providers/Microsoft.Authorization/roleDefinitions?api-version=7.5", token)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "VaultNotFound")
