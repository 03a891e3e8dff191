"""Access-policy permissions and the decision in access-policy mode.

The expected names and data actions are written out from Azure's documentation
(ARM's `Permissions` enum; the permission → data action mapping Azure publishes
for migrating from access policies to RBAC; the REST reference's "requires the
secrets/list permission" per operation), not derived from the implementation.
"""

from __future__ import annotations

import uuid

import pytest

from openkeyvault.access import actions
from openkeyvault.access.policies import (
    AccessPolicies,
    AccessPolicyEntry,
    InvalidAccessPolicy,
    granting,
    permission_names,
    required,
)
from openkeyvault.access.principals import Principal
from openkeyvault.vault.errors import BadParameter
from openkeyvault.vault.properties import VaultProperties

V = "Microsoft.KeyVault/vaults"

KEY_PERMISSIONS = ["encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify", "get", "list",
                   "create", "update", "import", "delete", "backup", "restore", "recover",
                   "purge", "release", "rotate", "getrotationpolicy", "setrotationpolicy"]
SECRET_PERMISSIONS = ["get", "list", "set", "delete", "backup", "restore", "recover", "purge"]
CERTIFICATE_PERMISSIONS = ["get", "list", "delete", "create", "import", "update",
                           "managecontacts", "getissuers", "listissuers", "setissuers",
                           "deleteissuers", "manageissuers", "recover", "purge", "backup",
                           "restore"]

# (kind, permission) → the data action it grants (one row per documented pair).
DOCUMENTED: list[tuple[str, str, str]] = [
    ("keys", "get", f"{V}/keys/read"),
    ("keys", "list", f"{V}/keys/read"),
    ("keys", "encrypt", f"{V}/keys/encrypt/action"),
    ("keys", "decrypt", f"{V}/keys/decrypt/action"),
    ("keys", "wrapKey", f"{V}/keys/wrap/action"),
    ("keys", "unwrapKey", f"{V}/keys/unwrap/action"),
    ("keys", "sign", f"{V}/keys/sign/action"),
    ("keys", "verify", f"{V}/keys/verify/action"),
    ("keys", "create", f"{V}/keys/create/action"),
    ("keys", "update", f"{V}/keys/update/action"),
    ("keys", "import", f"{V}/keys/import/action"),
    ("keys", "delete", f"{V}/keys/delete"),
    ("keys", "backup", f"{V}/keys/backup/action"),
    ("keys", "restore", f"{V}/keys/restore/action"),
    ("keys", "recover", f"{V}/keys/recover/action"),
    ("keys", "purge", f"{V}/keys/purge/action"),
    ("keys", "release", f"{V}/keys/release/action"),
    ("keys", "rotate", f"{V}/keys/rotate/action"),
    ("keys", "getrotationpolicy", f"{V}/keyrotationpolicies/read"),
    ("keys", "setrotationpolicy", f"{V}/keyrotationpolicies/write"),
    ("secrets", "get", f"{V}/secrets/getSecret/action"),
    ("secrets", "list", f"{V}/secrets/readMetadata/action"),
    ("secrets", "set", f"{V}/secrets/setSecret/action"),
    ("secrets", "set", f"{V}/secrets/update/action"),
    ("secrets", "delete", f"{V}/secrets/delete"),
    ("secrets", "backup", f"{V}/secrets/backup/action"),
    ("secrets", "restore", f"{V}/secrets/restore/action"),
    ("secrets", "recover", f"{V}/secrets/recover/action"),
    ("secrets", "purge", f"{V}/secrets/purge/action"),
    ("certificates", "get", f"{V}/certificates/read"),
    ("certificates", "list", f"{V}/certificates/read"),
    ("certificates", "delete", f"{V}/certificates/delete"),
    ("certificates", "create", f"{V}/certificates/create/action"),
    ("certificates", "import", f"{V}/certificates/import/action"),
    ("certificates", "update", f"{V}/certificates/update/action"),
    ("certificates", "managecontacts", f"{V}/certificatecontacts/write"),
    ("certificates", "getissuers", f"{V}/certificatecas/read"),
    ("certificates", "listissuers", f"{V}/certificatecas/read"),
    ("certificates", "setissuers", f"{V}/certificatecas/write"),
    # GetCertificateIssuer(s): "requires the certificates/manageissuers/getissuers permission"
    ("certificates", "manageissuers", f"{V}/certificatecas/read"),
    ("certificates", "manageissuers", f"{V}/certificatecas/write"),
    ("certificates", "deleteissuers", f"{V}/certificatecas/delete"),
    ("certificates", "manageissuers", f"{V}/certificatecas/delete"),
    ("certificates", "recover", f"{V}/certificates/recover/action"),
    ("certificates", "purge", f"{V}/certificates/purge/action"),
    ("certificates", "backup", f"{V}/certificates/backup/action"),
    ("certificates", "restore", f"{V}/certificates/restore/action"),
]

