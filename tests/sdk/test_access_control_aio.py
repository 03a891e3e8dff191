"""Role management through the async SDK (`azure.keyvault.administration.aio`): a
representative subset of test_access_control.py, one coroutine per test with
`asyncio.run`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity.aio import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.administration import KeyVaultPermission, KeyVaultRoleScope
from azure.keyvault.administration.aio import KeyVaultAccessControlClient
from azure.keyvault.secrets.aio import SecretClient

from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")

V = "Microsoft.KeyVault/vaults"
DEFINITION_ID = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"  # Azure's Key Vault Secrets User
CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"  # Azure's Key Vault Crypto Officer

Body = Callable[[KeyVaultAccessControlClient], Awaitable[None]]


def run(server: DevServer, body: Body) -> None:
    async def main() -> None:
        async with ManagedIdentityCredential() as credential, KeyVaultAccessControlClient(
            server.url, credential, verify_challenge_resource=False
        ) as client:
            await body(client)

    asyncio.run(main())


def new_principal(server: DevServer) -> dict[str, str]:
    done = server.okv("principal", "create", f"rbac-aio-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_aio_definitions_and_assignments(server: DevServer) -> None:
    p = new_principal(server)

    async def body(client: KeyVaultAccessControlClient) -> None:
        defs = {d.name: d async for d in client.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
        assert defs[CRYPTO_OFFICER].role_name == "Key Vault Crypto Officer"
        assert set(defs[CRYPTO_OFFICER].permissions[0].data_actions) == {
            f"{V}/keys/*", f"{V}/keyrotationpolicies/*"}

        names = {}
        for scope in ("/", "/keys"):
            a = await client.create_role_assignment(scope, CRYPTO_OFFICER, p["object_id"])
            assert a.properties.scope == scope
            assert a.properties.role_definition_id == DEFINITION_ID + CRYPTO_OFFICER
            assert (await client.get_role_assignment(scope, a.name)).name == a.name
            names[scope] = a.name
        listed = {a.name async for a in client.list_role_assignments(KeyVaultRoleScope.KEYS)
                  if a.properties.principal_id == p["object_id"]}
        assert listed == set(names.values())
        for scope, name in names.items():
            await client.delete_role_assignment(scope, name)
            with pytest.raises(ResourceNotFoundError):
                await client.get_role_assignment(scope, name)

    run(server, body)


def test_aio_custom_role_grants_and_revokes(server: DevServer) -> None:
    p = new_principal(server)
    secret = f"rbac-aio-{uuid.uuid4().hex[:6]}"

    async def body(client: KeyVaultAccessControlClient) -> None:
        async with ManagedIdentityCredential() as admin_cred, \
                ClientSecretCredential(p["tenant_id"], p["client_id"], p["client_secret"],
                                       authority=f"https://localhost:{server.port}",
                                       disable_instance_discovery=True) as cred, \
                SecretClient(server.url, admin_cred, verify_challenge_resource=False) as admin, \
                SecretClient(server.url, cred, verify_challenge_resource=False) as secrets:
            await admin.set_secret(secret, "aio-value")
            role = await client.set_role_definition(
                "/", role_name=f"aio reader {uuid.uuid4().hex[:6]}",
                permissions=[KeyVaultPermission(data_actions=[f"{V}/secrets/getSecret/action"])])
            assert role.role_type == "CustomRole"
            assert (await client.get_role_definition("/", role.name)).id == role.id
            a = await client.create_role_assignment(f"/secrets/{secret}", role.id,
                                                    p["object_id"])
            assert (await secrets.get_secret(secret)).value == "aio-value"
            await client.delete_role_assignment(f"/secrets/{secret}", a.name)
            with pytest.raises(HttpResponseError) as e:
                await secrets.get_secret(secret)
            assert e.value.status_code == 403
            await client.delete_role_definition("/", role.name)
            with pytest.raises(ResourceNotFoundError):
                await client.get_role_definition("/", role.name)

    run(server, body)
