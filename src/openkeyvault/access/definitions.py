"""Role definitions: Azure's built-in roles (access/roles.py) and stored custom roles.

One lookup serves the Authorizer, the REST API and `okv role`: a role is found by
GUID, by its full id (`Microsoft.KeyVault/providers/Microsoft.Authorization/
roleDefinitions/GUID`) or by name. Custom roles are validated here: every action
must be one this service knows, or a wildcard matching at least one.

A custom role made on a managed HSM pool belongs to the pool (as in Azure, where each
pool has its own definitions): its assignable scopes are stored in the internal form
(`/vaults/POOL`, `/vaults/POOL/keys`), which is how the role's owner is known. It names
Managed HSM data actions only, is listed and changed on its pool only, and can be assigned
only there. The deployment's own custom roles (owner None) are stored with relative scopes
(`/`, `/keys`) and never show on a pool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from openkeyvault.access.actions import CONTROL, DATA, MANAGED_HSM_DATA
from openkeyvault.access.roles import BUILT_IN, BY_ID, Permission, RoleDefinition, matches
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.records import RoleDefinitionRecord
from openkeyvault.storage.repository import Repository

MAX_CUSTOM_ROLES = 50  # Azure's limit of custom role definitions per Managed HSM
MAX_ACTIONS = 50  # in all permission entries of one role together
MAX_PERMISSIONS = 10  # permission entries of one role
MAX_NAME = 512  # a role name, and each action name
MAX_DESCRIPTION = 2048
MAX_ASSIGNABLE_SCOPES = 10

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
DEFINITION_ID_PREFIX = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
_FULL_ID = re.compile(r"(?:.{0,256}/)?providers/Microsoft\.Authorization/roleDefinitions/"
                      r"([0-9a-f-]{36})", re.IGNORECASE)
# Data-plane scopes relative to a vault: "/", "/keys", "/keys/NAME" (secrets, certificates).
RELATIVE_SCOPE = re.compile(r"/|/(keys|secrets|certificates)(/[0-9a-zA-Z-]{1,127})?")
# A managed HSM pool's scopes: the pool, its keys, one key.
POOL_SCOPE = re.compile(r"/|/keys(/[0-9a-zA-Z-]{1,127})?")
# A pool-owned role's stored scope: `/vaults/POOL` plus a pool scope.
_OWNED_SCOPE = re.compile(r"/vaults/([0-9a-z-]{3,24})(/.*)?", re.IGNORECASE)

_LISTS = (("actions", "actions"), ("notActions", "not_actions"),
          ("dataActions", "data_actions"), ("notDataActions", "not_data_actions"))


class RbacError(ValueError):
    """A refused role-management request (the message is safe to show). `code` is the Key
    Vault error code it answers with."""

    code = "BadParameter"


class RbacNotFound(RbacError):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class RbacConflict(RbacError):
    def __init__(self, message: str, code: str = "Conflict") -> None:
        super().__init__(message)
        self.code = code


def definition_id(guid: str) -> str:
    """The wire id of a role definition."""
    return DEFINITION_ID_PREFIX + guid


def guid_of(reference: str) -> str | None:
    """The lower-case GUID named by a bare GUID or a full role definition id."""
    if len(reference) > 512:
        return None
    if GUID.fullmatch(reference):
        return reference.lower()
    m = _FULL_ID.fullmatch(reference)
    return m.group(1).lower() if m and GUID.fullmatch(m.group(1)) else None


def not_found(guid: str) -> RbacNotFound:
    return RbacNotFound(f"Role definition '{guid[:64]}' was not found.", "RoleDefinitionNotFound")


def _known(action: str, known: frozenset[str], what: str) -> str:
    if not isinstance(action, str) or not action or len(action) > MAX_NAME:
        raise RbacError(f"Each {what} must be a non-empty string of at most {MAX_NAME} "
                        "characters.")
    if "*" in action:
        if not any(matches(action, k) for k in known):
            raise RbacError(f"The {what} '{action[:120]}' matches no known {what}.")
    elif not any(action.lower() == k.lower() for k in known):
        raise RbacError(f"Unknown {what} '{action[:120]}'.")
    return action


def parse_permissions(value: Any, data: frozenset[str] = DATA,
                      actions: frozenset[str] = CONTROL) -> tuple[Permission, ...]:
    """`data` and `actions`: the data actions and the actions a role may name."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_PERMISSIONS:
        raise RbacError(f"'permissions' must be a list of at most {MAX_PERMISSIONS} entries.")
    out: list[Permission] = []
    total = 0
    for entry in value:
        if not isinstance(entry, dict):
            raise RbacError("Each entry of 'permissions' must be a JSON object.")
        fields: dict[str, tuple[str, ...]] = {}
        for wire, attr in _LISTS:
            items = entry.get(wire)
            if items is None:
                items = []
            if not isinstance(items, list):
                raise RbacError(f"'{wire}' must be a list of strings.")
            total += len(items)
            if total > MAX_ACTIONS:
                raise RbacError(f"A role definition may name at most {MAX_ACTIONS} actions.")
            control = attr in ("actions", "not_actions")
            fields[attr] = tuple(_known(a, actions if control else data,
                                        "action" if control else "data action")
                                 for a in items)
        out.append(Permission(**fields))
    return tuple(out)


