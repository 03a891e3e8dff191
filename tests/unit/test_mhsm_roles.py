"""Managed HSM local RBAC built-in roles: GUIDs, names and dataActions as Azure defines them.

Written out from Azure's role definitions (what the service returns for
`GET /providers/Microsoft.Authorization/roleDefinitions` on a Managed HSM, and the
Managed HSM built-in roles reference), not read from the service's own table.
"""

from __future__ import annotations

import pytest

from openkeyvault.access.roles import BUILT_IN, find, permits

H = "Microsoft.KeyVault/managedHsm"

ROLE_MANAGEMENT = (
    "roleAssignments/delete/action", "roleAssignments/read/action",
    "roleAssignments/write/action", "roleDefinitions/read/action",
    "roleDefinitions/write/action", "roleDefinitions/delete/action",
)

# GUID → (roleName, dataActions without the Microsoft.KeyVault/managedHsm/ prefix)
EXPECTED: dict[str, tuple[str, frozenset[str]]] = {
    "a290e904-7015-4bba-90c8-60543313cdb4": ("Managed HSM Administrator", frozenset({
        *ROLE_MANAGEMENT,
        "securitydomain/download/action", "securitydomain/download/read",
        "securitydomain/upload/action", "securitydomain/upload/read",
        "securitydomain/transferkey/read",
        "backup/start/action", "backup/status/action",
        "restore/start/action", "restore/status/action"})),
    "515eb02d-2335-4d2d-92f2-b1cbdf9c3778": ("Managed HSM Crypto Officer", frozenset({
        *ROLE_MANAGEMENT,
        "keys/deletedKeys/read/action", "keys/deletedKeys/delete",
        "keys/deletedKeys/recover/action", "keys/export/action"})),
    # The service's list (2021) predates key rotation on Managed HSM; the built-in roles
    # reference adds keys/rotate/action. rng/action is the service's (the reference omits it).
    "21dbd100-6940-42c2-9190-5d6cb909625b": ("Managed HSM Crypto User", frozenset({
        "roleDefinitions/read/action", "roleAssignments/read/action",
        "keys/read/action", "keys/write/action", "keys/delete", "keys/create",
        "keys/import/action", "keys/release/action", "keys/backup/action",
        "keys/restore/action", "keys/encrypt/action", "keys/decrypt/action",
        "keys/wrap/action", "keys/unwrap/action", "keys/sign/action", "keys/verify/action",
        "keys/rotate/action", "rng/action"})),
    "4bd23610-cdcf-4971-bdee-bdc562cc28e4": ("Managed HSM Policy Administrator",
                                             frozenset(ROLE_MANAGEMENT)),
    "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3": ("Managed HSM Crypto Auditor", frozenset({
        "roleAssignments/read/action", "roleDefinitions/read/action",
        "keys/read/action", "keys/deletedKeys/read/action"})),
    "33413926-3206-4cdd-b39a-83574fe37a17": ("Managed HSM Crypto Service Encryption User",
                                             frozenset({"keys/read/action", "keys/wrap/action",
                                                        "keys/unwrap/action"})),
    "21dbd100-6940-42c2-9190-5d6cb909625c": ("Managed HSM Crypto Service Release User",
                                             frozenset({"keys/release/action"})),
    "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8": ("Managed HSM Backup User", frozenset({
        "backup/start/action", "backup/status/action", "keys/backup/action"})),
    "6efe6056-5259-49d2-8b3d-d3d73544b20b": ("Managed HSM Restore", frozenset({
        "keys/restore/action", "restore/start/action", "restore/status/action"})),
}


@pytest.mark.parametrize("guid", sorted(EXPECTED), ids=[EXPECTED[g][0] for g in sorted(EXPECTED)])
def test_managed_hsm_role(guid: str) -> None:
    name, data_actions = EXPECTED[guid]
    role = find(guid)
    assert role is not None, name
    assert role.name == name
    assert find(name) is role
    assert set(role.data_actions) == {f"{H}/{a}" for a in data_actions}
    assert role.not_data_actions == ()


def test_the_managed_hsm_roles_are_exactly_azures() -> None:
    hsm = {r.id for r in BUILT_IN if any(a.startswith(f"{H}/") for a in r.data_actions)}
    assert hsm == set(EXPECTED)


@pytest.mark.parametrize("guid", sorted(EXPECTED), ids=[EXPECTED[g][0] for g in sorted(EXPECTED)])
def test_managed_hsm_roles_grant_nothing_in_a_vault(guid: str) -> None:
    role = find(guid)
    assert role is not None
    for action in ("Microsoft.KeyVault/vaults/keys/read",
                   "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                   "Microsoft.KeyVault/vaults/keys/sign/action",
                   "Microsoft.KeyVault/vaults/rng/action"):
        assert not permits(role, action), (role.name, action)


def test_data_actions_are_matched_exactly() -> None:
    auditor = find("Managed HSM Crypto Auditor")
    user = find("Managed HSM Crypto User")
    assert auditor is not None and user is not None
    assert permits(auditor, f"{H}/keys/deletedKeys/read/action")
    assert not permits(auditor, f"{H}/keys/deletedKeys/delete")
    assert not permits(auditor, f"{H}/keys/sign/action")
    assert permits(user, f"{H}/keys/sign/action")
    assert not permits(user, f"{H}/keys/deletedKeys/delete")  # purge needs Crypto Officer
    assert not permits(user, f"{H}/keys/export/action")
