"""A managed HSM pool's settings through azure-keyvault-administration's
KeyVaultSettingsClient at the pool's own host (`NAME.managedhsm.localhost:PORT`,
challenge-resource verification on), on the real dev server.

Checked: Azure's one setting (`AllowKeyManagementOperationsThroughARM`, boolean, false on
a new pool) listed and read with its name, value and type; a change kept per pool, seen
by a second client and surviving a change of the pool through the management API; the
refusals (an unknown name, a value its type does not take, a body that is not the spec's,
no role, a role that does not cover settings, a deployment-wide role), each changing
nothing; that a pool made again after a purge starts from the defaults; and that a vault's
host serves no settings.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.administration import (
    KeyVaultSetting,
    KeyVaultSettingsClient,
    KeyVaultSettingType,
)
from azure.mgmt.keyvault.models import ManagedHsm, ManagedHsmProperties

from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest
from tests.security.test_mhsm_rbac import (
    AUDITOR,
    CRYPTO_USER,
    DEFINITION_ID,
    SUBSCRIPTION,
    H,
    client,
    make_pool,
    management,
    new_principal,
    raw,
    refused,
    resource,
)
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env", "resolve_localhost")

ARM = "AllowKeyManagementOperationsThroughARM"
ENCRYPTION_USER = "33413926-3206-4cdd-b39a-83574fe37a17"
CRYPTO_OFFICER = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
POLICY_ADMINISTRATOR = "4bd23610-cdcf-4971-bdee-bdc562cc28e4"


@pytest.fixture
def pool(server: DevServer, deployment: Deployment, sdk_env: dict[str, str]) -> str:
    """A new pool whose initial administrator is the test principal (the dev identity)."""
    return make_pool(server, deployment, deployment.dev_principal.object_id)


def settings(url: str, credential: Any = None) -> KeyVaultSettingsClient:
    return KeyVaultSettingsClient(url, credential or ManagedIdentityCredential())


def shown(s: KeyVaultSetting) -> tuple[str, str, Any]:
    return s.name, s.value, s.setting_type


def value_of(url: str) -> str:
    return str(settings(url).get_setting(ARM).value)


def test_list_and_get(rest: Rest, server: DevServer, pool: str) -> None:
    c = settings(pool)
    listed = list(c.list_settings())
    assert [shown(s) for s in listed] == [(ARM, "false", KeyVaultSettingType.BOOLEAN)]
    assert listed[0].getboolean() is False
    got = c.get_setting(ARM)
    assert shown(got) == (ARM, "false", KeyVaultSettingType.BOOLEAN)
    # A name matches whatever its case, answered in Azure's spelling.
    assert c.get_setting(ARM.lower()).name == ARM
    # The wire shapes of settings.json: SettingsListResult (not paged) and Setting.
    token = rest.msi_token(resource(server))["access_token"]
    r = raw(rest, pool, "/settings?api-version=2025-07-01", token)
    assert r.status_code == 200, r.text
    assert r.json() == {"settings": [{"name": ARM, "value": "false", "type": "boolean"}]}
    r = raw(rest, pool, f"/settings/{ARM}?api-version=7.4", token)
    assert r.json() == {"name": ARM, "value": "false", "type": "boolean"}


def test_update_is_kept(server: DevServer, deployment: Deployment, pool: str) -> None:
    c = settings(pool)
    updated = c.update_setting(KeyVaultSetting(name=ARM, value=True))  # sent as "true"
    assert shown(updated) == (ARM, "true", KeyVaultSettingType.BOOLEAN)
    assert updated.getboolean() is True
    assert c.get_setting(ARM).value == "true"
    # A second client, of another principal that may read the pool's settings.
    oid, credential = new_principal(server)
    client(pool).create_role_assignment("/", DEFINITION_ID + AUDITOR, oid)
    other = settings(pool, credential)
    assert [shown(s) for s in other.list_settings()] == \
        [(ARM, "true", KeyVaultSettingType.BOOLEAN)]
    # Per pool: another pool keeps its default.
    second = make_pool(server, deployment, deployment.dev_principal.object_id)
    assert value_of(second) == "false"
    # A change of the pool through the management API keeps its settings.
    name = pool.split("//")[1].split(".")[0]
    management(server).managed_hsms.begin_update("rg1", name, ManagedHsm(
        tags={"team": "settings"},
        properties=ManagedHsmProperties(public_network_access="Enabled"))).result()
    assert value_of(pool) == "true"
    # And back, with the type named.
    back = c.update_setting(KeyVaultSetting(name=ARM, value="false",
                                            setting_type=KeyVaultSettingType.BOOLEAN))
    assert shown(back) == (ARM, "false", KeyVaultSettingType.BOOLEAN)
    assert other.get_setting(ARM).value == "false"


def test_a_new_pool_inherits_no_settings_from_a_purged_one(server: DevServer,
                                                           deployment: Deployment) -> None:
    name = f"p{uuid.uuid4().hex[:12]}"
    url = make_pool(server, deployment, deployment.dev_principal.object_id, name)
    settings(url).update_setting(KeyVaultSetting(name=ARM, value=True))
    mgmt = management(server)
    mgmt.managed_hsms.begin_delete("rg1", name).result()
    mgmt.managed_hsms.begin_purge_deleted(name, "westeurope").result()
    assert make_pool(server, deployment, deployment.dev_principal.object_id, name) == url
    assert value_of(url) == "false"


def test_unknown_names_and_wrong_values(rest: Rest, server: DevServer, pool: str) -> None:
    c = settings(pool)
    c.update_setting(KeyVaultSetting(name=ARM, value=True))
    e = refused(lambda: c.get_setting("NoSuchSetting"), 404, "SettingNotFound")
    assert "Setting 'NoSuchSetting' was not found" in e.message and ARM in e.message
    refused(lambda: c.update_setting(KeyVaultSetting(name="NoSuchSetting", value="true")),
            404, "SettingNotFound")
    # A boolean takes "true" or "false", in lower case, as Azure does.
    for value in ("True", "FALSE", "yes", "1", "", " true"):
        e = refused(lambda v=value: c.update_setting(KeyVaultSetting(name=ARM, value=v)),
                    400, "BadParameter")
        assert e.error is not None and e.error.message == (
            f"The value of setting '{ARM}' must be 'true' or 'false' (type boolean).")
    # Bodies that are not UpdateSettingRequest's shape.
    token = rest.msi_token(resource(server))["access_token"]
    path = f"/settings/{ARM}?api-version=2025-07-01"
    for body, message in ((b'{"value": false}', "Property 'value' has invalid value: "
                                                 "expected string, got boolean."),
                          (b'{"value": null}', "Property 'value' has invalid value: "
                                               "expected string, got null."),
                          (b"{}", "Property 'value' is required."),
                          (b'{"Value": "false"}', "Property 'value' is required."),
                          (b'["false"]', "The request body must be a JSON object."),
                          (b'"false"', "The request body must be a JSON object."),
                          (b"false", "The request body must be a JSON object."),
                          (b"{value: false}", "The request body is not valid JSON."),
                          (b"", "The request body is empty; a JSON object is required.")):
        r = raw(rest, pool, path, token, "PATCH", data=body)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "BadParameter"), body
        assert r.json()["error"]["message"] == message, body
    # Unknown members are ignored, as Azure ignores them.
    r = raw(rest, pool, path, token, "PATCH", json={"value": "true", "type": "boolean",
                                                    "name": "Other"})
    assert r.status_code == 200 and r.json() == {"name": ARM, "value": "true",
                                                 "type": "boolean"}
    assert value_of(pool) == "true"


def test_who_may_read_and_change_settings(server: DevServer, pool: str) -> None:
    admin = settings(pool)
    oid, credential = new_principal(server)
    user = settings(pool, credential)
    change = KeyVaultSetting(name=ARM, value=True)
    # No role at the pool: nothing.
    for call in (lambda: list(user.list_settings()), lambda: user.get_setting(ARM),
                 lambda: user.update_setting(change)):
        e = refused(call, 403, "Forbidden")
        assert "Caller is not authorized to perform action on resource" in e.message
    e = refused(lambda: user.update_setting(change), 403, "Forbidden")
    assert f"Action: '{H}/roleAssignments/write/action'" in e.message
    # A role that does not cover settings: Crypto Service Encryption User (keys only).
    given = client(pool).create_role_assignment("/", DEFINITION_ID + ENCRYPTION_USER, oid)
    refused(lambda: user.get_setting(ARM), 403, "Forbidden")
    refused(lambda: list(user.list_settings()), 403, "Forbidden")
    client(pool).delete_role_assignment("/", given.name)
    # Crypto User reads the pool's role assignments, so its settings, but changes neither.
    given = client(pool).create_role_assignment("/", DEFINITION_ID + CRYPTO_USER, oid)
    assert user.get_setting(ARM).value == "false"
    e = refused(lambda: user.update_setting(change), 403, "Forbidden")
    assert f"Action: '{H}/roleAssignments/write/action'" in e.message
    client(pool).delete_role_assignment("/", given.name)
    # Crypto Officer at /keys administers keys, not the pool.
    given = client(pool).create_role_assignment("/keys", DEFINITION_ID + CRYPTO_OFFICER, oid)
    refused(lambda: user.update_setting(change), 403, "Forbidden")
    client(pool).delete_role_assignment("/keys", given.name)
    # A deployment-wide Key Vault Administrator and Managed HSM Administrator do not reach
    # a pool.
    for role, scope in (("Key Vault Administrator", "/"),
                        ("Managed HSM Administrator", "/"),
                        ("Managed HSM Administrator", f"/subscriptions/{SUBSCRIPTION}")):
        done = server.okv("role", "assign", "--principal", oid, "--role", role,
                          "--scope", scope)
        assert done.returncode == 0, done.stderr
    refused(lambda: user.update_setting(change), 403, "Forbidden")
    refused(lambda: user.get_setting(ARM), 403, "Forbidden")
    assert admin.get_setting(ARM).value == "false"  # each refusal changed nothing
    # Who may assign roles at the pool administers it: Policy Administrator at `/`.
    client(pool).create_role_assignment("/", DEFINITION_ID + POLICY_ADMINISTRATOR, oid)
    assert user.update_setting(change).value == "true"
    assert admin.get_setting(ARM).value == "true"


def test_a_vault_host_serves_no_settings(server: DevServer, pool: str) -> None:
    with pytest.raises(HttpResponseError) as e:
        list(settings(server.vault_url()).list_settings())
    assert e.value.status_code == 404
    with pytest.raises(HttpResponseError) as e:
        settings(server.vault_url()).update_setting(KeyVaultSetting(name=ARM, value=True))
    assert e.value.status_code == 404
    # The pool's name on a vault host is no vault.
    name = pool.split("//")[1].split(".")[0]
    with pytest.raises(HttpResponseError) as e:
        settings(f"https://{name}.vault.localhost:{server.port}").get_setting(ARM)
    assert e.value.status_code in (401, 404)
    assert value_of(pool) == "false"
