"""Azure's built-in roles for Key Vault and Managed HSM, as data (one home): the data-plane
roles, and the control-plane roles that manage vaults (Owner, Contributor, Reader, Key Vault
Contributor: `actions` only, no data access).

GUIDs, data actions and the `Microsoft.Authorization/*` part of `actions` are
Azure's own (ROLES, azure-behavior.md §3.1), with one deliberate difference:
Key Vault Administrator also holds `Microsoft.Authorization/roleAssignments/
{write,delete}` and `roleDefinitions/{write,delete}`, because a self-hosted
deployment has no Owner or User Access Administrator above its vaults.

`permits` evaluates a role against an action with Azure's wildcard rules (`*`
matches any run of characters, case-insensitive): a data action against
`dataActions` minus `notDataActions`, a control-plane action (role management)
against `actions` minus `notActions`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from openkeyvault.access.actions import CONTROL

_V = "Microsoft.KeyVault/vaults"
_H = "Microsoft.KeyVault/managedHsm"
_A = "Microsoft.Authorization"


@dataclass(frozen=True)
class Permission:
    """One entry of a role's `permissions` (the wire's Permission)."""

    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoleDefinition:
    id: str  # GUID
    name: str
    description: str
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...] = ()
    built_in: bool = True
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    # Azure's ABAC condition on role management: when set, the role's roleAssignments
    # write/delete apply only to assignments of these role definitions (GUIDs).
    assignable_roles: frozenset[str] | None = None
    assignable_scopes: tuple[str, ...] = ("/",)
    # A custom role's permission entries as given; the flat fields above hold their union,
    # which `permits` reads (an exclusion in one entry then applies to all: never more).
    entries: tuple[Permission, ...] = ()
    # A custom role made on a managed HSM pool belongs to that pool (its lower-case name):
    # it is listed, assigned, changed and deleted there only. None: the deployment's.
    owner: str | None = None

    @property
    def permissions(self) -> tuple[Permission, ...]:
        return self.entries or (Permission(self.actions, self.not_actions, self.data_actions,
                                           self.not_data_actions),)

    @property
    def kind(self) -> str:
        """"managedhsm" for Managed HSM roles, "vault" for the rest."""
        return "managedhsm" if any(a.startswith(_H) for a in self.data_actions) else "vault"


def _vault(*actions: str) -> tuple[str, ...]:
    return tuple(f"{_V}/{a}" for a in actions)


def _hsm(*actions: str) -> tuple[str, ...]:
    return tuple(f"{_H}/{a}" for a in actions)


# Azure's common control-plane actions of the officer, administrator and reader roles.
STD_ACTIONS = (
    f"{_A}/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read", "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read", f"{_V}/*/read", "Microsoft.KeyVault/operations/read",
)
ROLE_MANAGER_ACTIONS = (
    f"{_A}/roleAssignments/write", f"{_A}/roleAssignments/delete",
    f"{_A}/roleDefinitions/write", f"{_A}/roleDefinitions/delete",
)
# The roles Key Vault Data Access Administrator may assign and unassign (Azure's condition).
DATA_ACCESS_ASSIGNABLE = frozenset({
    "00482a5a-887f-4fb3-b363-3b7fe8e74483",  # Key Vault Administrator
    "a4417e6f-fecd-4de8-b567-7b0420556985",  # Key Vault Certificates Officer
    "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",  # Key Vault Crypto Officer
    "e147488a-f6f5-4113-8e2d-b22465e65bf6",  # Key Vault Crypto Service Encryption User
    "12338af0-0e69-4776-bea7-57ae8d297424",  # Key Vault Crypto User
    "21090545-7ca7-4776-b22c-e363652d74d2",  # Key Vault Reader
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",  # Key Vault Secrets Officer
    "4633458b-17de-408a-b874-0445c86b69e6",  # Key Vault Secrets User
})

BUILT_IN: tuple[RoleDefinition, ...] = (
    RoleDefinition("00482a5a-887f-4fb3-b363-3b7fe8e74483", "Key Vault Administrator",
                   "Perform all data plane operations on a key vault and all objects in it.",
                   (f"{_V}/*",), actions=STD_ACTIONS + ROLE_MANAGER_ACTIONS),
    RoleDefinition("a4417e6f-fecd-4de8-b567-7b0420556985", "Key Vault Certificates Officer",
                   "Perform any action on the certificates of a key vault.",
                   _vault("certificatecas/*", "certificates/*", "certificatecontacts/write"),
                   actions=STD_ACTIONS),
    RoleDefinition("db79e9a7-68ee-4b58-9aeb-b90e7c24fcba", "Key Vault Certificate User",
                   "Read entire certificate contents including secret and key portion.",
                   _vault("certificates/read", "secrets/getSecret/action",
                          "secrets/readMetadata/action", "keys/read")),
    RoleDefinition("14b46e9e-c2b7-41b4-b07b-48a6ebf60603", "Key Vault Crypto Officer",
                   "Perform any action on the keys of a key vault.",
                   _vault("keys/*", "keyrotationpolicies/*"), actions=STD_ACTIONS),
    RoleDefinition("e147488a-f6f5-4113-8e2d-b22465e65bf6",
                   "Key Vault Crypto Service Encryption User",
                   "Read metadata of keys and perform wrap/unwrap operations.",
                   _vault("keys/read", "keys/wrap/action", "keys/unwrap/action"),
                   actions=tuple(f"Microsoft.EventGrid/eventSubscriptions/{v}"
                                 for v in ("write", "read", "delete"))),
    RoleDefinition("08bbd89e-9f13-488c-ac41-acfcb10c90ab", "Key Vault Crypto Service Release User",
                   "Release keys.", _vault("keys/release/action")),
    RoleDefinition("12338af0-0e69-4776-bea7-57ae8d297424", "Key Vault Crypto User",
                   "Perform cryptographic operations using keys.",
                   _vault("keys/read", "keys/update/action", "keys/backup/action",
                          "keys/encrypt/action", "keys/decrypt/action", "keys/wrap/action",
                          "keys/unwrap/action", "keys/sign/action", "keys/verify/action")),
    RoleDefinition("21090545-7ca7-4776-b22c-e363652d74d2", "Key Vault Reader",
                   "Read metadata of key vaults and its certificates, keys, and secrets.",
                   _vault("*/read", "secrets/readMetadata/action"), actions=STD_ACTIONS),
    RoleDefinition("b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "Key Vault Secrets Officer",
                   "Perform any action on the secrets of a key vault.", _vault("secrets/*"),
                   actions=STD_ACTIONS),
    RoleDefinition("4633458b-17de-408a-b874-0445c86b69e6", "Key Vault Secrets User",
                   "Read secret contents.",
                   _vault("secrets/getSecret/action", "secrets/readMetadata/action")),
    RoleDefinition("8b54135c-b56d-4d72-a534-26097cfdc8d8", "Key Vault Data Access Administrator",
                   "Manage access to Azure Key Vault by adding or removing role assignments for "
                   "the Key Vault Administrator, Key Vault Certificates Officer, Key Vault Crypto "
                   "Officer, Key Vault Crypto Service Encryption User, Key Vault Crypto User, Key "
                   "Vault Reader, Key Vault Secrets Officer, or Key Vault Secrets User roles.",
                   (), actions=(f"{_A}/roleAssignments/write", f"{_A}/roleAssignments/delete",
                                f"{_A}/*/read", "Microsoft.Resources/deployments/*",
                                "Microsoft.Resources/subscriptions/resourceGroups/read",
                                "Microsoft.Resources/subscriptions/read",
                                "Microsoft.Management/managementGroups/read",
                                "Microsoft.Support/*", f"{_V}/*/read"),
                   assignable_roles=DATA_ACCESS_ASSIGNABLE),
    # Azure's control-plane roles: vaults as ARM resources (access/control.py decides with
    # them). No dataActions, so they grant no access to keys, secrets or certificates.
    RoleDefinition("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner",
                   "Grants full access to manage all resources, including the ability to assign "
                   "roles in Azure RBAC.", (), actions=("*",)),
    RoleDefinition("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor",
                   "Grants full access to manage all resources, but does not allow you to "
                   "assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share "
                   "image galleries.", (), actions=("*",),
                   not_actions=(f"{_A}/*/Delete", f"{_A}/*/Write", f"{_A}/elevateAccess/Action",
                                "Microsoft.Blueprint/blueprintAssignments/write",
                                "Microsoft.Blueprint/blueprintAssignments/delete",
                                "Microsoft.Compute/galleries/share/action",
                                "Microsoft.Purview/consents/write",
                                "Microsoft.Purview/consents/delete",
                                "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
                                "Microsoft.Subscription/cancel/action",
                                "Microsoft.Subscription/enable/action")),
    RoleDefinition("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader",
                   "View all resources, but does not allow you to make any changes.", (),
                   actions=("*/read",)),
    RoleDefinition("f25e0fa2-a7c8-4377-a976-54943a77a395", "Key Vault Contributor",
                   "Manage key vaults, but does not allow you to assign roles in Azure RBAC, "
                   "and does not allow you to access secrets, keys, or certificates.", (),
                   actions=(f"{_A}/*/read", "Microsoft.Insights/alertRules/*",
                            "Microsoft.KeyVault/*", "Microsoft.Resources/deployments/*",
                            "Microsoft.Resources/subscriptions/resourceGroups/read",
                            "Microsoft.Support/*"),
                   not_actions=("Microsoft.KeyVault/locations/deletedVaults/purge/action",
                                "Microsoft.KeyVault/hsmPools/*",
                                "Microsoft.KeyVault/managedHsms/*")),
    # Managed HSM local roles
    RoleDefinition("a290e904-7015-4bba-90c8-60543313cdb4", "Managed HSM Administrator",
                   "Manage security domain, full backup and restore, and role management.",
                   _hsm("roleAssignments/delete/action", "roleAssignments/read/action",
                        "roleAssignments/write/action", "roleDefinitions/read/action",
                        "roleDefinitions/write/action", "roleDefinitions/delete/action",
                        "securitydomain/download/action", "securitydomain/download/read",
                        "securitydomain/upload/action", "securitydomain/upload/read",
                        "securitydomain/transferkey/read", "backup/start/action",
                        "backup/status/action", "restore/start/action",
                        "restore/status/action")),
    RoleDefinition("515eb02d-2335-4d2d-92f2-b1cbdf9c3778", "Managed HSM Crypto Officer",
                   "Manage keys' deleted state and role assignments.",
                   _hsm("roleAssignments/delete/action", "roleAssignments/read/action",
                        "roleAssignments/write/action", "roleDefinitions/read/action",
                        "roleDefinitions/write/action", "roleDefinitions/delete/action",
                        "keys/deletedKeys/read/action", "keys/deletedKeys/delete",
                        "keys/deletedKeys/recover/action", "keys/export/action")),
    RoleDefinition("21dbd100-6940-42c2-9190-5d6cb909625b", "Managed HSM Crypto User",
                   "Perform key management and cryptographic operations.",
                   _hsm("roleDefinitions/read/action", "roleAssignments/read/action",
                        "keys/read/action", "keys/write/action", "keys/delete", "keys/create",
                        "keys/import/action", "keys/release/action", "keys/backup/action",
                        "keys/restore/action", "keys/encrypt/action", "keys/decrypt/action",
                        "keys/wrap/action", "keys/unwrap/action", "keys/sign/action",
                        "keys/verify/action", "keys/rotate/action", "rng/action")),
    RoleDefinition("4bd23610-cdcf-4971-bdee-bdc562cc28e4", "Managed HSM Policy Administrator",
                   "Create and delete role assignments.",
                   _hsm("roleDefinitions/read/action", "roleDefinitions/write/action",
                        "roleDefinitions/delete/action", "roleAssignments/read/action",
                        "roleAssignments/write/action", "roleAssignments/delete/action")),
    RoleDefinition("2c18b078-7c48-4d3a-af88-5a3a1b3f82b3", "Managed HSM Crypto Auditor",
                   "Read key metadata and role assignments.",
                   _hsm("roleAssignments/read/action", "roleDefinitions/read/action",
                        "keys/read/action", "keys/deletedKeys/read/action")),
    RoleDefinition("33413926-3206-4cdd-b39a-83574fe37a17",
                   "Managed HSM Crypto Service Encryption User",
                   "Read key metadata and wrap/unwrap keys.",
                   _hsm("keys/read/action", "keys/wrap/action", "keys/unwrap/action")),
    RoleDefinition("21dbd100-6940-42c2-9190-5d6cb909625c",
                   "Managed HSM Crypto Service Release User", "Release keys.",
                   _hsm("keys/release/action")),
    RoleDefinition("7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8", "Managed HSM Backup User",
                   "Perform full HSM or key backups.",
                   _hsm("backup/start/action", "backup/status/action", "keys/backup/action")),
    RoleDefinition("6efe6056-5259-49d2-8b3d-d3d73544b20b", "Managed HSM Restore",
                   "Perform full HSM or key restores.",
                   _hsm("keys/restore/action", "restore/start/action", "restore/status/action")),
)

BY_ID = {r.id: r for r in BUILT_IN}
BY_NAME = {r.name.lower(): r for r in BUILT_IN}
KEY_VAULT_ADMINISTRATOR = BY_NAME["key vault administrator"]
MANAGED_HSM_ADMINISTRATOR = BY_NAME["managed hsm administrator"]
OWNER = BY_NAME["owner"]


@functools.lru_cache(maxsize=1024)
def _pattern(action: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in action.split("*")) + "$",
                      re.IGNORECASE)


def matches(pattern: str, data_action: str) -> bool:
    return _pattern(pattern).match(data_action) is not None


@functools.lru_cache(maxsize=8192)
def permits(role: RoleDefinition, action: str) -> bool:
    """True if the role grants `action` and no exclusion takes it back: a data action through
    `dataActions`/`notDataActions`, a control-plane action through `actions`/`notActions`."""
    granted, excluded = ((role.actions, role.not_actions) if action in CONTROL
                         else (role.data_actions, role.not_data_actions))
    return any(matches(p, action) for p in granted) and not any(
        matches(p, action) for p in excluded
    )


def find(role: str) -> RoleDefinition | None:
    """A built-in role by GUID, `.../roleDefinitions/GUID` id, or name (case-insensitive)."""
    key = role.rsplit("/", 1)[-1]
    return BY_ID.get(key.lower()) or BY_NAME.get(role.lower())
