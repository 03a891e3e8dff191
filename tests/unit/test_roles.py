"""Built-in roles and the authorization decision.

The expected decisions are written from Azure's published role definitions
(data actions per role), not derived from the implementation's table.
"""

from __future__ import annotations

import pytest

from openkeyvault.access import actions as a
from openkeyvault.access.authorize import Authorizer, RoleAssignment, Scope
from openkeyvault.access.principals import Principal
from openkeyvault.access.roles import BUILT_IN, find, matches, permits

V = "Microsoft.KeyVault/vaults"

# role name → (data actions it must grant, data actions it must not)
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "Key Vault Administrator": (
        [a.SECRETS_GET, a.SECRETS_SET, a.SECRETS_PURGE, a.KEYS_SIGN, a.KEYS_CREATE,
         a.KEY_ROTATION_POLICIES_WRITE, a.RNG], []),
    "Key Vault Secrets Officer": (
        [a.SECRETS_GET, a.SECRETS_SET, a.SECRETS_DELETE, a.SECRETS_PURGE, a.SECRETS_BACKUP,
         a.SECRETS_RESTORE, a.SECRETS_READ_METADATA],
        [a.KEYS_READ, a.KEYS_SIGN, a.KEYS_CREATE]),
    "Key Vault Secrets User": (
        [a.SECRETS_GET, a.SECRETS_READ_METADATA],
        [a.SECRETS_SET, a.SECRETS_DELETE, a.SECRETS_UPDATE, a.SECRETS_BACKUP, a.KEYS_READ]),
    "Key Vault Reader": (
        [a.SECRETS_READ_METADATA, a.KEYS_READ, a.KEY_ROTATION_POLICIES_READ],
        [a.SECRETS_GET, a.SECRETS_SET, a.KEYS_SIGN, a.KEYS_DECRYPT, a.KEY_ROTATION_POLICIES_WRITE]),
    "Key Vault Crypto Officer": (
        [a.KEYS_CREATE, a.KEYS_IMPORT, a.KEYS_DELETE, a.KEYS_PURGE, a.KEYS_SIGN, a.KEYS_ROTATE,
         a.KEY_ROTATION_POLICIES_READ, a.KEY_ROTATION_POLICIES_WRITE],
        [a.SECRETS_GET, a.SECRETS_READ_METADATA]),
    "Key Vault Crypto User": (
        [a.KEYS_READ, a.KEYS_UPDATE, a.KEYS_BACKUP, a.KEYS_ENCRYPT, a.KEYS_DECRYPT, a.KEYS_WRAP,
         a.KEYS_UNWRAP, a.KEYS_SIGN, a.KEYS_VERIFY],
        [a.KEYS_CREATE, a.KEYS_DELETE, a.KEYS_PURGE, a.KEYS_ROTATE, a.KEYS_RESTORE,
         a.SECRETS_GET]),
    "Key Vault Crypto Service Encryption User": (
        [a.KEYS_READ, a.KEYS_WRAP, a.KEYS_UNWRAP],
        [a.KEYS_SIGN, a.KEYS_ENCRYPT, a.KEYS_DECRYPT, a.KEYS_CREATE]),
    "Key Vault Crypto Service Release User": ([f"{V}/keys/release/action"], [a.KEYS_READ]),
    "Key Vault Certificate User": (
        [a.SECRETS_GET, a.SECRETS_READ_METADATA, a.KEYS_READ, f"{V}/certificates/read"],
        [a.SECRETS_SET, a.KEYS_SIGN, f"{V}/certificates/create/action"]),
    "Key Vault Certificates Officer": (
        [f"{V}/certificates/create/action", f"{V}/certificates/purge/action",
         f"{V}/certificatecas/write", f"{V}/certificatecontacts/write"],
        [a.SECRETS_GET, a.KEYS_SIGN]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_built_in_role_grants(name: str) -> None:
    role = find(name)
    assert role is not None
    granted, refused = EXPECTED[name]
    for action in granted:
        assert permits(role, action), (name, action)
    for action in refused:
        assert not permits(role, action), (name, action)


def test_roles_are_found_by_guid_id_and_name() -> None:
    admin = find("Key Vault Administrator")
    assert admin is not None and admin.id == "00482a5a-887f-4fb3-b363-3b7fe8e74483"
    assert find("00482a5a-887f-4fb3-b363-3b7fe8e74483") is admin
    assert find("/providers/Microsoft.Authorization/roleDefinitions/"
                "4633458b-17de-408a-b874-0445c86b69e6").name == "Key Vault Secrets User"
    assert find("key vault secrets user") is not None
    assert find("Owner").id == "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
    assert len({r.id for r in BUILT_IN}) == len(BUILT_IN)


def test_wildcards_are_case_insensitive_and_span_segments() -> None:
    assert matches(f"{V}/*", a.SECRETS_GET)
    assert matches(f"{V}/*/read", a.KEYS_READ)
    assert not matches(f"{V}/*/read", a.SECRETS_GET)
    assert matches(f"{V.lower()}/secrets/*", a.SECRETS_SET)
    assert not matches(f"{V}/secrets/*", "Microsoft.KeyVault/vaultsX/secrets/x")


def _principal(oid: str = "p1") -> Principal:
    return Principal(oid, "t")


@pytest.mark.parametrize(("scope", "vault", "path", "allowed"), [
    ("/", "dev", "/secrets/a", True),
    ("/vaults/dev", "dev", "/secrets/a", True),
    ("/vaults/dev", "other", "/secrets/a", False),
    ("/vaults/dev/secrets", "dev", "/secrets/a", True),
    ("/vaults/dev/secrets", "dev", "/secrets", True),
    ("/vaults/dev/keys", "dev", "/secrets/a", False),
    ("/vaults/dev/secrets/a", "dev", "/secrets/a", True),
    ("/vaults/dev/secrets/a", "dev", "/secrets/ab", False),
    ("/vaults/dev/secrets/a", "dev", "/secrets", False),
    ("/VAULTS/Dev/Secrets/A", "dev", "/secrets/a", True),
])
def test_assignment_scopes(scope: str, vault: str, path: str, allowed: bool) -> None:
    role = find("Key Vault Secrets User")
    assert role is not None
    authz = Authorizer.static([RoleAssignment("p1", role, scope)])
    assert authz.allowed(_principal(), a.SECRETS_GET, Scope(vault, path)) is allowed


def test_deny_by_default() -> None:
    role = find("Key Vault Administrator")
    assert role is not None
    authz = Authorizer.static([RoleAssignment("p1", role, "/")])
    assert not authz.allowed(_principal("someone-else"), a.SECRETS_GET, Scope("dev", "/"))
    assert not Authorizer.static().allowed(_principal(), a.SECRETS_GET, Scope("dev", "/"))
    # an action the service does not know is never granted, even by a wildcard
    assert not authz.allowed(_principal(), f"{V}/made-up/action", Scope("dev", "/"))


# ---- role management: control-plane actions and assignment conditions -------------------

A = "Microsoft.Authorization"
DATA_ACCESS_ADMINISTRATOR = "8b54135c-b56d-4d72-a534-26097cfdc8d8"
# The eight roles Azure's condition lets Key Vault Data Access Administrator assign.
EIGHT = {
    "00482a5a-887f-4fb3-b363-3b7fe8e74483", "a4417e6f-fecd-4de8-b567-7b0420556985",
    "14b46e9e-c2b7-41b4-b07b-48a6ebf60603", "e147488a-f6f5-4113-8e2d-b22465e65bf6",
    "12338af0-0e69-4776-bea7-57ae8d297424", "21090545-7ca7-4776-b22c-e363652d74d2",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "4633458b-17de-408a-b874-0445c86b69e6",
}


@pytest.mark.parametrize(("name", "read", "write"), [
    ("Key Vault Administrator", True, True),
    ("Key Vault Data Access Administrator", True, True),
    ("Key Vault Reader", True, False),
    ("Key Vault Secrets Officer", True, False),
    ("Key Vault Crypto Officer", True, False),
    ("Key Vault Secrets User", False, False),
    ("Key Vault Crypto User", False, False),
])
def test_role_management_comes_from_actions(name: str, read: bool, write: bool) -> None:
    role = find(name)
    assert role is not None
    assert permits(role, a.ROLE_ASSIGNMENTS_READ) is read
    assert permits(role, a.ROLE_DEFINITIONS_READ) is read
    assert permits(role, a.ROLE_ASSIGNMENTS_WRITE) is write
    assert permits(role, a.ROLE_ASSIGNMENTS_DELETE) is write
    # a data-action wildcard never grants a control-plane action
    assert not any(p.startswith(A) for p in role.data_actions)


def test_data_access_administrator_holds_no_data_action() -> None:
    role = find(DATA_ACCESS_ADMINISTRATOR)
    assert role is not None and role.name == "Key Vault Data Access Administrator"
    assert role.data_actions == ()
    for action in (a.SECRETS_GET, a.SECRETS_READ_METADATA, a.KEYS_READ, a.KEYS_SIGN):
        assert not permits(role, action)
    assert not permits(role, a.ROLE_DEFINITIONS_WRITE)
    assert role.assignable_roles == EIGHT


def test_assignment_condition_limits_the_roles_assigned() -> None:
    daa, admin = find(DATA_ACCESS_ADMINISTRATOR), find("Key Vault Administrator")
    assert daa is not None and admin is not None
    p = _principal()
    authz = Authorizer.static([RoleAssignment("p1", daa, "/vaults/dev")])
    for guid in EIGHT:
        assert authz.allowed_at(p, a.ROLE_ASSIGNMENTS_WRITE, "/vaults/dev/keys", assigning=guid)
    for other in (DATA_ACCESS_ADMINISTRATOR, "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
                  "a290e904-7015-4bba-90c8-60543313cdb4"):
        assert not authz.allowed_at(p, a.ROLE_ASSIGNMENTS_WRITE, "/vaults/dev", assigning=other)
    # at the deployment or another vault it holds nothing
    assert not authz.allowed_at(p, a.ROLE_ASSIGNMENTS_WRITE, "/", assigning=next(iter(EIGHT)))
    assert not authz.allowed_at(p, a.ROLE_ASSIGNMENTS_READ, "/vaults/other")
    unconditioned = Authorizer.static([RoleAssignment("p1", admin, "/vaults/dev")])
    assert unconditioned.allowed_at(p, a.ROLE_ASSIGNMENTS_WRITE, "/vaults/dev",
                                    assigning=DATA_ACCESS_ADMINISTRATOR)


def test_managed_hsm_role_management_is_data_actions() -> None:
    hsm_admin = find("Managed HSM Administrator")
    auditor = find("Managed HSM Crypto Auditor")
    assert hsm_admin is not None and auditor is not None
    assert hsm_admin.kind == auditor.kind == "managedhsm"
    assert a.ROLE_MANAGEMENT[("managedhsm", "roleAssignments", "write")] == \
        "Microsoft.KeyVault/managedHsm/roleAssignments/write/action"
    for verb in ("read", "write", "delete"):
        for what in ("roleAssignments", "roleDefinitions"):
            assert permits(hsm_admin, a.ROLE_MANAGEMENT[("managedhsm", what, verb)])
    assert permits(auditor, a.HSM_ROLE_ASSIGNMENTS_READ)
    assert not permits(auditor, a.HSM_ROLE_ASSIGNMENTS_WRITE)
    assert a.ROLE_MANAGEMENT[("vault", "roleDefinitions", "write")] == f"{A}/roleDefinitions/write"
    assert a.CONTROL.isdisjoint(a.DATA)