TENANT = str(uuid.uuid4())


def _principal(oid: str | None = None, tenant: str = TENANT) -> Principal:
    return Principal(oid or str(uuid.uuid4()), tenant)


def _policies(p: Principal, **perms: list[str]) -> AccessPolicies:
    return AccessPolicies((AccessPolicyEntry.from_wire(
        {"tenantId": p.tenant_id, "objectId": p.object_id, "permissions": perms}),))


@pytest.mark.parametrize(("kind", "names"), [("keys", KEY_PERMISSIONS),
                                             ("secrets", SECRET_PERMISSIONS),
                                             ("certificates", CERTIFICATE_PERMISSIONS)])
def test_every_documented_permission_is_accepted_in_any_case(kind: str, names: list[str]) -> None:
    assert permission_names(kind, names) == tuple(names)
    assert permission_names(kind, [n.upper() for n in names]) == tuple(names)
    assert permission_names(kind, ["ALL", "all"]) == ("all",)


@pytest.mark.parametrize(("kind", "bad"), [("secrets", "wrapKey"), ("keys", "set"),
                                           ("secrets", "readMetadata"), ("keys", "getSecret"),
                                           ("certificates", "sign"), ("keys", ""),
                                           ("storage", "get")])
def test_unknown_permissions_are_refused(kind: str, bad: str) -> None:
    with pytest.raises(InvalidAccessPolicy):
        permission_names(kind, [bad])


def test_permission_lists_are_bounded_and_typed() -> None:
    with pytest.raises(InvalidAccessPolicy):
        permission_names("secrets", ["get"] * 65)
    with pytest.raises(InvalidAccessPolicy):
        permission_names("secrets", "get")  # type: ignore[arg-type]
    with pytest.raises(InvalidAccessPolicy):
        permission_names("secrets", [1])


@pytest.mark.parametrize(("kind", "permission", "data_action"), DOCUMENTED)
def test_a_permission_grants_its_documented_data_action(kind: str, permission: str,
                                                        data_action: str) -> None:
    p = _principal()
    assert _policies(p, **{kind: [permission]}).allows(p, data_action)
    assert (kind, permission) in granting(data_action)


@pytest.mark.parametrize(("kind", "permission", "data_action"), DOCUMENTED)
def test_a_permission_grants_nothing_else(kind: str, permission: str, data_action: str) -> None:
    p = _principal()
    policies = _policies(p, **{kind: [permission]})
    documented = {a for k, n, a in DOCUMENTED if (k, n) == (kind, permission)}
    for other in actions.ALL - documented:
        assert not policies.allows(p, other), (permission, other)


def test_all_grants_every_permission_of_its_kind_only() -> None:
    p = _principal()
    policies = _policies(p, secrets=["all"])
    for kind, _, data_action in DOCUMENTED:
        assert policies.allows(p, data_action) == (kind == "secrets"), data_action


# The REST reference: which permission each operation requires (hint = what is passed).
def test_secret_get_and_list_are_distinct() -> None:
    p = _principal()
    get_only = _policies(p, secrets=["get"])
    list_only = _policies(p, secrets=["list"])
    # GetSecret: secrets/get
    assert get_only.allows(p, actions.SECRETS_GET)
    assert not list_only.allows(p, actions.SECRETS_GET)
    # GetSecrets, GetSecretVersions, GetDeletedSecrets: secrets/list
    assert list_only.allows(p, actions.SECRETS_READ_METADATA, "list")
    assert not get_only.allows(p, actions.SECRETS_READ_METADATA, "list")
    # GetDeletedSecret: secrets/get (its data action is readMetadata)
    assert get_only.allows(p, actions.SECRETS_READ_METADATA, "get")
    assert not list_only.allows(p, actions.SECRETS_READ_METADATA, "get")
    # UpdateSecret: secrets/set
    assert _policies(p, secrets=["set"]).allows(p, actions.SECRETS_UPDATE)
    assert not get_only.allows(p, actions.SECRETS_UPDATE)


def test_key_get_and_list_are_distinct() -> None:
    p = _principal()
    get_only = _policies(p, keys=["get"])
    list_only = _policies(p, keys=["list"])
    assert get_only.allows(p, actions.KEYS_READ, "get")
    assert not get_only.allows(p, actions.KEYS_READ, "list")
    assert list_only.allows(p, actions.KEYS_READ, "list")
    assert not list_only.allows(p, actions.KEYS_READ, "get")
    assert not _policies(p, secrets=["get", "list"]).allows(p, actions.KEYS_READ, "get")


