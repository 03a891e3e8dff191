"""Control-plane authorization through the management API (azure-mgmt-keyvault's
KeyVaultManagementClient pointed at the server): Azure's control-plane roles at ARM scopes
decide who manages vaults; managing a vault grants no access to its data, and data roles
grant no vault management. Every refusal is a 403 AuthorizationFailed that changes
nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    AccessPolicyUpdateKind,
    Permissions,
    Sku,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
    VaultCheckNameAvailabilityParameters,
    VaultCreateOrUpdateParameters,
    VaultPatchParameters,
    VaultProperties,
)

from openkeyvault.deployment import Deployment
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env", "resolve_localhost")

SCOPES = ["https://management.azure.com/.default"]
LOCATION = "westeurope"


def unique(prefix: str = "a") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def mgmt(server: DevServer, subscription: str,
         credential: Any = None) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(credential or ManagedIdentityCredential(), subscription,
                                    base_url=server.url, credential_scopes=SCOPES,
                                    polling_interval=0)


def principal(server: DevServer, deployment: Deployment, role: str, scope: str
              ) -> tuple[str, ClientSecretCredential]:
    record, secret = deployment.directory.create(unique("ctl-"))
    deployment.rbac.assign(record.object_id, role, scope)
    return record.object_id, ClientSecretCredential(
        record.tenant_id, record.client_id, secret.client_secret,
        authority=f"https://localhost:{server.port}", disable_instance_discovery=True)


def body(deployment: Deployment, **tags: str) -> VaultCreateOrUpdateParameters:
    return VaultCreateOrUpdateParameters(
        location=LOCATION, tags=tags or None,
        properties=VaultProperties(tenant_id=deployment.tenant_id,
                                   sku=Sku(family="A", name="standard")))


def create(client: KeyVaultManagementClient, deployment: Deployment, group: str, name: str,
           **tags: str) -> Any:
    return client.vaults.begin_create_or_update(group, name, body(deployment, **tags)).result()


def forbidden(call: Callable[[], Any], code: str = "AuthorizationFailed") -> None:
    with pytest.raises(HttpResponseError) as e:
        call()
    assert e.value.status_code == 403, e.value
    assert e.value.error is not None and e.value.error.code == code, e.value


def available(dev: KeyVaultManagementClient, name: str) -> bool:
    result = dev.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(name=name))
    return bool(result.name_available)


def test_key_vault_contributor_manages_vaults_but_reads_no_secret(
        server: DevServer, deployment: Deployment) -> None:
    sub = str(uuid.uuid4())
    _, cred = principal(server, deployment, "Key Vault Contributor", f"/subscriptions/{sub}")
    client = mgmt(server, sub, cred)
    dev = mgmt(server, sub)
    name = unique()
    vault = create(client, deployment, "rg1", name)
    assert client.vaults.get("rg1", name).id == vault.id
    assert client.vaults.update("rg1", name, VaultPatchParameters(tags={"by": "kvc"})).tags \
        == {"by": "kvc"}
    assert name in {v.name for v in client.vaults.list_by_subscription()}
    assert available(client, unique())  # checkNameAvailability is allowed

    # no data access: the dev identity's secret stays unreadable, nothing can be written
    uri = vault.properties.vault_uri
    SecretClient(uri, ManagedIdentityCredential()).set_secret("s1", "hidden")
    theirs = SecretClient(uri, cred)
    forbidden(lambda: theirs.get_secret("s1"), "Forbidden")
    forbidden(lambda: theirs.set_secret("s2", "x"), "Forbidden")
    assert SecretClient(uri, ManagedIdentityCredential()).get_secret("s1").value == "hidden"

    # nothing outside the subscription
    elsewhere = unique()
    forbidden(lambda: create(mgmt(server, str(uuid.uuid4()), cred), deployment, "rg1",
                             elsewhere))
    assert available(dev, elsewhere)

    # delete, but purge is a notAction of Key Vault Contributor
    client.vaults.delete("rg1", name)
    forbidden(lambda: client.vaults.begin_purge_deleted(name, LOCATION).result())
    assert dev.vaults.get_deleted(name, LOCATION).name == name
    dev.vaults.begin_purge_deleted(name, LOCATION).result()
    assert available(dev, name)


def test_secrets_user_cannot_manage_vaults(server: DevServer, deployment: Deployment) -> None:
    sub = str(uuid.uuid4())
    _, cred = principal(server, deployment, "Key Vault Secrets User", "/")
    client = mgmt(server, sub, cred)
    dev = mgmt(server, sub)
    name = unique()
    forbidden(lambda: create(client, deployment, "rg1", name))
    assert available(dev, name)

    existing = unique()
    vault = create(dev, deployment, "rg1", existing, env="dev")
    SecretClient(vault.properties.vault_uri, ManagedIdentityCredential()).set_secret("s", "v")
    # its data role works; vault management does not
    assert SecretClient(vault.properties.vault_uri, cred).get_secret("s").value == "v"
    forbidden(lambda: client.vaults.get("rg1", existing))
    forbidden(lambda: client.vaults.update("rg1", existing,
                                           VaultPatchParameters(tags={"env": "x"})))
    forbidden(lambda: client.vaults.delete("rg1", existing))
    assert existing not in {v.name for v in client.vaults.list_by_subscription()}
    assert dev.vaults.get("rg1", existing).tags == {"env": "dev"}


def test_reader_reads_but_cannot_write(server: DevServer, deployment: Deployment) -> None:
    sub = str(uuid.uuid4())
    dev = mgmt(server, sub)
    name = unique()
    vault = create(dev, deployment, "Team-R", name, env="dev")
    SecretClient(vault.properties.vault_uri, ManagedIdentityCredential()).set_secret("s", "v")
    oid, cred = principal(server, deployment, "Reader",
                          f"/subscriptions/{sub}/resourceGroups/team-r")
    client = mgmt(server, sub, cred)

    assert client.vaults.get("Team-R", name).id == vault.id
    assert name in {v.name for v in client.vaults.list_by_resource_group("Team-R")}
    forbidden(lambda: client.vaults.update("Team-R", name,
                                           VaultPatchParameters(tags={"env": "x"})))
    forbidden(lambda: client.vaults.begin_create_or_update(
        "Team-R", name, body(deployment, env="x")).result())
    forbidden(lambda: client.vaults.update_access_policy(
        "Team-R", name, AccessPolicyUpdateKind.ADD, VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=[AccessPolicyEntry(
                tenant_id=deployment.tenant_id, object_id=oid,
                permissions=Permissions(secrets=["get"]))]))))
    forbidden(lambda: client.vaults.delete("Team-R", name))
    other = unique()
    forbidden(lambda: create(client, deployment, "Team-R", other))
    forbidden(lambda: SecretClient(vault.properties.vault_uri, cred).get_secret("s"),
              "Forbidden")
    after = dev.vaults.get("Team-R", name)
    assert after.tags == {"env": "dev"} and after.properties.access_policies == []
    assert available(dev, other)


def test_owner_of_one_vault_has_that_vault_only(server: DevServer,
                                                deployment: Deployment) -> None:
    sub = str(uuid.uuid4())
    dev = mgmt(server, sub)
    mine, theirs = unique(), unique()
    vault = create(dev, deployment, "rg1", mine)
    create(dev, deployment, "rg1", theirs, env="dev")
    _, cred = principal(server, deployment, "Owner",
                        f"/subscriptions/{sub}/resourceGroups/rg1/providers/"
                        f"Microsoft.KeyVault/vaults/{mine}")
    client = mgmt(server, sub, cred)

    assert client.vaults.update("rg1", mine, VaultPatchParameters(tags={"o": "1"})).tags == \
        {"o": "1"}
    assert {v.name for v in client.vaults.list_by_resource_group("rg1")} == {mine}
    forbidden(lambda: client.vaults.get("rg1", theirs))
    forbidden(lambda: client.vaults.delete("rg1", theirs))
    forbidden(lambda: create(client, deployment, "rg1", unique()))
    # Owner has no data actions
    forbidden(lambda: SecretClient(vault.properties.vault_uri, cred).set_secret("s", "v"),
              "Forbidden")

    client.vaults.delete("rg1", mine)
    assert client.vaults.get_deleted(mine, LOCATION).name == mine
    client.vaults.begin_purge_deleted(mine, LOCATION).result()
    assert available(dev, mine)
    assert dev.vaults.get("rg1", theirs).tags == {"env": "dev"}
