"""Managed HSM pools through the management API with the official SDK (azure-mgmt-keyvault's
KeyVaultManagementClient.managed_hsms): the lifecycle, the shared name space with vaults,
the initial administrators' role, and refusals (each with its status, code and nothing
changed)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    CheckMhsmNameAvailabilityParameters,
    ManagedHsm,
    ManagedHsmProperties,
    ManagedHsmSku,
    MHSMNetworkRuleSet,
    Sku,
    VaultCreateOrUpdateParameters,
    VaultProperties,
)

from openkeyvault.access.roles import MANAGED_HSM_ADMINISTRATOR
from openkeyvault.deployment import Deployment
from openkeyvault.storage.barrier import vault_owner
from openkeyvault.storage.dbkeyring import PREFIX
from openkeyvault.storage.keyring import KEYRING_DIR
from tests.security.conftest import open_deployment
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env", "resolve_localhost")

SCOPES = ["https://management.azure.com/.default"]
LOCATION = "westeurope"


@pytest.fixture(scope="module")
def deployment(server: DevServer) -> Iterator[Deployment]:
    d = open_deployment(server)
    yield d
    d.close()


@pytest.fixture(scope="module")
def admin(deployment: Deployment) -> str:
    """A directory principal to name in initialAdminObjectIds."""
    record, _ = deployment.directory.create(f"hsm-admin-{uuid.uuid4().hex[:8]}")
    return record.object_id


def unique(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def mgmt(server: DevServer, subscription: str | None = None,
         credential: Any = None) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(credential or ManagedIdentityCredential(),
                                    subscription or str(uuid.uuid4()),
                                    base_url=server.url, credential_scopes=SCOPES,
                                    polling_interval=0)


def hsm(deployment: Deployment, admins: list[str] | None, sku: str = "Standard_B1",
        **props: Any) -> ManagedHsm:
    tags = props.pop("tags", None)
    return ManagedHsm(location=LOCATION, tags=tags, sku=ManagedHsmSku(family="B", name=sku),
                      properties=ManagedHsmProperties(tenant_id=deployment.tenant_id,
                                                      initial_admin_object_ids=admins,
                                                      **props))


def create(client: KeyVaultManagementClient, deployment: Deployment, name: str,
           admins: list[str] | None, group: str = "rg1", **props: Any) -> Any:
    return client.managed_hsms.begin_create_or_update(
        group, name, hsm(deployment, admins, **props)).result()


def refused(call: Callable[[], Any], status: int, code: str) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as e:
        call()
    assert e.value.status_code == status, e.value
    assert e.value.error is not None and e.value.error.code == code, e.value
    return e.value


def available(client: KeyVaultManagementClient, name: str) -> bool:
    result = client.managed_hsms.check_mhsm_name_availability(
        CheckMhsmNameAvailabilityParameters(name=name))
    return bool(result.name_available)


def test_create_get_list_update(server: DevServer, deployment: Deployment,
                                admin: str) -> None:
    sub = str(uuid.uuid4())
    client = mgmt(server, sub)
    name = unique()
    assert available(client, name)
    pool = create(client, deployment, name, [admin], tags={"env": "test"},
                  soft_delete_retention_in_days=30)
    assert pool.name == name
    assert pool.id == (f"/subscriptions/{sub}/resourceGroups/rg1/providers/"
                       f"Microsoft.KeyVault/managedHSMs/{name}")
    assert pool.type == "Microsoft.KeyVault/managedHSMs"
    assert pool.sku.family == "B" and pool.sku.name == "Standard_B1"
    assert pool.tags == {"env": "test"}
    p = pool.properties
    assert p.hsm_uri == f"https://{name}.managedhsm.localhost:{server.port}/"
    assert p.tenant_id == deployment.tenant_id
    assert p.initial_admin_object_ids == [admin]
    assert p.enable_soft_delete is True and p.soft_delete_retention_in_days == 30
    assert p.enable_purge_protection is False
    assert p.provisioning_state == "Succeeded" and p.status_message
    assert p.security_domain_properties.activation_status == "NotActivated"
    assert p.public_network_access == "Enabled"
    assert not available(client, name)

    got = client.managed_hsms.get("rg1", name)
    assert got.id == pool.id and got.location == LOCATION

    other = unique()
    create(client, deployment, other, [admin], group="rg2", sku="Custom_B32")
    in_rg1 = {h.name for h in client.managed_hsms.list_by_resource_group("rg1")}
    in_rg2 = {h.name for h in client.managed_hsms.list_by_resource_group("rg2")}
    assert name in in_rg1 and other not in in_rg1
    assert other in in_rg2 and name not in in_rg2
    assert {name, other} <= {h.name for h in client.managed_hsms.list_by_subscription()}
    # Another subscription sees neither; the vault lists do not show pools.
    assert not {name, other} & {h.name for h in
                                mgmt(server).managed_hsms.list_by_subscription()}
    assert not {name, other} & {v.name for v in client.vaults.list_by_subscription()}

    updated = client.managed_hsms.begin_update("rg1", name, ManagedHsm(
        tags={"env": "prod"}, properties=ManagedHsmProperties(
            network_acls=MHSMNetworkRuleSet(default_action="Deny", bypass="None")))).result()
    assert updated.tags == {"env": "prod"}
    assert updated.properties.network_acls.default_action == "Deny"
    got = client.managed_hsms.get("rg1", name)
    assert got.tags == {"env": "prod"} and got.properties.initial_admin_object_ids == [admin]
    assert got.properties.soft_delete_retention_in_days == 30

    # A PUT replaces: the network rules it leaves out go back to the defaults.
    put = create(client, deployment, name, [admin], soft_delete_retention_in_days=30)
    assert put.properties.network_acls.default_action == "Allow"
    assert put.tags == {}


def test_the_admins_hold_managed_hsm_administrator(server: DevServer, deployment: Deployment,
                                                   admin: str) -> None:
    client = mgmt(server)
    name = unique()
    create(client, deployment, name, [admin])
    held = [(a.role_definition_id, a.scope) for a in deployment.rbac.all()
            if a.principal_id == admin]
    assert (MANAGED_HSM_ADMINISTRATOR.id, f"/vaults/{name}") in held


def test_a_pool_is_no_vault(server: DevServer, deployment: Deployment, admin: str) -> None:
    client = mgmt(server)
    name = unique()
    create(client, deployment, name, [admin])
    assert name not in {v.name for v in deployment.vaults.list()}
    row = deployment.vaults.get(name)
    assert row is not None and row.kind == "managedHsm"
    refused(lambda: client.vaults.get("rg1", name), 404, "ResourceNotFound")


def test_soft_delete_recover_purge(server: DevServer, deployment: Deployment,
                                   admin: str) -> None:
    sub = str(uuid.uuid4())
    client = mgmt(server, sub)
    name = unique()
    create(client, deployment, name, [admin], soft_delete_retention_in_days=7)
    client.managed_hsms.begin_delete("rg1", name).result()
    refused(lambda: client.managed_hsms.get("rg1", name), 404, "ResourceNotFound")
    assert name not in {h.name for h in client.managed_hsms.list_by_resource_group("rg1")}
    deleted = client.managed_hsms.get_deleted(name, LOCATION)
    assert deleted.name == name and deleted.type == "Microsoft.KeyVault/deletedManagedHSMs"
    assert deleted.properties.mhsm_id.endswith(f"/managedHSMs/{name}")
    assert deleted.properties.scheduled_purge_date is not None
    assert deleted.properties.purge_protection_enabled is False
    assert name in {d.name for d in client.managed_hsms.list_deleted()}
    # A deleted pool is not listed among deleted vaults, and keeps its name.
    assert name not in {d.name for d in client.vaults.list_deleted()}
    assert not available(client, name)
    refused(lambda: create(client, deployment, name, [admin]), 409, "ConflictError")

    recovered = create(client, deployment, name, [admin], create_mode="recover")
    assert recovered.name == name
    assert client.managed_hsms.get("rg1", name).properties.soft_delete_retention_in_days == 7
    # Recovering a live pool is a conflict.
    refused(lambda: create(client, deployment, name, [admin], create_mode="recover"), 409,
            "ConflictError")

    # Purge shreds the pool's key-encryption key (its own barrier owner), like a vault's.
    row = deployment.vaults.get(name)
    assert row is not None
    kek = server.data_dir / KEYRING_DIR / f"vault.{row.id}.kek"  # SQLite: a keyring file
    kek_row = PREFIX + vault_owner(row.id)  # PostgreSQL: a row (storage/dbkeyring.py)

    def kek_exists() -> bool:
        return kek.exists() or deployment.repo.data_key(kek_row) is not None

    assert kek_exists()
    client.managed_hsms.begin_delete("rg1", name).result()
    client.managed_hsms.begin_purge_deleted(name, LOCATION).result()
    assert not kek_exists()
    refused(lambda: client.managed_hsms.get_deleted(name, LOCATION), 404, "ResourceNotFound")
    assert available(client, name)
    # A vault may take the name now.
    vault = client.vaults.begin_create_or_update("rg1", name, VaultCreateOrUpdateParameters(
        location=LOCATION, properties=VaultProperties(
            tenant_id=deployment.tenant_id, sku=Sku(family="A", name="standard")))).result()
    assert vault.name == name


def test_name_shared_with_vaults(server: DevServer, deployment: Deployment,
                                 admin: str) -> None:
    client = mgmt(server)
    name = unique()
    client.vaults.begin_create_or_update("rg1", name, VaultCreateOrUpdateParameters(
        location=LOCATION, properties=VaultProperties(
            tenant_id=deployment.tenant_id, sku=Sku(family="A", name="standard")))).result()
    assert not available(client, name)
    refused(lambda: create(client, deployment, name, [admin]), 409, "VaultAlreadyExists")
    # The vault is untouched and no pool appeared.
    assert client.vaults.get("rg1", name).properties.sku.name == "standard"
    refused(lambda: client.managed_hsms.get("rg1", name), 404, "ResourceNotFound")
    # And the other way round: a vault cannot take a pool's name.
    pool = unique()
    create(client, deployment, pool, [admin])
    refused(lambda: client.vaults.begin_create_or_update(
        "rg1", pool, VaultCreateOrUpdateParameters(location=LOCATION, properties=
            VaultProperties(tenant_id=deployment.tenant_id,
                            sku=Sku(family="A", name="standard")))).result(),
            409, "VaultAlreadyExists")
    refused(lambda: client.vaults.get("rg1", pool), 404, "ResourceNotFound")
    assert client.managed_hsms.get("rg1", pool).name == pool


def test_retention_bounds_and_immutability(server: DevServer, deployment: Deployment,
                                           admin: str) -> None:
    client = mgmt(server)
    for days in (6, 91):
        name = unique()
        refused(lambda n=name, d=days: create(  # type: ignore[misc]
            client, deployment, n, [admin], soft_delete_retention_in_days=d), 400,
            "BadRequest")
        assert available(client, name)
    name = unique()
    create(client, deployment, name, [admin], soft_delete_retention_in_days=7)
    refused(lambda: client.managed_hsms.begin_update("rg1", name, ManagedHsm(
        properties=ManagedHsmProperties(soft_delete_retention_in_days=30))).result(), 400,
            "BadRequest")
    assert client.managed_hsms.get("rg1", name).properties.soft_delete_retention_in_days == 7


def test_purge_protection(server: DevServer, deployment: Deployment, admin: str) -> None:
    client = mgmt(server)
    name = unique()
    create(client, deployment, name, [admin])
    on = client.managed_hsms.begin_update("rg1", name, ManagedHsm(
        properties=ManagedHsmProperties(enable_purge_protection=True))).result()
    assert on.properties.enable_purge_protection is True
    refused(lambda: client.managed_hsms.begin_update("rg1", name, ManagedHsm(
        properties=ManagedHsmProperties(enable_purge_protection=False))).result(), 400,
            "BadRequest")
    assert client.managed_hsms.get("rg1", name).properties.enable_purge_protection is True
    client.managed_hsms.begin_delete("rg1", name).result()
    refused(lambda: client.managed_hsms.begin_purge_deleted(name, LOCATION).result(), 403,
            "MethodNotAllowedWithPurgeProtection")
    assert client.managed_hsms.get_deleted(name, LOCATION).properties.purge_protection_enabled


@pytest.mark.parametrize("admins", [None, [], ["not-a-guid"]])
def test_initial_admins_are_required(server: DevServer, deployment: Deployment,
                                     admins: list[str] | None) -> None:
    client = mgmt(server)
    name = unique()
    refused(lambda: create(client, deployment, name, admins), 400, "BadRequest")
    refused(lambda: client.managed_hsms.get("rg1", name), 404, "ResourceNotFound")
    assert available(client, name)


def test_unknown_admin_is_refused(server: DevServer, deployment: Deployment) -> None:
    client = mgmt(server)
    name = unique()
    stranger = str(uuid.uuid4())
    refused(lambda: create(client, deployment, name, [stranger]), 400, "BadRequest")
    assert available(client, name)
    assert not [a for a in deployment.rbac.all() if a.principal_id == stranger]


@pytest.mark.parametrize("name", ["ab", "a" * 25, "a_b", "1abc"])
def test_name_rules(server: DevServer, deployment: Deployment, admin: str,
                    name: str) -> None:
    client = mgmt(server)
    refused(lambda: create(client, deployment, name, [admin]), 400, "InvalidResourceName")
    check = client.managed_hsms.check_mhsm_name_availability(
        CheckMhsmNameAvailabilityParameters(name=name))
    assert check.name_available is False and check.reason == "AccountNameInvalid"


def _principal(server: DevServer, deployment: Deployment, role: str, scope: str
               ) -> ClientSecretCredential:
    record, secret = deployment.directory.create(unique("hsm-ctl-"))
    deployment.rbac.assign(record.object_id, role, scope)
    return ClientSecretCredential(record.tenant_id, record.client_id, secret.client_secret,
                                  authority=f"https://localhost:{server.port}",
                                  disable_instance_discovery=True)


def test_key_vault_contributor_cannot_manage_pools(server: DevServer, deployment: Deployment,
                                                   admin: str) -> None:
    sub = str(uuid.uuid4())
    name = unique()
    create(mgmt(server, sub), deployment, name, [admin], tags={"k": "v"})
    cred = _principal(server, deployment, "Key Vault Contributor", f"/subscriptions/{sub}")
    theirs = mgmt(server, sub, cred)
    refused(lambda: theirs.managed_hsms.get("rg1", name), 403, "AuthorizationFailed")
    refused(lambda: theirs.managed_hsms.begin_update("rg1", name, ManagedHsm(
        tags={"k": "changed"})).result(), 403, "AuthorizationFailed")
    refused(lambda: theirs.managed_hsms.begin_delete("rg1", name).result(), 403,
            "AuthorizationFailed")
    new = unique()
    refused(lambda: create(theirs, deployment, new, [admin]), 403, "AuthorizationFailed")
    assert name not in {h.name for h in theirs.managed_hsms.list_by_subscription()}
    # Nothing changed; the same role still manages vaults.
    got = mgmt(server, sub).managed_hsms.get("rg1", name)
    assert got.tags == {"k": "v"}
    assert available(mgmt(server, sub), new)
    vault = unique()
    theirs.vaults.begin_create_or_update("rg1", vault, VaultCreateOrUpdateParameters(
        location=LOCATION, properties=VaultProperties(
            tenant_id=deployment.tenant_id, sku=Sku(family="A", name="standard")))).result()


def test_reader_reads_but_cannot_write(server: DevServer, deployment: Deployment,
                                       admin: str) -> None:
    sub = str(uuid.uuid4())
    name = unique()
    create(mgmt(server, sub), deployment, name, [admin])
    theirs = mgmt(server, sub, _principal(server, deployment, "Reader",
                                          f"/subscriptions/{sub}"))
    assert theirs.managed_hsms.get("rg1", name).name == name
    assert name in {h.name for h in theirs.managed_hsms.list_by_resource_group("rg1")}
    refused(lambda: theirs.managed_hsms.begin_delete("rg1", name).result(), 403,
            "AuthorizationFailed")
    assert mgmt(server, sub).managed_hsms.get("rg1", name).name == name