def parse_assignable_scopes(value: Any, pool: bool = False) -> tuple[str, ...]:
    """Relative scopes: a vault's (`/`, `/keys`, `/secrets/NAME`, ...) or with `pool` a
    managed HSM pool's (`/`, `/keys`, `/keys/NAME`)."""
    if value is None or value == []:
        return ("/",)
    if not isinstance(value, list) or len(value) > MAX_ASSIGNABLE_SCOPES:
        raise RbacError(f"'assignableScopes' must be a list of at most "
                        f"{MAX_ASSIGNABLE_SCOPES} scopes.")
    allowed = POOL_SCOPE if pool else RELATIVE_SCOPE
    scopes = []
    for s in value:
        if not isinstance(s, str) or not allowed.fullmatch(s.rstrip("/") or "/"):
            raise RbacError(f"Invalid assignable scope '{str(s)[:200]}': use /, /keys, "
                            + ("/keys/NAME." if pool else
                               "/keys/NAME (or secrets, certificates)."))
        scopes.append(s.rstrip("/") or "/")
    return tuple(dict.fromkeys(scopes))


def _owned(scopes: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """(owning pool, relative scopes) of a stored role's assignable scopes."""
    found = [_OWNED_SCOPE.fullmatch(s) for s in scopes]
    if not scopes or not all(found):
        return None, scopes
    owners = {m.group(1).lower() for m in found if m}
    if len(owners) != 1:
        return None, ()  # never written so: assignable nowhere
    return owners.pop(), tuple(m.group(2) or "/" for m in found if m)


def _text(props: dict[str, Any], key: str, limit: int) -> str:
    value = props.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise RbacError(f"'{key}' must be a string of at most {limit} characters.")
    return value


def _union(entries: Sequence[Permission], attr: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a for p in entries for a in getattr(p, attr)))


def custom_role(record: RoleDefinitionRecord) -> RoleDefinition:
    entries = tuple(Permission(*(tuple(p.get(wire) or ()) for wire, _ in _LISTS))
                    for p in record.permissions)
    owner, scopes = _owned(record.assignable_scopes)
    return RoleDefinition(
        record.id, record.role_name, record.description,
        _union(entries, "data_actions"), _union(entries, "not_data_actions"), built_in=False,
        actions=_union(entries, "actions"), not_actions=_union(entries, "not_actions"),
        assignable_scopes=scopes, entries=entries, owner=owner,
    )


