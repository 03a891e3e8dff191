"""Managed HSM pools as ARM resources (`Microsoft.KeyVault/managedHSMs`).

A managed HSM is a vault row of kind `managedHsm`: it shares the vault lifecycle of
`VaultService` (placement, soft delete, recover with `createMode: recover`, purge through
`Barrier.destroy_owner`, the `deleted-vaults` scheduled purge) and the vaults' name space
(a name is unique across vaults and managed HSMs, deleted ones included). What differs is
the wire shape (`sku` beside `properties`, family "B"), the name rules, and that the
principals of `initialAdminObjectIds` are given the Managed HSM Administrator role at the
pool's scope (`/vaults/NAME`, the internal scope form shared with vaults).

The pool's data plane (`NAME.managedhsm.DOMAIN`, api/pools.py) serves its local RBAC
(vault/hsmrbac.py), its keys and its settings (vault/hsmsettings.py, kept in the pool's
properties document beside what this module writes there) and its security domain
(vault/securitydomain.py); the pool is reported `NotActivated` until its security domain
is downloaded, then `Active` (vault/activation.py). A new pool starts with no role but its
administrators': whatever a purged pool of the same name left (assignments at its scope,
its own custom roles) is removed when the name is taken again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from openkeyvault.access.network import InvalidNetworkRule, NetworkAcls
from openkeyvault.access.policies import InvalidAccessPolicy, check_guid
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import Barrier, vault_owner
from openkeyvault.storage.placement import PlacedVault, Placement, PlacementStore
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import activation
from openkeyvault.vault import controlrequests as c
from openkeyvault.vault.errors import BadParameter
from openkeyvault.vault.lifecycle import DEFAULT_RETENTION_DAYS
from openkeyvault.vault.properties import MAX_PROPERTIES_CHARS, network_acls
from openkeyvault.vault.vaults import (
    VaultService,
    _bad,
    _iso,
    _patch_settings,
    _put_request,
    _retention,
    _tags_or,
    check_resource_group,
    check_subscription,
)

KIND = "managedHsm"
HSM_TYPE = "Microsoft.KeyVault/managedHSMs"
DELETED_HSM_TYPE = "Microsoft.KeyVault/deletedManagedHSMs"
SKUS = ("Standard_B1", "Custom_B32", "Custom_B6")
PUBLIC_NETWORK_ACCESS = ("Enabled", "Disabled")
MAX_ADMINS = 64
# Azure's managed HSM names: 3-24 letters, digits and hyphens, starting with a letter.
HSM_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]{2,23}")
_NAME_RULES = ("A managed HSM's name must be between 3-24 characters: letters, digits and "
               "hyphens, beginning with a letter.")
STATUS_MESSAGE = "The Managed HSM is provisioned and ready to use."


def _sku(sku: c.Sku | None) -> str:
    name = sku.name if sku is not None else None
    family = sku.family if sku is not None and sku.family is not None else "B"
    found = next((s for s in SKUS if name is not None and s.lower() == name.lower()), None)
    if found is None or family not in ("B", "b"):
        raise _bad("sku must be {\"family\": \"B\", \"name\": \"Standard_B1\"|\"Custom_B32\"|"
                   "\"Custom_B6\"}.")
    return found


def _admins(value: list[str] | None) -> tuple[str, ...]:
    if value is None or not 1 <= len(value) <= MAX_ADMINS:
        raise _bad(f"properties.initialAdminObjectIds is required: a list of 1 to "
                   f"{MAX_ADMINS} object ids.")
    try:
        ids = [check_guid(v, "initialAdminObjectIds") for v in value]
    except InvalidAccessPolicy as exc:
        raise _bad(str(exc)) from None
    return tuple(dict.fromkeys(i.lower() for i in ids))


def _network(value: c.NetworkRules | None, base: NetworkAcls) -> NetworkAcls:
    if value is None:
        return base
    try:
        return network_acls(value)
    except InvalidNetworkRule as exc:
        raise _bad(str(exc)) from None


def _public(value: str | None, base: str) -> str:
    if value is None:
        return base
    found = next((p for p in PUBLIC_NETWORK_ACCESS if p.lower() == value.lower()), None)
    if found is None:
        raise _bad("publicNetworkAccess must be 'Enabled' or 'Disabled'.")
    return found


# The members of a pool's properties document that the management API writes; any other
# member belongs to the data plane (the pool's settings, vault/hsmsettings.py) and is kept.
_ARM_MEMBERS = frozenset({"enableRbacAuthorization", "accessPolicies", "networkAcls",
                          "initialAdminObjectIds", "publicNetworkAccess"})


def _dump(admins: tuple[str, ...], acls: NetworkAcls, public: str,
          current: str | None = None) -> str:
    # The access-settings document of a vault row: the keys a vault reads (RBAC on, no
    # access policies, the network rules) plus the pool's own, and the data plane's
    # members of the `current` document as they are.
    stored = json.loads(current) if current else {}
    kept = {k: v for k, v in stored.items() if k not in _ARM_MEMBERS} \
        if isinstance(stored, dict) else {}
    text = json.dumps({**kept, "enableRbacAuthorization": True, "accessPolicies": [],
                       "networkAcls": acls.to_wire(), "initialAdminObjectIds": list(admins),
                       "publicNetworkAccess": public}, separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_PROPERTIES_CHARS:
        raise _bad("The managed HSM properties are too large.")
    return text


def _activation(properties: str | None) -> dict[str, str]:
    if activation.activated(properties):
        return {"activationStatus": activation.ACTIVE,
                "activationStatusMessage": activation.ACTIVE_MESSAGE}
    return {"activationStatus": activation.NOT_ACTIVATED,
            "activationStatusMessage": activation.NOT_ACTIVATED_MESSAGE}


def _stored(p: PlacedVault) -> tuple[tuple[str, ...], NetworkAcls, str]:
    doc = json.loads(p.vault.properties) if p.vault.properties else {}
    return (tuple(doc.get("initialAdminObjectIds") or ()),
            NetworkAcls.from_wire(doc.get("networkAcls")),
            str(doc.get("publicNetworkAccess") or "Enabled"))


class ManagedHsmService(VaultService):
    KIND = KIND
    TYPE = HSM_TYPE
    DELETED_TYPE = DELETED_HSM_TYPE
    NOUN = "managed HSM"
    NOT_FOUND_DELETED = "ResourceNotFound"

    def __init__(self, repo: Repository, barrier: Barrier, clock: Clock,
                 placements: PlacementStore, tenant_id: str,
                 hsm_uri: Callable[[str], str],
                 assign_admin: Callable[[str, str], object]) -> None:
        super().__init__(repo, barrier, clock, placements, tenant_id, hsm_uri)
        self._assign_admin = assign_admin

    def _render(self, p: PlacedVault) -> dict[str, Any]:
        v, pl = p.vault, p.placement
        admins, acls, public = _stored(p)
        properties: dict[str, Any] = {
            "tenantId": pl.tenant_id,
            "initialAdminObjectIds": list(admins),
            "hsmUri": self._vault_uri(v.name),
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": v.retention_days,
            "enablePurgeProtection": v.purge_protection,
            "networkAcls": acls.to_wire(),
            "publicNetworkAccess": public,
            "provisioningState": "Succeeded",
            "statusMessage": STATUS_MESSAGE,
            "securityDomainProperties": _activation(v.properties),
            "regions": [],
            "privateEndpointConnections": [],
        }
        created = _iso(v.created)
        return {
            "id": f"/subscriptions/{pl.subscription}/resourceGroups/{pl.resource_group}"
                  f"/providers/{HSM_TYPE}/{v.name}",
            "name": v.name, "type": HSM_TYPE, "location": pl.location,
            "sku": {"family": "B", "name": v.sku},
            "tags": dict(pl.tags or {}),
            "systemData": {"createdAt": created, "lastModifiedAt": created},
            "properties": properties,
        }

    def _render_deleted(self, p: PlacedVault) -> dict[str, Any]:
        v, pl = p.vault, p.placement
        assert pl.deleted_date is not None and pl.scheduled_purge_date is not None
        return {
            "id": f"/subscriptions/{pl.subscription}/providers/Microsoft.KeyVault/locations/"
                  f"{pl.location}/deletedManagedHSMs/{v.name}",
            "name": v.name, "type": DELETED_HSM_TYPE,
            "properties": {
                "mhsmId": f"/subscriptions/{pl.subscription}/resourceGroups/"
                          f"{pl.resource_group}/providers/{HSM_TYPE}/{v.name}",
                "location": pl.location,
                "deletionDate": _iso(pl.deleted_date),
                "scheduledPurgeDate": _iso(pl.scheduled_purge_date),
                "purgeProtectionEnabled": v.purge_protection,
                "tags": dict(pl.tags or {}),
            },
        }

    def create_or_update(self, subscription: str, resource_group: str, name: str,
                         request: c.ManagedHsmCreateOrUpdate  # type: ignore[override]
                         ) -> tuple[dict[str, Any], bool]:
        subscription = check_subscription(subscription)
        resource_group = check_resource_group(resource_group)
        if not isinstance(name, str) or not HSM_NAME.fullmatch(name):
            raise BadParameter(f"The managed HSM name '{str(name)[:40]}' is invalid. "
                               f"{_NAME_RULES}", inner="InvalidResourceName")
        lc = name.lower()
        props, location, mode = _put_request(request)
        assert isinstance(props, c.ManagedHsmSettings)
        existing = self._find(lc)
        if mode == "recover":
            return self._recover(subscription, resource_group, lc, existing,
                                 request.tags), False
        retention, purge_protection = self._put_settings(props)
        sku = _sku(request.sku)
        tags = _tags_or(request.tags, None)
        admins = _admins(props.initial_admin_object_ids)
        if existing is None:
            for object_id in admins:
                if self._repo.get_principal(object_id=object_id) is None:
                    raise _bad(f"initialAdminObjectIds: principal '{object_id}' does not "
                               "exist in the directory.")
        if existing is not None:
            pl = self._same_place(existing, lc, sku, subscription, resource_group)
            if tuple(sorted(admins)) != tuple(sorted(_stored(existing)[0])):
                raise _bad("initialAdminObjectIds cannot be changed after the managed HSM is "
                           "created: manage its roles instead.")
            # A PUT replaces: settings the body leaves out go back to their defaults.
            return self._change(existing, sku, retention, purge_protection, props,
                                replace(pl, tags=tags), NetworkAcls(), "Enabled"), False
        now = int(self._clock.now())
        properties = _dump(admins, _network(props.network_acls, NetworkAcls()),
                           _public(props.public_network_access, "Enabled"))
        placement = Placement(subscription, resource_group, location.lower(), self._tenant_id,
                              tags)
        self._insert(lc, sku, retention or DEFAULT_RETENTION_DAYS, bool(purge_protection),
                     now, placement, properties)
        created = self._store().get(lc, self._default())
        assert created is not None
        self._barrier.ensure_owner(vault_owner(created.vault.id), now)
        self._forget_local_rbac(lc)
        for object_id in admins:
            self._assign_admin(object_id, f"/vaults/{lc}")
        return self._render(created), True

    def _forget_local_rbac(self, lc: str) -> None:
        """Remove the role assignments at `/vaults/NAME` or below and the custom roles of
        an earlier pool of this name, so that none of them reaches the new one."""
        home = f"/vaults/{lc}"
        for a in self._repo.role_assignments():
            scope = a.scope.lower()
            if scope == home or scope.startswith(home + "/"):
                self._repo.delete_role_assignment(a.id)
        for d in self._repo.role_definitions():
            if d.assignable_scopes and all(
                    s.lower() == home or s.lower().startswith(home + "/")
                    for s in d.assignable_scopes):
                self._repo.delete_role_definition(d.id)

    def _change(self, p: PlacedVault, sku: str | None, retention: int | None,
                purge_protection: bool | None, props: c.ManagedHsmSettings,
                placement: Placement, acls: NetworkAcls | None = None,
                public: str | None = None) -> dict[str, Any]:
        self._check_change(p, retention, purge_protection, props)
        admins, stored_acls, stored_public = _stored(p)
        network = _network(props.network_acls, acls or stored_acls)
        access = _public(props.public_network_access, public or stored_public)
        # Written over the document as stored when the change commits: a setting changed
        # meanwhile on the data plane is kept.
        return self._store_change(p, placement,
                                  lambda current: _dump(admins, network, access, current),
                                  sku, purge_protection)

    def update(self, subscription: str, resource_group: str, name: str,
               patch: c.ManagedHsmPatch) -> dict[str, Any]:  # type: ignore[override]
        p = self._placed(subscription, resource_group, name)
        props = patch.properties
        _patch_settings(props)
        if props.initial_admin_object_ids is not None and tuple(sorted(
                _admins(props.initial_admin_object_ids))) != tuple(sorted(_stored(p)[0])):
            raise _bad("initialAdminObjectIds cannot be changed after the managed HSM is "
                       "created: manage its roles instead.")
        sku = _sku(patch.sku) if patch.sku is not None else None
        tags = _tags_or(patch.tags, p.placement.tags)
        return self._change(p, sku, _retention(props.soft_delete_retention_in_days),
                            props.enable_purge_protection, props,
                            replace(p.placement, tags=tags))

    def check_name_availability(self, name: str) -> dict[str, Any]:
        if not isinstance(name, str) or not HSM_NAME.fullmatch(name):
            return {"nameAvailable": False, "reason": "AccountNameInvalid",
                    "message": f"The managed HSM name '{str(name)[:40]}' is invalid. "
                               f"{_NAME_RULES}"}
        if self._find(name.lower()) is None:
            return {"nameAvailable": True}
        return {"nameAvailable": False, "reason": "AlreadyExists",
                "message": f"The name '{name}' is already in use."}
