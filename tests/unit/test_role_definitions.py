"""Custom role definitions: validation, lookup next to the built-in roles, limits, and
decisions that follow a changed definition (real storage in a temporary directory)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from openkeyvault.access import actions as a
from openkeyvault.access.authorize import Scope
from openkeyvault.access.definitions import (
    MAX_CUSTOM_ROLES,
    RbacConflict,
    RbacError,
    RbacNotFound,
    guid_of,
    parse_assignable_scopes,
    parse_permissions,
)
from openkeyvault.access.principals import Principal
from openkeyvault.access.roles import Permission
from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment

V = "Microsoft.KeyVault/vaults"


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment.open(Settings(data_dir=tmp_path / "data"))
    yield d
    d.close()


def test_wildcards_must_match_a_known_action() -> None:
    assert parse_permissions([{"dataActions": [f"{V}/secrets/*", f"{V}/*/read"]}]) == (
        Permission(data_actions=(f"{V}/secrets/*", f"{V}/*/read")),)
    assert parse_permissions([{"actions": ["Microsoft.Authorization/*/read"]}])[0].actions == (
        "Microsoft.Authorization/*/read",)
    # spelled in another case, a known action is still known
    assert parse_permissions([{"dataActions": [a.SECRETS_GET.lower()]}])
    for bad in ([{"dataActions": [f"{V}/nothing/*"]}], [{"dataActions": ["*x*y*z"]}],
                [{"dataActions": [f"{V}/secrets/getSecret"]}],
                [{"actions": ["Microsoft.Authorization/roleAssignments/*/x"]}],
                [{"dataActions": [""]}], [{"dataActions": [7]}], [{"notDataActions": {}}],
                ["x"], [{}] * 11):
        with pytest.raises(RbacError):
            parse_permissions(bad)


def test_at_most_fifty_actions_in_all_entries() -> None:
    half = [{"dataActions": [a.SECRETS_GET] * 25}]
    assert len(parse_permissions(half * 2)) == 2
    with pytest.raises(RbacError):
        parse_permissions(half * 2 + [{"notDataActions": [a.SECRETS_SET]}])


def test_assignable_scopes_and_ids() -> None:
    assert parse_assignable_scopes(None) == ("/",)
    assert parse_assignable_scopes(["/keys/", "/keys", "/secrets/s1"]) == ("/keys",
                                                                          "/secrets/s1")
    for bad in (["/vaults/dev"], ["keys"], "/", ["/"] * 11, [3]):
        with pytest.raises(RbacError):
            parse_assignable_scopes(bad)
    guid = str(uuid.uuid4())
    assert guid_of(guid.upper()) == guid
    assert guid_of(f"Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{guid}"
                   ) == guid
    assert guid_of(f"/providers/Microsoft.Authorization/roleDefinitions/{guid}") == guid
    for bad in ("Key Vault Reader", f"{guid}x", f"/roleDefinitions/{guid}", "x" * 600):
        assert guid_of(bad) is None


def test_custom_roles_are_found_like_built_in_ones(deployment: Deployment) -> None:
    defs = deployment.rbac.definitions
    guid = str(uuid.uuid4())
    role, created = defs.set(guid, {"roleName": "Auditor", "permissions": [
        {"dataActions": [f"{V}/secrets/*"], "notDataActions": [a.SECRETS_GET]}]})
    assert created and not role.built_in
    assert defs.find("auditor") == defs.get(guid.upper()) == role
    assert defs.find("Key Vault Reader") is not None
    again, created = defs.set(guid, {"roleName": "Auditor 2"})
    assert not created and again.name == "Auditor 2" and again.data_actions == ()
    with pytest.raises(RbacConflict):
        defs.set(str(uuid.uuid4()), {"roleName": "AUDITOR 2"})
    with pytest.raises(RbacConflict):
        defs.set(str(uuid.uuid4()), {"roleName": "key vault reader"})
    with pytest.raises(RbacNotFound):
        defs.delete(str(uuid.uuid4()))
    defs.delete(guid)
    assert defs.get(guid) is None


def test_at_most_fifty_custom_roles(deployment: Deployment) -> None:
    defs = deployment.rbac.definitions
    guids = [str(uuid.uuid4()) for _ in range(MAX_CUSTOM_ROLES)]
    for i, g in enumerate(guids):
        defs.set(g, {"roleName": f"role {i}"})
    with pytest.raises(RbacError):
        defs.set(str(uuid.uuid4()), {"roleName": "one too many"})
    defs.set(guids[0], {"roleName": "an update is not a new role"})
    defs.delete(guids[1])
    defs.set(str(uuid.uuid4()), {"roleName": "room again"})
    assert len([r for r in defs.all() if not r.built_in]) == MAX_CUSTOM_ROLES


def test_decisions_follow_a_changed_definition(deployment: Deployment) -> None:
    record, _ = deployment.directory.create("custom-role-holder")
    principal = Principal(record.object_id, record.tenant_id)
    vault = deployment.vaults.create("custom")
    scope = Scope(vault.name, "/secrets/s")
    guid = str(uuid.uuid4())
    deployment.rbac.definitions.set(guid, {"permissions": [{"dataActions": [a.SECRETS_GET]}]})
    allowed = deployment.authorizer.allowed
    assert not allowed(principal, a.SECRETS_GET, scope)
    deployment.rbac.assign(record.object_id, guid, "/vaults/custom/secrets")
    assert allowed(principal, a.SECRETS_GET, scope)
    assert not allowed(principal, a.SECRETS_SET, scope)
    deployment.rbac.definitions.set(guid, {"permissions": [{"dataActions": [a.SECRETS_SET]}]})
    assert not allowed(principal, a.SECRETS_GET, scope)
    assert allowed(principal, a.SECRETS_SET, scope)
    with pytest.raises(RbacError):  # still assigned
        deployment.rbac.definitions.delete(guid)