class RoleDefinitions:
    def __init__(self, repo: Repository, clock: Clock) -> None:
        self._repo = repo
        self._clock = clock
        self._converted: tuple[tuple[RoleDefinitionRecord, ...],
                               dict[str, RoleDefinition]] | None = None

    def _custom(self) -> dict[str, RoleDefinition]:
        """Custom roles by GUID, converted once per storage change."""
        records = self._repo.role_definitions()
        hit = self._converted
        if hit is not None and (hit[0] is records or hit[0] == records):
            return hit[1]
        by_id = {r.id: custom_role(r) for r in records}
        self._converted = (records, by_id)
        return by_id

    def get(self, reference: str) -> RoleDefinition | None:
        """A built-in or custom role by GUID or full id."""
        guid = guid_of(reference)
        if guid is None:
            return None
        return BY_ID.get(guid) or self._custom().get(guid)

    def find(self, reference: str, owner: str | None = None) -> RoleDefinition | None:
        """A role by GUID, full id or name (case-insensitive; among `owner`'s roles)."""
        found = self.get(reference)
        if found is not None:
            return found
        name = reference.lower()
        return next((r for r in self.all(owner) if r.name and r.name.lower() == name), None)

    def all(self, owner: str | None = None) -> list[RoleDefinition]:
        """The built-in roles and the custom roles of `owner` (a pool; None: the
        deployment's own)."""
        return [*BUILT_IN, *(r for r in self._custom().values() if r.owner == owner)]

    def set(self, guid: str, properties: Any, owner: str | None = None
            ) -> tuple[RoleDefinition, bool]:
        """Create or replace the custom role `guid` from wire-shaped `properties`; (role,
        created). With `owner`, the role belongs to that managed HSM pool: Managed HSM data
        actions only, and a GUID held by anyone else's role is refused."""
        if not isinstance(guid, str) or not GUID.fullmatch(guid):
            raise RbacError("The role definition name must be a GUID.")
        guid = guid.lower()
        if guid in BY_ID:
            raise RbacError(f"Role definition '{guid}' is a built-in role and cannot be "
                            "changed.")
        if not isinstance(properties, dict):
            raise RbacError("'properties' must be a JSON object.")
        role_type = properties.get("type", "CustomRole")
        if role_type not in (None, "CustomRole"):
            raise RbacError("Only role definitions of type 'CustomRole' can be created.")
        name = _text(properties, "roleName", MAX_NAME)
        if name and name.lower() in {r.name.lower() for r in BUILT_IN}:
            raise RbacConflict(f"A built-in role is named '{name[:120]}'.",
                               "RoleDefinitionWithSameNameExists")
        existing = self._custom().get(guid)
        if existing is not None and existing.owner != owner:
            raise RbacError(f"The role definition name '{guid}' is taken: choose another "
                            "GUID.")
        if owner is None:
            permissions = parse_permissions(properties.get("permissions"))
            scopes = parse_assignable_scopes(properties.get("assignableScopes"))
        else:
            permissions = parse_permissions(properties.get("permissions"), MANAGED_HSM_DATA,
                                            frozenset())
            scopes = tuple(f"/vaults/{owner}" + ("" if s == "/" else s) for s in
                           parse_assignable_scopes(properties.get("assignableScopes"), True))
        record = RoleDefinitionRecord(
            guid, name, _text(properties, "description", MAX_DESCRIPTION),
            tuple({wire: list(getattr(p, attr)) for wire, attr in _LISTS}
                  for p in permissions),
            scopes, int(self._clock.now()),
        )
        status, stored = self._repo.put_role_definition(record, MAX_CUSTOM_ROLES)
        if status == "limit":
            raise RbacError(f"A deployment may hold at most {MAX_CUSTOM_ROLES} custom role "
                            "definitions.")
        if status == "name_taken":
            raise RbacConflict(f"A role definition named '{name[:120]}' already exists.",
                               "RoleDefinitionWithSameNameExists")
        assert stored is not None
        return custom_role(stored), status == "created"

    def delete(self, reference: str, owner: str | None = None) -> RoleDefinition:
        """Delete a custom role of `owner` (a pool; None: the deployment's own); refused for
        built-in roles and roles still assigned."""
        guid = guid_of(reference)
        if guid is None:
            raise RbacError("The role definition name must be a GUID.")
        if guid in BY_ID:
            raise RbacError(f"Role definition '{guid}' is a built-in role and cannot be "
                            "deleted.")
        existing = self._custom().get(guid)
        if existing is None or existing.owner != owner:
            raise not_found(guid)
        status, record = self._repo.delete_role_definition(guid)
        if status == "missing" or record is None:
            raise not_found(guid)
        if status == "assigned":
            raise RbacError(f"Role definition '{guid}' is still assigned; remove its role "
                            "assignments first.")
        return custom_role(record)
