"""Typed requests of role management (rbac.json) and of the management API
(Microsoft.KeyVault: vaults, managed HSM pools), named after the specs' parameter models.

`api/` decodes the wire JSON into these (right JSON types; unknown fields dropped); the
services check what the values mean (a tenant that is this deployment's, a known SKU,
GUIDs, permission names, CIDR rules...). `None` is a field the client left out or sent
as null; `UNSET` (vault/requests.py) marks one where the difference matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openkeyvault.vault.requests import UNSET, Unset


# ---- role management (rbac.json) -------------------------------------------------------
@dataclass(frozen=True)
class RoleAssignmentCreate:
    """RoleAssignmentCreateParameters.properties (RoleAssignmentProperties)."""

    role_definition_id: str | None = None
    principal_id: str | None = None


@dataclass(frozen=True)
class RolePermission:
    """One entry of a role definition's permissions; None is an absent list."""

    actions: list[str] | None = None
    not_actions: list[str] | None = None
    data_actions: list[str] | None = None
    not_data_actions: list[str] | None = None


@dataclass(frozen=True)
class RoleDefinitionCreate:
    """RoleDefinitionCreateParameters.properties (RoleDefinitionProperties)."""

    role_name: str | None = None
    description: str | None = None
    type: str | None = None
    permissions: list[RolePermission] | None = None
    assignable_scopes: list[str] | None = None


# ---- access policies and network rules (Microsoft.KeyVault) ----------------------------
@dataclass(frozen=True)
class Permissions:
    """An access policy's permission lists by kind; None where the kind was left out."""

    keys: list[str] | None = None
    secrets: list[str] | None = None
    certificates: list[str] | None = None
    storage: list[str] | None = None  # accepted, not served


@dataclass(frozen=True)
class AccessPolicy:
    """AccessPolicyEntry: who (tenant, object) holds which permissions."""

    tenant_id: str | None = None
    object_id: str | None = None
    application_id: str | None = None
    permissions: Permissions = field(default_factory=Permissions)


@dataclass(frozen=True)
class NetworkRules:
    """NetworkRuleSet (and MHSMNetworkRuleSet): None keeps the default (Allow,
    AzureServices, no rules)."""

    bypass: str | None = None
    default_action: str | None = None
    ip_rules: list[str | None] = field(default_factory=list)  # each rule's `value`
    virtual_network_rules: int = 0  # how many were sent (none are supported)


@dataclass(frozen=True)
class Sku:
    family: str | None = None
    name: str | None = None


# ---- vaults ----------------------------------------------------------------------------
@dataclass(frozen=True)
class VaultSettings:
    """VaultProperties (PUT) or VaultPatchProperties (PATCH) as sent; None is not sent.
    The `enabledFor...` flags and `publicNetworkAccess` are accepted and not served."""

    tenant_id: str | None = None
    sku: Sku | None = None
    access_policies: list[AccessPolicy] | None = None
    enabled_for_deployment: bool | None = None
    enabled_for_disk_encryption: bool | None = None
    enabled_for_template_deployment: bool | None = None
    enable_soft_delete: bool | None = None
    soft_delete_retention_in_days: int | None = None
    enable_rbac_authorization: bool | None = None
    enable_purge_protection: bool | None = None
    network_acls: NetworkRules | None = None
    create_mode: str | None = None
    public_network_access: str | None = None


@dataclass(frozen=True)
class VaultCreateOrUpdate:
    """VaultCreateOrUpdateParameters: `properties` None when the body has none; tags
    UNSET when not sent (a recover keeps the vault's tags)."""

    location: str | None = None
    tags: dict[str, str] | None | Unset = UNSET
    properties: VaultSettings | None = None


@dataclass(frozen=True)
class VaultPatch:
    """VaultPatchParameters: tags UNSET keeps the vault's tags (null clears them)."""

    tags: dict[str, str] | None | Unset = UNSET
    properties: VaultSettings = field(default_factory=VaultSettings)


@dataclass(frozen=True)
class AccessPolicyUpdate:
    """VaultAccessPolicyParameters.properties.accessPolicies."""

    access_policies: list[AccessPolicy] | None = None


@dataclass(frozen=True)
class NameAvailability:
    """VaultCheckNameAvailabilityParameters / CheckMhsmNameAvailabilityParameters."""

    name: str
    type: str | None = None


# ---- managed HSM pools -----------------------------------------------------------------
@dataclass(frozen=True)
class ManagedHsmSettings:
    """ManagedHsmProperties as sent; None is not sent."""

    tenant_id: str | None = None
    initial_admin_object_ids: list[str] | None = None
    enable_soft_delete: bool | None = None
    soft_delete_retention_in_days: int | None = None
    enable_purge_protection: bool | None = None
    create_mode: str | None = None
    network_acls: NetworkRules | None = None
    public_network_access: str | None = None


@dataclass(frozen=True)
class ManagedHsmCreateOrUpdate:
    """ManagedHsm as PUT: `sku` sits beside `properties`."""

    location: str | None = None
    tags: dict[str, str] | None | Unset = UNSET
    sku: Sku | None = None
    properties: ManagedHsmSettings | None = None


@dataclass(frozen=True)
class ManagedHsmPatch:
    """ManagedHsm as PATCH: tags UNSET keeps the pool's tags."""

    tags: dict[str, str] | None | Unset = UNSET
    sku: Sku | None = None
    properties: ManagedHsmSettings = field(default_factory=ManagedHsmSettings)
