"""Management API request bodies (Microsoft.KeyVault: vaults and managed HSM pools), as
azure-mgmt-keyvault's models name them.

Every field is optional here: what a field's value means, and whether the service needs
it (tenantId, sku, location on a PUT), the services check, with ARM's own codes
(InvalidTenantId, LocationRequired...). Only the JSON types are checked at decoding.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from openkeyvault.api.models.wire import INT32_MAX, UNSET, Int32, Model, Tags, UnsetType, present
from openkeyvault.vault import controlrequests as c
from openkeyvault.vault.errors import BadParameter

_Strings = list[str]
# ARM takes a number written as a JSON string where it wants an integer (the Azure CLI
# sends the managed HSM's softDeleteRetentionInDays as "7").
_IntText = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,10}$")]


def _int(value: int | str | None) -> int | None:
    if isinstance(value, str):
        number = int(value)
        if number > INT32_MAX:
            raise BadParameter(f"The value {value} is out of range.")
        return number
    return value


class Permissions(Model, frozen=True):
    keys: _Strings | None = None
    secrets: _Strings | None = None
    certificates: _Strings | None = None
    storage: _Strings | None = None

    def to_request(self) -> c.Permissions:
        return c.Permissions(self.keys, self.secrets, self.certificates, self.storage)


class AccessPolicyEntry(Model, frozen=True, rename="camel"):
    tenant_id: str | None = None
    object_id: str | None = None
    application_id: str | None = None
    permissions: Permissions | None = None

    def to_request(self) -> c.AccessPolicy:
        perms = self.permissions.to_request() if self.permissions else c.Permissions()
        return c.AccessPolicy(self.tenant_id, self.object_id, self.application_id, perms)


def _policies(entries: list[AccessPolicyEntry] | None) -> list[c.AccessPolicy] | None:
    return None if entries is None else [e.to_request() for e in entries]


class IPRule(Model, frozen=True):
    value: str | None = None


class VirtualNetworkRule(Model, frozen=True, rename="camel"):
    id: str | None = None
    ignore_missing_vnet_service_endpoint: bool | None = None


class NetworkRuleSet(Model, frozen=True, rename="camel"):
    """NetworkRuleSet and MHSMNetworkRuleSet (serviceTags is not served: ignored)."""

    bypass: str | None = None
    default_action: str | None = None
    ip_rules: list[IPRule] | None = None
    virtual_network_rules: list[VirtualNetworkRule] | None = None

    def to_request(self) -> c.NetworkRules:
        return c.NetworkRules(self.bypass, self.default_action,
                              [r.value for r in self.ip_rules or []],
                              len(self.virtual_network_rules or []))


def _acls(n: NetworkRuleSet | None) -> c.NetworkRules | None:
    return n.to_request() if n is not None else None


class Sku(Model, frozen=True):
    """Sku (family A) and ManagedHsmSku (family B)."""

    family: str | None = None
    name: str | None = None

    def to_request(self) -> c.Sku:
        return c.Sku(self.family, self.name)


def _sku(s: Sku | None) -> c.Sku | None:
    return s.to_request() if s is not None else None


class VaultProperties(Model, frozen=True, rename="camel"):
    """VaultProperties (PUT) and VaultPatchProperties (PATCH) share these fields;
    vaultUri, provisioningState... are read-only and ignored when sent."""

    tenant_id: str | None = None
    sku: Sku | None = None
    access_policies: list[AccessPolicyEntry] | None = None
    enabled_for_deployment: bool | None = None
    enabled_for_disk_encryption: bool | None = None
    enabled_for_template_deployment: bool | None = None
    enable_soft_delete: bool | None = None
    soft_delete_retention_in_days: Int32 | None = None
    enable_rbac_authorization: bool | None = None
    enable_purge_protection: bool | None = None
    network_acls: NetworkRuleSet | None = None
    create_mode: str | None = None
    public_network_access: str | None = None

    def to_request(self) -> c.VaultSettings:
        return c.VaultSettings(
            self.tenant_id, _sku(self.sku), _policies(self.access_policies),
            self.enabled_for_deployment, self.enabled_for_disk_encryption,
            self.enabled_for_template_deployment, self.enable_soft_delete,
            self.soft_delete_retention_in_days, self.enable_rbac_authorization,
            self.enable_purge_protection, _acls(self.network_acls), self.create_mode,
            self.public_network_access)


class VaultCreateOrUpdateParameters(Model, frozen=True):
    location: str | None = None
    tags: Tags | None | UnsetType = UNSET
    properties: VaultProperties | None = None

    def to_request(self) -> c.VaultCreateOrUpdate:
        return c.VaultCreateOrUpdate(self.location, present(self.tags),
                                     self.properties.to_request() if self.properties else None)


class VaultPatchParameters(Model, frozen=True):
    tags: Tags | None | UnsetType = UNSET
    properties: VaultProperties | None = None

    def to_request(self) -> c.VaultPatch:
        return c.VaultPatch(present(self.tags), self.properties.to_request()
                            if self.properties else c.VaultSettings())


class VaultAccessPolicyProperties(Model, frozen=True, rename="camel"):
    access_policies: list[AccessPolicyEntry] | None = None


class VaultAccessPolicyParameters(Model, frozen=True):
    """The body of accessPolicies/add, /replace and /remove (id, name, type and location
    are read-only and ignored)."""

    properties: VaultAccessPolicyProperties | None = None

    def to_request(self) -> c.AccessPolicyUpdate:
        return c.AccessPolicyUpdate(
            _policies(self.properties.access_policies) if self.properties else None)


class VaultCheckNameAvailabilityParameters(Model, frozen=True):
    name: str
    type: str | None = None

    def to_request(self) -> c.NameAvailability:
        return c.NameAvailability(self.name, self.type)


class CheckMhsmNameAvailabilityParameters(VaultCheckNameAvailabilityParameters, frozen=True):
    """{"name"} alone; a `type` sent must still be the pool's."""


class ManagedHsmProperties(Model, frozen=True, rename="camel"):
    tenant_id: str | None = None
    initial_admin_object_ids: _Strings | None = None
    enable_soft_delete: bool | None = None
    soft_delete_retention_in_days: Int32 | _IntText | None = None
    enable_purge_protection: bool | None = None
    create_mode: str | None = None
    network_acls: NetworkRuleSet | None = None
    public_network_access: str | None = None

    def to_request(self) -> c.ManagedHsmSettings:
        return c.ManagedHsmSettings(
            self.tenant_id, self.initial_admin_object_ids, self.enable_soft_delete,
            _int(self.soft_delete_retention_in_days), self.enable_purge_protection,
            self.create_mode, _acls(self.network_acls), self.public_network_access)


class ManagedHsm(Model, frozen=True):
    """A managed HSM pool as PUT or PATCH (identity is not served: ignored)."""

    location: str | None = None
    tags: Tags | None | UnsetType = UNSET
    sku: Sku | None = None
    properties: ManagedHsmProperties | None = None

    def to_create(self) -> c.ManagedHsmCreateOrUpdate:
        return c.ManagedHsmCreateOrUpdate(
            self.location, present(self.tags), _sku(self.sku),
            self.properties.to_request() if self.properties else None)

    def to_patch(self) -> c.ManagedHsmPatch:
        return c.ManagedHsmPatch(present(self.tags), _sku(self.sku),
                                 self.properties.to_request() if self.properties
                                 else c.ManagedHsmSettings())