def test_manageissuers_covers_the_narrower_issuer_permissions() -> None:
    p = _principal()
    manage = _policies(p, certificates=["manageissuers"])
    assert manage.allows(p, actions.CERTIFICATE_CAS_READ, "getissuers")
    assert manage.allows(p, actions.CERTIFICATE_CAS_READ, "listissuers")
    assert not _policies(p, certificates=["listissuers"]).allows(
        p, actions.CERTIFICATE_CAS_READ, "getissuers")


def test_only_the_named_principal_in_its_tenant_is_allowed() -> None:
    p = _principal()
    policies = _policies(p, secrets=["all"])
    assert policies.allows(_principal(p.object_id.upper()), actions.SECRETS_GET)
    assert not policies.allows(_principal(), actions.SECRETS_GET)
    assert not policies.allows(_principal(p.object_id, str(uuid.uuid4())), actions.SECRETS_GET)
    assert not AccessPolicies().allows(p, actions.SECRETS_GET)


def test_actions_without_a_permission_are_denied() -> None:
    p = _principal()
    policies = _policies(p, keys=["all"], secrets=["all"], certificates=["all"])
    assert not policies.allows(p, actions.RNG)
    assert not policies.allows(p, "Microsoft.KeyVault/vaults/secrets/unknown/action")
    assert not policies.allows(p, actions.KEYS_READ, "sign")  # a hint from another action


def test_refusals_name_the_missing_permission() -> None:
    assert required(actions.SECRETS_GET) == "secrets get"
    assert required(actions.SECRETS_READ_METADATA, "list") == "secrets list"
    assert required(actions.SECRETS_UPDATE) == "secrets set"
    assert required(actions.KEYS_READ, "list") == "keys list"
    assert required(actions.KEYS_WRAP) == "keys wrapKey"
    assert required(actions.CERTIFICATE_CAS_READ, "getissuers") == "certificates getissuers"


def _body(**kw: object) -> dict[str, object]:
    return {"enableRbacAuthorization": False, **kw}


@pytest.mark.parametrize("body", [
    {"enableRbacAuthorization": "false"},
    {"accessPolicies": {}},
    {"accessPolicies": [{"tenantId": TENANT, "objectId": "not-a-guid"}]},
    {"accessPolicies": [{"tenantId": "x", "objectId": str(uuid.uuid4())}]},
    {"accessPolicies": [{"tenantId": TENANT, "objectId": str(uuid.uuid4()),
                         "permissions": {"secrets": ["get", "frob"]}}]},
    {"accessPolicies": [{"tenantId": TENANT, "objectId": str(uuid.uuid4()),
                         "permissions": {"secrets": "get"}}]},
    {"accessPolicies": [{"tenantId": TENANT, "objectId": str(uuid.uuid4())}
                        for _ in range(1025)]},
    {"networkAcls": {"defaultAction": "Block"}},
    {"networkAcls": {"bypass": "Everyone"}},
    {"networkAcls": {"ipRules": [{"value": "300.1.1.1"}]}},
    {"networkAcls": {"ipRules": [{"value": "10.0.0.1/8"}]}},
    {"networkAcls": {"ipRules": ["10.0.0.0/8"]}},
    {"networkAcls": {"ipRules": [{"value": f"10.0.{i // 256}.{i % 256}"}
                                 for i in range(1001)]}},
    {"networkAcls": {"virtualNetworkRules": [{"id": "/subscriptions/x"}]}},
])
def test_invalid_properties_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(BadParameter):
        VaultProperties.from_wire(body)


def test_properties_round_trip_in_arm_shape() -> None:
    oid = str(uuid.uuid4())
    body = _body(accessPolicies=[{"tenantId": TENANT, "objectId": oid,
                                  "permissions": {"keys": ["WRAPKEY"], "secrets": ["Get"]}}],
                 networkAcls={"defaultAction": "deny", "bypass": "None",
                              "ipRules": [{"value": "10.0.0.0/8"}, {"value": "2001:db8::1"}]})
    wire = VaultProperties.from_wire(body).to_wire()
    assert wire == {
        "enableRbacAuthorization": False,
        "accessPolicies": [{"tenantId": TENANT, "objectId": oid,
                            "permissions": {"keys": ["wrapKey"], "secrets": ["get"],
                                            "certificates": []}}],
        "networkAcls": {"defaultAction": "Deny", "bypass": "None",
                        "ipRules": [{"value": "10.0.0.0/8"}, {"value": "2001:db8::1/128"}],
                        "virtualNetworkRules": []},
    }
    assert VaultProperties.from_wire(wire).to_wire() == wire
    defaults = VaultProperties.from_wire({}).to_wire()
    assert defaults["enableRbacAuthorization"] is True
    assert defaults["networkAcls"]["defaultAction"] == "Allow"  # type: ignore[index]
