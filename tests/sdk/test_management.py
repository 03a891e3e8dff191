"""The management API through the official SDK (azure-mgmt-keyvault's
KeyVaultManagementClient pointed at the server): the vault lifecycle, the properties the
data plane honours, and refusals."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    AccessPolicyUpdateKind,
    NetworkRuleSet,
    Permissions,
    Sku,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
    VaultCheckNameAvailabilityParameters,
    VaultCreateOrUpdateParameters,
    VaultPatchParameters,
    VaultPatchProperties,
    VaultProperties,
)

from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env", "resolve_localhost")

SCOPES = ["https://management.azure.com/.default"]


def unique(prefix: str = "v") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _claims() -> dict[str, Any]:
    payload = ManagedIdentityCredential().get_token(SCOPES[0]).token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def tenant(server: DevServer) -> str:
    """The deployment's tenant id (the dev identity's token says it)."""
    return str(_claims()["tid"])


def mgmt(server: DevServer, subscription: str | None = None,
         credential: Any = None) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(credential or ManagedIdentityCredential(),
                                    subscription or str(uuid.uuid4()),
                                    base_url=server.url, credential_scopes=SCOPES,
                                    polling_interval=0)


def params(server: DevServer, **props: Any) -> VaultCreateOrUpdateParameters:
    tags = props.pop("tags", None)
    return VaultCreateOrUpdateParameters(
        location="westeurope", tags=tags,
        properties=VaultProperties(tenant_id=tenant(server),
                                   sku=Sku(family="A", name=props.pop("sku", "standard")),
                                   **props))


def create(client: KeyVaultManagementClient, server: DevServer, name: str,
           group: str = "rg1", **props: Any) -> Any:
    return client.vaults.begin_create_or_update(group, name, params(server, **props)).result()


def refused(call: Callable[[], Any], status: int, code: str) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as e:
        call()
    assert e.value.status_code == status, e.value
    assert e.value.error is not None and e.value.error.code == code, e.value
    return e.value


def test_create_get_update_list_tags(server: DevServer) -> None:
    sub = str(uuid.uuid4())
    client = mgmt(server, sub)
    name = unique()
    vault = create(client, server, name, tags={"env": "test"},
                   soft_delete_retention_in_days=30)
    assert vault.name == name
    assert vault.id == (f"/subscriptions/{sub}/resourceGroups/rg1/providers/"
                        f"Microsoft.KeyVault/vaults/{name}")
    assert vault.properties.vault_uri == f"https://{name}.vault.localhost:{server.port}/"
    assert vault.properties.enable_soft_delete is True
    assert vault.properties.soft_delete_retention_in_days == 30
    assert vault.properties.enable_rbac_authorization is True
    assert vault.tags == {"env": "test"}
    got = client.vaults.get("rg1", name)
    assert got.properties.sku.name == "standard"
    assert got.location == "westeurope"

    updated = client.vaults.update("rg1", name, VaultPatchParameters(
        tags={"env": "prod"}, properties=VaultPatchProperties(sku=Sku(family="A",
                                                                        name="premium"))))
    assert updated.tags == {"env": "prod"}
    assert updated.properties.sku.name == "premium"
    assert client.vaults.get("rg1", name).properties.sku.name == "premium"

    other = unique()
    create(client, server, other, group="rg2")
    in_rg1 = {v.name for v in client.vaults.list_by_resource_group("rg1")}
    in_rg2 = {v.name for v in client.vaults.list_by_resource_group("rg2")}
    assert name in in_rg1 and other not in in_rg1
    assert other in in_rg2 and name not in in_rg2
    assert {name, other} <= {v.name for v in client.vaults.list_by_subscription()}
    # Another subscription sees neither.
    assert not {name, other} & {v.name for v in mgmt(server).vaults.list_by_subscription()}
    # The vault answers the data plane.
    secrets = SecretClient(vault.properties.vault_uri, ManagedIdentityCredential())
    assert secrets.set_secret("s", "v").value == "v"


def test_soft_delete_recover_purge(server: DevServer) -> None:
    sub = str(uuid.uuid4())
    client = mgmt(server, sub)
    name = unique()
    vault = create(client, server, name, soft_delete_retention_in_days=7)
    uri = vault.properties.vault_uri
    secrets = SecretClient(uri, ManagedIdentityCredential())
    keys = KeyClient(uri, ManagedIdentityCredential())
    secrets.set_secret("kept", "value-1")
    key = keys.create_rsa_key("k1", size=2048)

    client.vaults.delete("rg1", name)
    # The data plane answers a deleted vault like a missing one.
    refused(lambda: secrets.get_secret("kept"), 404, "VaultNotFound")
    refused(lambda: client.vaults.get("rg1", name), 404, "ResourceNotFound")
    assert name not in {v.name for v in client.vaults.list_by_resource_group("rg1")}
    deleted = client.vaults.get_deleted(name, "westeurope")
    assert deleted.properties.vault_id.endswith(f"/vaults/{name}")
    assert deleted.properties.scheduled_purge_date is not None
    assert name in {d.name for d in client.vaults.list_deleted()}
    # The name stays reserved while the vault is deleted.
    assert client.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(
        name=name)).name_available is False
    refused(lambda: create(client, server, name), 409, "ConflictError")

    recovered = client.vaults.begin_create_or_update("rg1", name, VaultCreateOrUpdateParameters(
        location="westeurope", properties=VaultProperties(
            tenant_id=tenant(server), sku=Sku(family="A", name="standard"),
            create_mode="recover"))).result()
    assert recovered.name == name
    assert secrets.get_secret("kept").value == "value-1"
    assert keys.get_key("k1").id == key.id
    # Recovering a live vault is a conflict.
    refused(lambda: client.vaults.begin_create_or_update(
        "rg1", name, VaultCreateOrUpdateParameters(location="westeurope", properties=
            VaultProperties(tenant_id=tenant(server), sku=Sku(family="A", name="standard"),
                            create_mode="recover"))).result(), 409, "ConflictError")

    client.vaults.delete("rg1", name)
    client.vaults.begin_purge_deleted(name, "westeurope").result()
    refused(lambda: client.vaults.get_deleted(name, "westeurope"), 404, "DeletedVaultNotFound")
    assert client.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(
        name=name)).name_available is True
    # The name is free again: a new vault under it starts empty.
    create(client, server, name)
    with pytest.raises(ResourceNotFoundError):
        secrets.get_secret("kept")


def test_recover_unknown_vault_is_not_found(server: DevServer) -> None:
    client = mgmt(server)
    name = unique()
    refused(lambda: client.vaults.begin_create_or_update(
        "rg1", name, VaultCreateOrUpdateParameters(location="westeurope", properties=
            VaultProperties(tenant_id=tenant(server), sku=Sku(family="A", name="standard"),
                            create_mode="recover"))).result(), 404, "DeletedVaultNotFound")
    assert client.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(
        name=name)).name_available is True


def test_purge_protection(server: DevServer) -> None:
    client = mgmt(server)
    name = unique()
    create(client, server, name)
    on = client.vaults.update("rg1", name, VaultPatchParameters(
        properties=VaultPatchProperties(enable_purge_protection=True)))
    assert on.properties.enable_purge_protection is True
    # One way: it cannot be turned off.
    refused(lambda: client.vaults.update("rg1", name, VaultPatchParameters(
        properties=VaultPatchProperties(enable_purge_protection=False))), 400, "BadRequest")
    assert client.vaults.get("rg1", name).properties.enable_purge_protection is True
    client.vaults.delete("rg1", name)
    refused(lambda: client.vaults.begin_purge_deleted(name, "westeurope").result(), 403,
            "MethodNotAllowedWithPurgeProtection")
    assert client.vaults.get_deleted(name, "westeurope").properties.purge_protection_enabled


def test_retention_bounds_and_immutability(server: DevServer) -> None:
    client = mgmt(server)
    for days in (6, 91):
        name = unique()
        refused(lambda n=name, d=days: create(client, server, n,  # type: ignore[misc]
                                              soft_delete_retention_in_days=d),
                400, "BadRequest")
        assert client.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(
            name=name)).name_available is True
    name = unique()
    create(client, server, name, soft_delete_retention_in_days=7)
    refused(lambda: client.vaults.update("rg1", name, VaultPatchParameters(
        properties=VaultPatchProperties(soft_delete_retention_in_days=30))), 400, "BadRequest")
    assert client.vaults.get("rg1", name).properties.soft_delete_retention_in_days == 7
    refused(lambda: create(client, server, unique(), enable_soft_delete=False), 400,
            "BadRequest")


@pytest.mark.parametrize("name", ["ab", "a" * 25, "a_b-c", "1abc", "ab--cd", "abc-"])
def test_name_rules(server: DevServer, name: str) -> None:
    client = mgmt(server)
    refused(lambda: create(client, server, name), 400, "VaultNameNotValid")
    check = client.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(
        name=name))
    assert check.name_available is False and check.reason == "AccountNameInvalid"


def test_name_taken_across_subscriptions(server: DevServer) -> None:
    name = unique()
    create(mgmt(server), server, name)
    other = mgmt(server)
    refused(lambda: create(other, server, name), 409, "VaultAlreadyExists")
    check = other.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(
        name=name))
    assert check.name_available is False and check.reason == "AlreadyExists"


def test_tenant_must_be_the_deployments(server: DevServer) -> None:
    client = mgmt(server)
    name = unique()
    body = params(server)
    body.properties.tenant_id = str(uuid.uuid4())
    refused(lambda: client.vaults.begin_create_or_update("rg1", name, body).result(), 400,
            "InvalidTenantId")
    refused(lambda: client.vaults.get("rg1", name), 404, "ResourceNotFound")


def _principal(server: DevServer) -> tuple[dict[str, Any], ClientSecretCredential]:
    done = server.okv("principal", "create", f"mgmt-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    return p, ClientSecretCredential(p["tenant_id"], p["client_id"], p["client_secret"],
                                     authority=f"https://localhost:{server.port}",
                                     disable_instance_discovery=True)


def test_access_policy_vault(server: DevServer) -> None:
    client = mgmt(server)
    name = unique()
    p, cred = _principal(server)
    vault = create(client, server, name, enable_rbac_authorization=False, access_policies=[
        AccessPolicyEntry(tenant_id=tenant(server), object_id=p["object_id"],
                          permissions=Permissions(secrets=["get"]))])
    assert vault.properties.enable_rbac_authorization is False
    assert [e.object_id for e in vault.properties.access_policies] == [p["object_id"]]
    uri = vault.properties.vault_uri
    # The dev identity (not in the policies) sets a secret: add it first.
    client.vaults.update_access_policy("rg1", name, AccessPolicyUpdateKind.ADD,
                                       VaultAccessPolicyParameters(
        properties=VaultAccessPolicyProperties(access_policies=[AccessPolicyEntry(
            tenant_id=tenant(server), object_id=str(_claims()["oid"]),
            permissions=Permissions(secrets=["set", "get"]))])))
    SecretClient(uri, ManagedIdentityCredential()).set_secret("s1", "v1")
    theirs = SecretClient(uri, cred)
    assert theirs.get_secret("s1").value == "v1"
    refused(lambda: theirs.set_secret("s2", "v2"), 403, "Forbidden")
    # add merges permissions, remove takes them away.
    client.vaults.update_access_policy("rg1", name, AccessPolicyUpdateKind.ADD,
                                       VaultAccessPolicyParameters(
        properties=VaultAccessPolicyProperties(access_policies=[AccessPolicyEntry(
            tenant_id=tenant(server), object_id=p["object_id"],
            permissions=Permissions(secrets=["set"]))])))
    assert theirs.set_secret("s2", "v2").value == "v2"
    client.vaults.update_access_policy("rg1", name, AccessPolicyUpdateKind.REMOVE,
                                       VaultAccessPolicyParameters(
        properties=VaultAccessPolicyProperties(access_policies=[AccessPolicyEntry(
            tenant_id=tenant(server), object_id=p["object_id"],
            permissions=Permissions(secrets=["get", "set"]))])))
    refused(lambda: theirs.get_secret("s1"), 403, "Forbidden")
    # Managing vaults needs control-plane rights the new principal does not hold.
    refused(lambda: mgmt(server, credential=cred).vaults.get("rg1", name), 403,
            "AuthorizationFailed")


def test_network_acls_take_effect(server: DevServer) -> None:
    client = mgmt(server)
    name = unique()
    vault = create(client, server, name)
    secrets = SecretClient(vault.properties.vault_uri, ManagedIdentityCredential())
    secrets.set_secret("s", "v")
    client.vaults.update("rg1", name, VaultPatchParameters(properties=VaultPatchProperties(
        network_acls=NetworkRuleSet(default_action="Deny", bypass="None",
                                    ip_rules=[{"value": "203.0.113.0/24"}]))))
    got = client.vaults.get("rg1", name)
    assert got.properties.network_acls.default_action == "Deny"
    assert [r.value for r in got.properties.network_acls.ip_rules] == ["203.0.113.0/24"]
    e = refused(lambda: secrets.get_secret("s"), 403, "Forbidden")
    assert e.error is not None and e.error.innererror == {"code": "ForbiddenByFirewall"}
    client.vaults.update("rg1", name, VaultPatchParameters(properties=VaultPatchProperties(
        network_acls=NetworkRuleSet(default_action="Allow"))))
    assert secrets.get_secret("s").value == "v"


def test_put_replaces_and_patch_keeps_access_settings(server: DevServer) -> None:
    client = mgmt(server)
    name = unique()
    p, _ = _principal(server)
    policy = AccessPolicyEntry(tenant_id=tenant(server), object_id=p["object_id"],
                               permissions=Permissions(secrets=["get"]))
    deny = NetworkRuleSet(default_action="Deny", bypass="None",
                          ip_rules=[{"value": "203.0.113.0/24"}])
    create(client, server, name, enable_rbac_authorization=False, access_policies=[policy],
           network_acls=deny)
    # A PATCH naming only tags keeps the access settings.
    kept = client.vaults.update("rg1", name, VaultPatchParameters(tags={"a": "b"}))
    assert kept.properties.enable_rbac_authorization is False
    assert [e.object_id for e in kept.properties.access_policies] == [p["object_id"]]
    assert kept.properties.network_acls.default_action == "Deny"
    # A PUT is a full replacement: what the body leaves out goes back to its default.
    put = create(client, server, name)
    assert put.properties.enable_rbac_authorization is True
    assert put.properties.access_policies == []
    assert put.properties.network_acls.default_action == "Allow"
    assert put.properties.network_acls.ip_rules == []
    assert put.tags == {}
    got = client.vaults.get("rg1", name)
    assert got.properties.enable_rbac_authorization is True
    assert got.properties.access_policies == []
    assert got.properties.network_acls.default_action == "Allow"
    # What a PUT names, it sets; retention it cannot change, and a refused PUT changes
    # nothing.
    again = create(client, server, name, enable_rbac_authorization=False,
                   access_policies=[policy])
    assert [e.object_id for e in again.properties.access_policies] == [p["object_id"]]
    refused(lambda: create(client, server, name, soft_delete_retention_in_days=30), 400,
            "BadRequest")
    after = client.vaults.get("rg1", name)
    assert after.properties.enable_rbac_authorization is False
    assert [e.object_id for e in after.properties.access_policies] == [p["object_id"]]


def test_purge_protection_refuses_object_purge_on_the_data_plane(server: DevServer) -> None:
    """A vault created with purge protection refuses to purge a deleted secret or key (403),
    and the deleted objects stay recoverable."""
    client = mgmt(server)
    name = unique()
    vault = create(client, server, name, enable_purge_protection=True)
    uri = vault.properties.vault_uri
    secrets = SecretClient(uri, ManagedIdentityCredential())
    keys = KeyClient(uri, ManagedIdentityCredential())
    secrets.set_secret("guarded", "kept")
    keys.create_ec_key("guarded-key")
    secrets.begin_delete_secret("guarded").wait()
    keys.begin_delete_key("guarded-key").wait()
    for purge in (lambda: secrets.purge_deleted_secret("guarded"),
                  lambda: keys.purge_deleted_key("guarded-key")):
        with pytest.raises(HttpResponseError) as info:
            purge()
        assert info.value.status_code == 403
        assert "purge protection" in str(info.value.message).lower()
    assert secrets.get_deleted_secret("guarded").name == "guarded"
    secrets.begin_recover_deleted_secret("guarded").wait()
    assert secrets.get_secret("guarded").value == "kept"
    keys.begin_recover_deleted_key("guarded-key").wait()
    assert keys.get_key("guarded-key").name == "guarded-key"


def test_listings_come_in_keyset_pages_the_sdk_follows(server: DevServer) -> None:
    """`$top` pages, each ending with a nextLink that carries the last name shown: the SDK
    follows them to the end, in name order; a raw page shows the link."""
    client = mgmt(server)
    names = sorted(unique("pg") for _ in range(5))
    for name in names:
        create(client, server, name, group="paged")
    create(client, server, unique("other"), group="elsewhere")
    assert [v.name for v in client.vaults.list_by_resource_group("paged", top=2)] == names
    by_sub = [v.name for v in client.vaults.list_by_subscription(top=2)]
    assert set(names) <= set(by_sub) and len(by_sub) == 6 and by_sub == sorted(by_sub)
    token = ManagedIdentityCredential().get_token(SCOPES[0]).token
    base = (f"{server.url}/subscriptions/{client._config.subscription_id}/resourceGroups/"
            "paged/providers/Microsoft.KeyVault/vaults")
    first = requests.get(base, params={"api-version": "2023-07-01", "$top": "2"},
                         headers={"Authorization": f"Bearer {token}"}, verify=server.ca,
                         timeout=30).json()
    assert [v["name"] for v in first["value"]] == names[:2]
    assert f"%24skiptoken={names[1]}" in first["nextLink"]
    last = requests.get(base, params={"api-version": "2023-07-01", "$top": "3",
                                      "$skiptoken": names[1]},
                        headers={"Authorization": f"Bearer {token}"}, verify=server.ca,
                        timeout=30).json()
    assert [v["name"] for v in last["value"]] == names[2:] and "nextLink" not in last
    bad = requests.get(base, params={"api-version": "2023-07-01", "$top": "0"},
                       headers={"Authorization": f"Bearer {token}"}, verify=server.ca,
                       timeout=30)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "InvalidQueryParameterValue"
