"""Vaults of the deployment: the control plane's vault lifecycle.

ARM's view of a vault: it sits in a subscription and resource group (namespaces inside
the deployment, created by the first vault placed in them), at a location, in the
deployment's tenant, with tags and ARM-shaped properties (`sku`, `tenantId`,
`enableSoftDelete`, `softDeleteRetentionInDays`, `enablePurgeProtection`,
`enableRbacAuthorization`, `accessPolicies`, `networkAcls`, `vaultUri`).

Deletion is soft: a deleted vault keeps its name (no other vault may take it), its objects
and its key material; the data plane no longer finds it. Recover (PUT with
`createMode: recover`) brings it back; purge destroys its key material through the barrier
(so nothing of it decrypts again, even from an older copy of the database) and then removes
its rows. Under purge protection a purge is refused until the scheduled purge date, when
the `deleted-vaults` scheduled job purges it.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, overload

from openkeyvault.access.policies import (
    KINDS,
    AccessPolicies,
    AccessPolicyEntry,
    InvalidAccessPolicy,
)
from openkeyvault.ops.clock import Clock
from openkeyvault.ops.events import NO_CHANGE, NO_EVENTS, EventPublisher
from openkeyvault.storage.barrier import Barrier, vault_owner
from openkeyvault.storage.placement import PlacedVault, Placement, PlacementStore
from openkeyvault.storage.records import NameConflict, VaultRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import controlrequests as c
from openkeyvault.vault import names
from openkeyvault.vault.errors import BadParameter, Conflict, Forbidden, NotFound
from openkeyvault.vault.lifecycle import (
    DAY,
    DEFAULT_RETENTION_DAYS,
    MAX_RETENTION_DAYS,
    MIN_RETENTION_DAYS,
)
from openkeyvault.vault.properties import (
    MAX_PROPERTIES_CHARS,
    VaultProperties,
    policy_entry,
    properties_of,
)
from openkeyvault.vault.requests import UNSET, Unset

if TYPE_CHECKING:
    from openkeyvault.storage.store import Transaction

SKUS = ("standard", "premium")
DEFAULT_RESOURCE_GROUP = "default"
DEFAULT_LOCATION = "local"
VAULT_TYPE = "Microsoft.KeyVault/vaults"
DELETED_VAULT_TYPE = "Microsoft.KeyVault/deletedVaults"
MAX_TAGS = 50
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256
_RESOURCE_GROUP = re.compile(r"[-\w._()]{1,90}")
_LOCATION = re.compile(r"[A-Za-z0-9 ]{1,64}")
_POLICY_OPERATIONS = ("add", "replace", "remove")
# Any name a vault or a managed HSM may hold (each kind checks its own rules on create).
_ANY_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]{2,23}")


def check_subscription(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(f"The subscription '{value[:40]}' could not be found.",
                       "InvalidSubscriptionId") from None


def check_resource_group(value: str) -> str:
    if not _RESOURCE_GROUP.fullmatch(value) or value.endswith("."):
        raise BadParameter(f"Resource group '{value[:90]}' is invalid.",
                           inner="InvalidResourceGroup")
    return value


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bad(message: str, code: str = "BadRequest") -> BadParameter:
    return BadParameter(message, inner=code)


def _tags(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > MAX_TAGS:
        raise _bad(f"tags must be an object of at most {MAX_TAGS} string values.",
                   "InvalidTag")
    for k, v in value.items():
        if not k or len(k) > MAX_TAG_NAME or len(v) > MAX_TAG_VALUE:
            raise _bad(f"Tag names are 1-{MAX_TAG_NAME} characters, values at most "
                       f"{MAX_TAG_VALUE}.", "InvalidTag")
    return dict(value)


def _tags_or(value: dict[str, str] | None | Unset,
             kept: dict[str, str] | None) -> dict[str, str] | None:
    """The tags a request names (null clears them), or `kept` when it names none."""
    return kept if value is UNSET else _tags(value)


# Settings every resource kind's PUT and PATCH carry.
Settings = c.VaultSettings | c.ManagedHsmSettings


def _put_request(request: c.VaultCreateOrUpdate | c.ManagedHsmCreateOrUpdate
                 ) -> tuple[Any, str, str]:
    """A PUT's parts every resource kind checks alike: (properties, location,
    createMode)."""
    props = request.properties
    if props is None:
        raise _bad("The request body must hold 'properties'.")
    location = request.location
    if location is None or not _LOCATION.fullmatch(location):
        raise _bad("location is required: a region name.", "LocationRequired")
    mode = props.create_mode if props.create_mode is not None else "default"
    if mode not in ("default", "recover"):
        raise _bad("createMode must be 'default' or 'recover'.")
    return props, location, mode


def _sku(sku: c.Sku | None) -> str:
    name = sku.name if sku is not None else None
    family = sku.family if sku is not None and sku.family is not None else "A"
    if name is None or name.lower() not in SKUS or family not in ("A", "a"):
        raise _bad("sku must be {\"family\": \"A\", \"name\": \"standard\"|\"premium\"}.")
    return name.lower()


def _patch_settings(props: Settings) -> None:
    """What a PATCH may not say, whatever the kind."""
    if props.enable_soft_delete is False:
        raise _bad("Soft delete is always on: enableSoftDelete cannot be false.")
    if props.create_mode not in (None, "default"):
        raise _bad("createMode is only meaningful on PUT.")


def _retention(value: int | None) -> int | None:
    if value is None:
        return None
    if not MIN_RETENTION_DAYS <= value <= MAX_RETENTION_DAYS:
        raise _bad(f"softDeleteRetentionInDays must be between {MIN_RETENTION_DAYS} and "
                   f"{MAX_RETENTION_DAYS}.")
    return value


def _dump(props: VaultProperties) -> str:
    text = json.dumps(props.to_wire(), separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_PROPERTIES_CHARS:
        raise _bad("The vault properties are too large.")
    return text


def _access(base: VaultProperties, props: c.VaultSettings) -> VaultProperties:
    """`base` with the access settings `props` names (the others kept)."""
    try:
        return base.with_settings(props.enable_rbac_authorization, props.access_policies,
                                  props.network_acls)
    except BadParameter as exc:
        raise _bad(exc.message) from None


class VaultService:
    """The lifecycle of ARM resources stored as vault rows of kind `KIND` (a subclass
    serves another kind: `vault/managedhsms.py`). Names are unique across every kind."""

    KIND = "vault"
    TYPE = VAULT_TYPE
    DELETED_TYPE = DELETED_VAULT_TYPE
    NOUN = "vault"
    NOT_FOUND_DELETED = "DeletedVaultNotFound"
    events: EventPublisher = NO_EVENTS  # told when access policies change (ops/events.py)

    def __init__(self, repo: Repository, barrier: Barrier, clock: Clock,
                 placements: PlacementStore | None = None, tenant_id: str = "",
                 vault_uri: Callable[[str], str] | None = None) -> None:
        self._repo = repo
        self._barrier = barrier
        self._clock = clock
        self._placements = placements
        self._tenant_id = tenant_id
        self._vault_uri = vault_uri or (lambda name: f"https://{name}.vault.localhost/")
        self._default_subscription: str | None = None

    # ---- the default place ------------------------------------------------
    def default_subscription(self) -> str:
        if self._default_subscription is None:
            self._default_subscription = self._repo.set_meta_if_absent(
                "default_subscription_id", str(uuid.uuid4()))
        return self._default_subscription

    def _default(self) -> Placement:
        return Placement(self.default_subscription(), DEFAULT_RESOURCE_GROUP, DEFAULT_LOCATION,
                         self._tenant_id)

    def _store(self) -> PlacementStore:
        if self._placements is None:
            raise RuntimeError("VaultService was built without placement storage.")
        return self._placements

    # ---- the simple interface (CLI, deployment) ---------------------------
    def create(self, name: str, sku: str = "standard",
               retention_days: int = DEFAULT_RETENTION_DAYS,
               purge_protection: bool = False) -> VaultRecord:
        name = names.check_vault_name(name)
        if sku not in SKUS:
            raise BadParameter(f"Unknown SKU '{sku}': use one of {', '.join(SKUS)}.")
        if not MIN_RETENTION_DAYS <= retention_days <= MAX_RETENTION_DAYS:
            raise BadParameter(
                f"softDeleteRetentionInDays must be between {MIN_RETENTION_DAYS} and "
                f"{MAX_RETENTION_DAYS}."
            )
        now = int(self._clock.now())
        if self._placements is None:
            try:
                vault = self._repo.create_vault(name, "vault", sku, retention_days,
                                                purge_protection, now)
            except NameConflict:
                raise Conflict(f"A vault named '{name}' already exists.",
                               inner="VaultAlreadyExists") from None
        else:
            self._insert(name, sku, retention_days, purge_protection, now, self._default(),
                         None)
            found = self._repo.get_vault(name)
            assert found is not None
            vault = found
        self._barrier.ensure_owner(vault_owner(vault.id), now)
        return vault

    def _insert(self, name: str, sku: str, retention_days: int, purge_protection: bool,
                now: int, placement: Placement, properties: str | None) -> None:
        try:
            self._store().create(name, sku, retention_days, purge_protection, now, placement,
                                 properties, kind=self.KIND)
        except NameConflict as exc:
            if exc.deleted:
                raise Conflict(f"The name '{name}' is already in use by a deleted "
                               "vault or managed HSM; recover or purge it first.",
                               inner="ConflictError") from None
            raise self._taken(name) from None

    def _taken(self, name: str) -> Conflict:
        return Conflict(f"The {self.NOUN} name '{name}' is already in use.",
                        inner="VaultAlreadyExists")

    def ensure(self, name: str) -> VaultRecord:
        vault = self._repo.get_vault(name.lower())
        return vault if vault is not None else self.create(name)

    @overload
    def get(self, name: str, /) -> VaultRecord | None: ...
    @overload
    def get(self, subscription: str, resource_group: str, name: str, /) -> dict[str, Any]: ...

    def get(self, *args: str) -> Any:
        """get(name) -> VaultRecord | None (the data plane's view, live vaults only);
        get(subscription, resource_group, name) -> the ARM vault resource (dict)."""
        if len(args) == 1:
            return self._repo.get_vault(args[0].lower())
        subscription, resource_group, name = args
        return self._render(self._placed(subscription, resource_group, name))

    @overload
    def list(self) -> builtins.list[VaultRecord]: ...
    @overload
    def list(self, subscription: str, resource_group: str | None = None, /
             ) -> builtins.list[dict[str, Any]]: ...

    def list(self, *args: str | None) -> Any:
        """list() -> live VaultRecords; list(subscription, resource_group | None) -> ARM
        vault resources in that subscription (and resource group)."""
        if not args:
            return [v for v in self._repo.list_vaults() if v.kind == self.KIND]
        subscription = check_subscription(str(args[0]))
        group = args[1] if len(args) > 1 else None
        return [self._render(p) for p in self._store().list(self._default(), deleted=False)
                if p.vault.kind == self.KIND and p.placement.subscription == subscription
                and (group is None or p.placement.resource_group.lower() == group.lower())]

    def page(self, subscription: str, resource_group: str | None, after: str | None,
             limit: int) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """One page of `list(subscription, resource_group)`: the ARM resources after the
        vault named `after`, at most `limit`, and the name to continue after (None: the
        last page)."""
        subscription = check_subscription(subscription)
        placed, more = self._store().page(self._default(), kind=self.KIND,
                                          subscription=subscription, group=resource_group,
                                          after=after.lower() if after else None,
                                          limit=limit)
        return ([self._render(p) for p in placed],
                placed[-1].vault.name if more and placed else None)

    def placed_page(self, subscription: str, resource_group: str | None, kind: str | None,
                    name: str | None, after: str | None, limit: int
                    ) -> tuple[builtins.list[PlacedVault], bool]:
        """Live vaults and pools of any `kind` (None: every kind; `name`: only that one) in
        name order after `after`, at most `limit`, and whether more follow (keyset paging:
        the generic resource listing of the management API)."""
        return self._store().page(self._default(), kind=kind,
                                  subscription=check_subscription(subscription),
                                  group=resource_group, after=after.lower() if after else None,
                                  limit=limit, name=name)

    def groups_in_use(self, subscription: str) -> builtins.list[tuple[str, str]]:
        """(resource group, a location) of each group live vaults or pools of
        `subscription` sit in: one query, however many there are."""
        return self._store().groups_in_use(self._default(), check_subscription(subscription))

    def render(self, p: PlacedVault) -> dict[str, Any]:
        """The ARM resource of a vault of this service's kind."""
        return self._render(p)

    def adopt_unplaced(self) -> int:
        """Place vaults created before placement storage in the default place."""
        return self._store().place_unplaced(self._default()) if self._placements else 0

    def placement_of(self, name: str) -> tuple[str, str] | None:
        """(subscription, resource group) of the vault named `name`, live or deleted."""
        if self._placements is None or not _ANY_NAME.fullmatch(name):
            return None
        found = self._placements.place(name.lower())
        if found is None:
            return None
        subscription, resource_group = found
        if subscription is None or resource_group is None:
            return self.default_subscription(), DEFAULT_RESOURCE_GROUP
        return subscription, resource_group

    def kind_of(self, name: str) -> str | None:
        """The kind (`vault`, `managedHsm`) of the resource named `name`, live or deleted;
        None when no resource holds the name."""
        found = self._find(name)
        return found.vault.kind if found is not None else None

    # ---- ARM --------------------------------------------------------------
    def _find(self, name: str) -> PlacedVault | None:
        """The resource named `name`, live or deleted, of any kind."""
        if not _ANY_NAME.fullmatch(name):
            return None
        return self._store().get(name.lower(), self._default())

    def _mine(self, name: str) -> PlacedVault | None:
        """The resource named `name`, live or deleted, if it is of this service's kind."""
        found = self._find(name)
        return found if found is not None and found.vault.kind == self.KIND else None

    def _placed(self, subscription: str, resource_group: str, name: str) -> PlacedVault:
        subscription = check_subscription(subscription)
        found = self._mine(name)
        if found is None or found.placement.deleted_date is not None \
                or found.placement.subscription != subscription \
                or found.placement.resource_group.lower() != resource_group.lower():
            raise NotFound(f"The Resource '{self.TYPE}/{name[:24]}' under resource group "
                           f"'{resource_group[:90]}' was not found.", "ResourceNotFound")
        return found

    def _render(self, p: PlacedVault) -> dict[str, Any]:
        v, pl = p.vault, p.placement
        props = properties_of(v)
        properties: dict[str, Any] = {
            "tenantId": pl.tenant_id,
            "sku": {"family": "A", "name": v.sku},
            "accessPolicies": [e.to_wire() for e in props.access_policies.entries],
            "vaultUri": self._vault_uri(v.name),
            "enabledForDeployment": False,
            "enabledForDiskEncryption": False,
            "enabledForTemplateDeployment": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": v.retention_days,
            "enableRbacAuthorization": props.enable_rbac_authorization,
            "networkAcls": props.network_acls.to_wire(),
            "provisioningState": "Succeeded",
            "publicNetworkAccess": "Enabled",
        }
        if v.purge_protection:
            properties["enablePurgeProtection"] = True
        created = _iso(v.created)
        return {
            "id": f"/subscriptions/{pl.subscription}/resourceGroups/{pl.resource_group}"
                  f"/providers/{VAULT_TYPE}/{v.name}",
            "name": v.name, "type": VAULT_TYPE, "location": pl.location,
            "tags": dict(pl.tags or {}),
            "systemData": {"createdAt": created, "lastModifiedAt": created},
            "properties": properties,
        }

    def create_or_update(self, subscription: str, resource_group: str, name: str,
                         request: c.VaultCreateOrUpdate) -> tuple[dict[str, Any], bool]:
        subscription = check_subscription(subscription)
        resource_group = check_resource_group(resource_group)
        try:
            lc = names.check_vault_name(name)
        except BadParameter as exc:
            raise BadParameter(exc.message, inner="VaultNameNotValid") from None
        props, location, mode = _put_request(request)
        existing = self._store().get(lc, self._default())
        if mode == "recover":
            return self._recover(subscription, resource_group, lc, existing,
                                 request.tags), False
        retention, purge_protection = self._put_settings(props)
        sku = _sku(props.sku)
        tags = _tags_or(request.tags, None)
        if existing is not None:
            pl = self._same_place(existing, lc, sku, subscription, resource_group)
            # A PUT replaces: access settings the body leaves out go back to their defaults.
            return self._apply(existing, sku, retention, purge_protection, props,
                               replace(pl, tags=tags, location=pl.location),
                               VaultProperties()), False
        new_props = _access(VaultProperties(), props)
        now = int(self._clock.now())
        placement = Placement(subscription, resource_group, location.lower(), self._tenant_id,
                              tags)
        self._insert(lc, sku, retention or DEFAULT_RETENTION_DAYS, bool(purge_protection),
                     now, placement, _dump(new_props))
        created = self._store().get(lc, self._default())
        assert created is not None
        self._barrier.ensure_owner(vault_owner(created.vault.id), now)
        return self._render(created), True

    def _put_settings(self, props: Settings) -> tuple[int | None, bool | None]:
        """What every PUT checks: the tenant, soft delete on; (retention, purge protection)."""
        tenant = props.tenant_id
        if tenant is None or tenant.lower() != self._tenant_id.lower():
            raise _bad("tenantId must be this deployment's tenant id.", "InvalidTenantId")
        if props.enable_soft_delete is False:
            raise _bad("Soft delete is always on: enableSoftDelete cannot be false.")
        return _retention(props.soft_delete_retention_in_days), props.enable_purge_protection

    def _same_place(self, existing: PlacedVault, lc: str, sku: str, subscription: str,
                    resource_group: str) -> Placement:
        """The placement of `existing` if a PUT may update it: a live resource of this kind
        in the same subscription and resource group; else the name's conflict."""
        pl = existing.placement
        if pl.deleted_date is not None:
            self._insert(lc, sku, 0, False, 0, pl, None)  # raises the deleted-name conflict
        if existing.vault.kind != self.KIND or pl.subscription != subscription \
                or pl.resource_group.lower() != resource_group.lower():
            raise self._taken(lc)
        return pl

    def _apply(self, p: PlacedVault, sku: str | None, retention: int | None,
               purge_protection: bool | None, props: c.VaultSettings,
               placement: Placement, base: VaultProperties | None = None) -> dict[str, Any]:
        """Change the vault: the access settings `props` names replace those of `base`
        (a PUT: the defaults) or of the vault's current ones (a PATCH: `base` None)."""
        self._check_change(p, retention, purge_protection, props)
        new_props = _access(properties_of(p.vault) if base is None else base, props)
        event = NO_CHANGE if new_props.same_access(properties_of(p.vault)) \
            else self.events.access_policy_changed(p.vault)
        out = self._store_change(p, placement, _dump(new_props), sku, purge_protection,
                                 event.write)
        event.published()
        return out

    def _check_change(self, p: PlacedVault, retention: int | None,
                      purge_protection: bool | None, props: Settings) -> None:
        """What no change may do, whatever the kind: retention is fixed at creation, purge
        protection is one-way, and the tenant is the deployment's."""
        v = p.vault
        if retention is not None and retention != v.retention_days:
            raise _bad(f"softDeleteRetentionInDays cannot be changed after the {self.NOUN} "
                       "is created.")
        if purge_protection is False and v.purge_protection:
            raise _bad("Purge protection cannot be turned off once it is on.")
        tenant = props.tenant_id
        if tenant is not None and tenant.lower() != self._tenant_id.lower():
            raise _bad("tenantId must be this deployment's tenant id.", "InvalidTenantId")

    def _store_change(self, p: PlacedVault, placement: Placement,
                      properties: str | Callable[[str | None], str],
                      sku: str | None, purge_protection: bool | None,
                      also: Callable[[Transaction], None] | None = None) -> dict[str, Any]:
        v = p.vault
        self._store().update(v.id, placement=placement, properties=properties, sku=sku,
                             purge_protection=True if purge_protection else None,
                             now=int(self._clock.now()), also=also)
        found = self._store().get(v.name, self._default())
        assert found is not None
        return self._render(found)

    def update(self, subscription: str, resource_group: str, name: str,
               patch: c.VaultPatch) -> dict[str, Any]:
        p = self._placed(subscription, resource_group, name)
        props = patch.properties
        _patch_settings(props)
        sku = _sku(props.sku) if props.sku is not None else None
        tags = _tags_or(patch.tags, p.placement.tags)
        return self._apply(p, sku, _retention(props.soft_delete_retention_in_days),
                           props.enable_purge_protection, props,
                           replace(p.placement, tags=tags))

    def delete(self, subscription: str, resource_group: str, name: str) -> None:
        p = self._placed(subscription, resource_group, name)
        now = int(self._clock.now())
        self._store().update(p.vault.id, placement=replace(
            p.placement, deleted_date=now,
            scheduled_purge_date=now + p.vault.retention_days * DAY), now=now)

    def _recover(self, subscription: str, resource_group: str, name: str,
                 existing: PlacedVault | None,
                 tags: dict[str, str] | None | Unset = UNSET) -> dict[str, Any]:
        if existing is None or existing.vault.kind != self.KIND \
                or existing.placement.subscription != subscription:
            raise NotFound(f"No deleted {self.NOUN} named '{name}' was found.",
                           self.NOT_FOUND_DELETED)
        pl = existing.placement
        if pl.deleted_date is None:
            raise Conflict(f"The {self.NOUN} '{name}' is not deleted: there is nothing to "
                           "recover.", inner="ConflictError")
        if pl.resource_group.lower() != resource_group.lower():
            raise _bad(f"The deleted {self.NOUN} '{name}' belonged to resource group "
                       f"'{pl.resource_group}'; recover it there.")
        tags = _tags_or(tags, pl.tags)
        self._store().update(existing.vault.id, placement=replace(
            pl, tags=tags, deleted_date=None, scheduled_purge_date=None),
            now=int(self._clock.now()))
        found = self._store().get(name, self._default())
        assert found is not None
        return self._render(found)

    def recover(self, subscription: str, resource_group: str, name: str) -> dict[str, Any]:
        subscription = check_subscription(subscription)
        lc = name.lower()
        return self._recover(subscription, resource_group, lc, self._mine(lc))

    # ---- deleted vaults ---------------------------------------------------
    def _deleted(self, location: str | None, name: str, subscription: str) -> PlacedVault:
        subscription = check_subscription(subscription)
        found = self._mine(name)
        if found is None or found.placement.deleted_date is None \
                or found.placement.subscription != subscription \
                or (location is not None and found.placement.location != location.lower()):
            raise NotFound(f"No deleted {self.NOUN} named '{name[:24]}' was found.",
                           self.NOT_FOUND_DELETED)
        return found

    def _render_deleted(self, p: PlacedVault) -> dict[str, Any]:
        v, pl = p.vault, p.placement
        assert pl.deleted_date is not None and pl.scheduled_purge_date is not None
        vault_id = (f"/subscriptions/{pl.subscription}/resourceGroups/{pl.resource_group}"
                    f"/providers/{VAULT_TYPE}/{v.name}")
        return {
            "id": f"/subscriptions/{pl.subscription}/providers/Microsoft.KeyVault/locations/"
                  f"{pl.location}/deletedVaults/{v.name}",
            "name": v.name, "type": DELETED_VAULT_TYPE,
            "properties": {
                "vaultId": vault_id, "location": pl.location,
                "deletionDate": _iso(pl.deleted_date),
                "scheduledPurgeDate": _iso(pl.scheduled_purge_date),
                "tags": dict(pl.tags or {}),
                "purgeProtectionEnabled": v.purge_protection,
            },
        }

    def get_deleted(self, location: str, name: str, subscription: str) -> dict[str, Any]:
        return self._render_deleted(self._deleted(location, name, subscription))

    def list_deleted(self, subscription: str) -> builtins.list[dict[str, Any]]:
        subscription = check_subscription(subscription)
        return [self._render_deleted(p)
                for p in self._store().list(self._default(), deleted=True)
                if p.vault.kind == self.KIND and p.placement.subscription == subscription]

    def purge_deleted(self, location: str, name: str, subscription: str) -> None:
        p = self._deleted(location, name, subscription)
        now = int(self._clock.now())
        assert p.placement.scheduled_purge_date is not None
        if p.vault.purge_protection and now < p.placement.scheduled_purge_date:
            raise Forbidden(
                f"Operation 'DeletedVaultPurge' is not allowed on the {self.NOUN} "
                f"'{p.vault.name}': "
                "purge protection is enabled. It will be purged on "
                f"{_iso(p.placement.scheduled_purge_date)}.",
                inner="MethodNotAllowedWithPurgeProtection")
        self._purge(p.vault.id)

    def _purge(self, vault_id: int) -> None:
        # Key material first: from here on nothing the vault sealed opens, also not from
        # an older copy of the database; a failure after this leaves rows a retry removes.
        self._barrier.destroy_owner(vault_owner(vault_id))
        self._store().remove(vault_id)

    def purge_expired(self) -> int:
        """Purge every deleted vault past its scheduled purge date (a scheduled job)."""
        due = self._store().expired(int(self._clock.now())) if self._placements else []
        for vault_id, _ in due:
            self._purge(vault_id)
        return len(due)

    def check_name_availability(self, name: str) -> dict[str, Any]:
        if not isinstance(name, str) or not names.VAULT_NAME.fullmatch(name) or "--" in name:
            return {"nameAvailable": False, "reason": "AccountNameInvalid",
                    "message": f"The vault name '{str(name)[:40]}' is invalid. A vault's "
                               "name must be between 3-24 alphanumeric characters. The name "
                               "must begin with a letter, end with a letter or digit, and not "
                               "contain consecutive hyphens."}
        found = self._store().get(name.lower(), self._default())
        if found is None:
            return {"nameAvailable": True}
        return {"nameAvailable": False, "reason": "AlreadyExists",
                "message": f"The vault name '{name}' is already in use."}

    def update_access_policy(self, subscription: str, resource_group: str, name: str,
                             operation: str, request: c.AccessPolicyUpdate) -> dict[str, Any]:
        if operation not in _POLICY_OPERATIONS:
            raise NotFound(f"Unknown access policy operation '{operation[:16]}'.",
                           "ResourceNotFound")
        p = self._placed(subscription, resource_group, name)
        given = request.access_policies
        if not given:
            raise _bad("properties.accessPolicies must be a non-empty list.")
        try:
            entries = [policy_entry(e) for e in given]
        except InvalidAccessPolicy as exc:
            raise _bad(str(exc)) from None
        current = properties_of(p.vault)
        held = {(e.tenant_id, e.object_id): e for e in current.access_policies.entries}
        for e in entries:
            key = (e.tenant_id, e.object_id)
            old = held.get(key)
            if operation == "replace" or old is None:
                if operation != "remove":
                    held[key] = e
                continue
            lists: dict[str, tuple[str, ...]] = {}
            for kind in KINDS:
                have: tuple[str, ...] = getattr(old, kind)
                named: tuple[str, ...] = getattr(e, kind)
                lists[kind] = tuple(x for x in have if x not in named) \
                    if operation == "remove" else (*have, *(x for x in named if x not in have))
            if operation == "remove" and not any(lists.values()):
                del held[key]
            else:
                held[key] = AccessPolicyEntry(e.tenant_id, e.object_id, **lists)
        try:
            new = replace(current, access_policies=AccessPolicies(tuple(held.values())))
        except InvalidAccessPolicy as exc:
            raise _bad(str(exc)) from None
        event = NO_CHANGE if new.same_access(current) \
            else self.events.access_policy_changed(p.vault)
        self._store().update(p.vault.id, placement=p.placement, properties=_dump(new),
                             now=int(self._clock.now()), also=event.write)
        event.published()
        vault = self._render(self._placed(subscription, resource_group, name))
        return {"id": f"{vault['id']}/accessPolicies/{operation}", "type":
                f"{VAULT_TYPE}/accessPolicies", "name": operation,
                "location": vault["location"],
                "properties": {"accessPolicies": vault["properties"]["accessPolicies"]}}
