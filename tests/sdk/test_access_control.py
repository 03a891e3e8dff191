"""Role management through the official SDK (`azure.keyvault.administration`,
KeyVaultAccessControlClient): built-in and custom role definitions, role assignments
at the vault, the keys collection and one key, and their effect on a fresh principal
from the next request on.

The expected built-in roles are written out from Azure's published table, not read
from the implementation.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.administration import (
    KeyVaultAccessControlClient,
    KeyVaultPermission,
    KeyVaultRoleScope,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")

V = "Microsoft.KeyVault/vaults"
DEFINITION_ID = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"

# Azure's built-in Key Vault roles (role-based-access-control/built-in-roles/security.md):
# GUID → (role name, dataActions).
AZURE_ROLES: dict[str, tuple[str, set[str]]] = {
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": ("Key Vault Administrator", {f"{V}/*"}),
    "4633458b-17de-408a-b874-0445c86b69e6": (
        "Key Vault Secrets User",
        {f"{V}/secrets/getSecret/action", f"{V}/secrets/readMetadata/action"}),
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": ("Key Vault Secrets Officer", {f"{V}/secrets/*"}),
    "21090545-7ca7-4776-b22c-e363652d74d2": (
        "Key Vault Reader", {f"{V}/*/read", f"{V}/secrets/readMetadata/action"}),
    "14b46e9e-c2b7-41b4-b07b-48a6ebf60603": (
        "Key Vault Crypto Officer", {f"{V}/keys/*", f"{V}/keyrotationpolicies/*"}),
    "12338af0-0e69-4776-bea7-57ae8d297424": (
        "Key Vault Crypto User",
        {f"{V}/keys/{a}" for a in ("read", "update/action", "backup/action", "encrypt/action",
                                    "decrypt/action", "wrap/action", "unwrap/action",
                                    "sign/action", "verify/action")}),
    "e147488a-f6f5-4113-8e2d-b22465e65bf6": (
        "Key Vault Crypto Service Encryption User",
        {f"{V}/keys/read", f"{V}/keys/wrap/action", f"{V}/keys/unwrap/action"}),
    "08bbd89e-9f13-488c-ac41-acfcb10c90ab": (
        "Key Vault Crypto Service Release User", {f"{V}/keys/release/action"}),
    "a4417e6f-fecd-4de8-b567-7b0420556985": (
        "Key Vault Certificates Officer",
        {f"{V}/certificatecas/*", f"{V}/certificates/*", f"{V}/certificatecontacts/write"}),
    "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba": (
        "Key Vault Certificate User",
        {f"{V}/certificates/read", f"{V}/secrets/getSecret/action",
         f"{V}/secrets/readMetadata/action", f"{V}/keys/read"}),
    "8b54135c-b56d-4d72-a534-26097cfdc8d8": ("Key Vault Data Access Administrator", set()),
}
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
READER = "21090545-7ca7-4776-b22c-e363652d74d2"
CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"


def admin_client(server: DevServer) -> KeyVaultAccessControlClient:
    return KeyVaultAccessControlClient(server.url, ManagedIdentityCredential(),
                                       verify_challenge_resource=False)


def new_principal(server: DevServer) -> tuple[dict[str, str], ClientSecretCredential]:
    done = server.okv("principal", "create", f"rbac-sdk-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    return p, ClientSecretCredential(p["tenant_id"], p["client_id"], p["client_secret"],
                                     authority=f"https://localhost:{server.port}",
                                     disable_instance_discovery=True)


def forbidden(call: Callable[[], Any]) -> None:
    with pytest.raises(HttpResponseError) as e:
        call()
    assert e.value.status_code == 403, e.value
    assert "ForbiddenByRbac" in str(e.value)


def test_built_in_definitions_match_azure(server: DevServer) -> None:
    client = admin_client(server)
    found = {d.name: d for d in client.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
    for guid, (role_name, data_actions) in AZURE_ROLES.items():
        d = found[guid]
        assert d.role_name == role_name
        assert d.id == DEFINITION_ID + guid
        assert d.role_type == "AKVBuiltInRole"
        assert d.type == "Microsoft.Authorization/roleDefinitions"
        assert d.assignable_scopes == ["/"]
        (permission,) = d.permissions
        assert set(permission.data_actions) == data_actions
        assert permission.not_data_actions == []
    data_access = found["8b54135c-b56d-4d72-a534-26097cfdc8d8"].permissions[0].actions
    assert {"Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "Microsoft.Authorization/*/read"} <= set(data_access)
    # a vault lists the vault roles, not Managed HSM's
    assert not any(d.role_name.startswith("Managed HSM") for d in found.values())

    one = client.get_role_definition("/", SECRETS_USER)
    assert one.role_name == "Key Vault Secrets User"
    assert client.get_role_definition(KeyVaultRoleScope.KEYS, SECRETS_USER).name == SECRETS_USER


def test_assignments_at_vault_keys_and_key_scope(server: DevServer) -> None:
    client = admin_client(server)
    p, _ = new_principal(server)
    key_scope = f"/keys/rbac-sdk-{uuid.uuid4().hex[:6]}"
    made = {}
    for scope, role in ((KeyVaultRoleScope.GLOBAL.value, READER),
                        (KeyVaultRoleScope.KEYS.value, CRYPTO_USER), (key_scope, SECRETS_USER)):
        a = client.create_role_assignment(scope, DEFINITION_ID + role, p["object_id"])
        assert a.properties.scope == scope
        assert a.properties.role_definition_id == DEFINITION_ID + role
        assert a.properties.principal_id == p["object_id"]
        assert a.type == "Microsoft.Authorization/roleAssignments"
        prefix = "" if scope == "/" else scope
        assert a.role_assignment_id == (
            f"{prefix}/providers/Microsoft.Authorization/roleAssignments/{a.name}")
        got = client.get_role_assignment(scope, a.name)
        assert (got.name, got.properties.scope) == (a.name, scope)
        made[scope] = a.name

    def mine(scope: str) -> dict[str, str]:
        return {a.name: a.properties.scope for a in client.list_role_assignments(scope)
                if a.properties.principal_id == p["object_id"]}

    # A list shows the assignments at, above and below its scope, not beside it.
    assert mine("/") == {made["/"]: "/", made["/keys"]: "/keys", made[key_scope]: key_scope}
    assert mine("/keys") == {made["/"]: "/", made["/keys"]: "/keys", made[key_scope]: key_scope}
    assert mine(key_scope) == {made["/"]: "/", made["/keys"]: "/keys",
                               made[key_scope]: key_scope}
    assert mine("/secrets") == {made["/"]: "/"}

    # The name is the GUID the caller chose; the same PUT again answers the same assignment.
    chosen = str(uuid.uuid4())
    first = client.create_role_assignment("/secrets", SECRETS_USER, p["object_id"], name=chosen)
    again = client.create_role_assignment("/secrets", SECRETS_USER, p["object_id"], name=chosen)
    assert first.name == again.name == chosen
    made["/secrets"] = chosen

    for scope, name in made.items():
        client.delete_role_assignment(scope, name)
        with pytest.raises(ResourceNotFoundError):
            client.get_role_assignment(scope, name)
    assert mine("/") == {}


def test_an_assignment_grants_exactly_its_role_until_it_is_deleted(server: DevServer) -> None:
    client = admin_client(server)
    admin_secrets = SecretClient(server.url, ManagedIdentityCredential(),
                                 verify_challenge_resource=False)
    admin_keys = KeyClient(server.url, ManagedIdentityCredential(),
                           verify_challenge_resource=False)
    a_name, b_name = f"rbac-e2e-a-{uuid.uuid4().hex[:6]}", f"rbac-e2e-b-{uuid.uuid4().hex[:6]}"
    admin_secrets.set_secret(a_name, "value-a")
    admin_secrets.set_secret(b_name, "value-b")
    key = admin_keys.create_ec_key(f"rbac-e2e-k-{uuid.uuid4().hex[:6]}", curve="P-256")

    p, cred = new_principal(server)
    secrets = SecretClient(server.url, cred, verify_challenge_resource=False)
    keys = KeyClient(server.url, cred, verify_challenge_resource=False)
    crypto = CryptographyClient(key.id, cred, verify_challenge_resource=False)
    digest = hashlib.sha256(b"e2e").digest()
    forbidden(lambda: secrets.get_secret(a_name))

    one = client.create_role_assignment(f"/secrets/{a_name}", SECRETS_USER, p["object_id"])
    assert secrets.get_secret(a_name).value == "value-a"
    forbidden(lambda: secrets.get_secret(b_name))  # another secret
    forbidden(lambda: secrets.set_secret(a_name, "changed"))  # not in the role
    forbidden(lambda: crypto.sign(SignatureAlgorithm.es256, digest))  # not a key role
    assert admin_secrets.get_secret(a_name).value == "value-a"

    on_key = client.create_role_assignment(f"/keys/{key.name}", CRYPTO_USER, p["object_id"])
    signed = crypto.sign(SignatureAlgorithm.es256, digest)
    assert crypto.verify(SignatureAlgorithm.es256, digest, signed.signature).is_valid
    forbidden(lambda: keys.create_ec_key(f"{key.name}-new", curve="P-256"))

    client.delete_role_assignment(f"/secrets/{a_name}", one.name)
    forbidden(lambda: secrets.get_secret(a_name))  # the next request
    client.delete_role_assignment(f"/keys/{key.name}", on_key.name)
    forbidden(lambda: crypto.sign(SignatureAlgorithm.es256, digest))


def test_custom_role_definition_lifecycle_and_effect(server: DevServer) -> None:
    client = admin_client(server)
    admin_secrets = SecretClient(server.url, ManagedIdentityCredential(),
                                 verify_challenge_resource=False)
    secret = f"rbac-custom-{uuid.uuid4().hex[:6]}"
    admin_secrets.set_secret(secret, "custom-value")
    role_name = f"Secret reader {uuid.uuid4().hex[:6]}"
    read_and_list = [f"{V}/secrets/getSecret/action", f"{V}/secrets/readMetadata/action"]
    definition = client.set_role_definition(
        KeyVaultRoleScope.GLOBAL, role_name=role_name, description="reads secrets",
        permissions=[KeyVaultPermission(data_actions=read_and_list)])
    guid = definition.name
    uuid.UUID(guid)
    assert definition.id == DEFINITION_ID + guid
    assert definition.role_type == "CustomRole"
    assert definition.role_name == role_name
    assert definition.description == "reads secrets"
    assert definition.permissions[0].data_actions == read_and_list
    assert definition.assignable_scopes == ["/"]
    got = client.get_role_definition("/", guid)
    assert (got.role_name, got.permissions[0].data_actions) == (role_name, read_and_list)
    listed = [d for d in client.list_role_definitions("/") if d.name == guid]
    assert [d.role_name for d in listed] == [role_name]

    p, cred = new_principal(server)
    secrets = SecretClient(server.url, cred, verify_challenge_resource=False)
    assignment = client.create_role_assignment("/secrets", definition.id, p["object_id"])
    assert secrets.get_secret(secret).value == "custom-value"

    # Updating the role's actions takes effect on the next request.
    updated = client.set_role_definition(
        "/", name=guid, role_name=role_name,
        permissions=[KeyVaultPermission(data_actions=[f"{V}/secrets/readMetadata/action"])])
    assert updated.name == guid
    assert updated.permissions[0].data_actions == [f"{V}/secrets/readMetadata/action"]
    forbidden(lambda: secrets.get_secret(secret))
    assert secret in {s.name for s in secrets.list_properties_of_secrets()}

    client.delete_role_assignment("/secrets", assignment.name)
    client.delete_role_definition("/", guid)
    with pytest.raises(ResourceNotFoundError):
        client.get_role_definition("/", guid)
    assert guid not in {d.name for d in client.list_role_definitions("/")}
    forbidden(lambda: list(secrets.list_properties_of_secrets()))
