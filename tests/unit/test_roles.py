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
    assert find("Owner") is None
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
